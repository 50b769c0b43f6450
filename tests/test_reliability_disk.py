"""A data folder that cannot be written (full disk, read-only, not a folder): a clear warning, images kept in memory.

Tests run as root, where ``chmod`` does not stop writes, so an unwritable folder is made the way
that holds for root too: ``FLUX_NB_DATA_DIR`` below a regular file (every write fails with
ENOTDIR). A full disk is the one mock: ``os.replace`` raising ENOSPC for files in the data folder,
which is how the store's atomic write meets a full disk.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from flux_nb.client import FluxClient
from flux_nb.sweeps import sweep


@pytest.fixture
def blocked_data_dir(tmp_path, monkeypatch) -> Path:
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("in the way")
    path = blocker / "flux-nb-data"
    monkeypatch.setenv("FLUX_NB_DATA_DIR", str(path))
    return path


def check_images(result, size=(64, 64)) -> None:
    assert result.images
    for image in result.images:
        with Image.open(io.BytesIO(image.data)) as decoded:
            decoded.load()
            assert decoded.size == size


def test_unwritable_data_folder_warns_once_and_returns_the_images(live_server, blocked_data_dir):
    server = live_server()
    client = FluxClient(endpoint=server.url)
    with pytest.warns(UserWarning, match="could not save the images") as caught:
        result = client.generate("a kite", seed=1, image_size={"width": 64, "height": 64}, num_images=2)
    client.close()
    check_images(result)
    assert all(image.path is None for image in result.images)
    assert "Not a directory" in result.save_error
    save_warnings = [w for w in caught if "could not save" in str(w.message)]
    assert len(save_warnings) == 1
    assert "result.save(folder)" in str(save_warnings[0].message)  # says how to keep them
    assert not blocked_data_dir.exists()


def test_disk_full_during_the_atomic_write_leaves_no_partial_file(live_server, data_dir, monkeypatch):
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if str(dst).startswith(str(data_dir)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    server = live_server()
    client = FluxClient(endpoint=server.url)
    with pytest.warns(UserWarning, match="No space left on device"):
        result = client.generate("a kite", seed=2, image_size={"width": 64, "height": 64}, num_images=3)
    client.close()
    check_images(result)
    assert all(image.path is None for image in result.images)
    leftovers = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix in {".png", ".jpeg", ".jpg"}]
    assert leftovers == []  # no half-written or orphaned image
    assert not [p for p in data_dir.rglob(".tmp-*")]
    # nothing was indexed either, so the cache never points at missing files
    monkeypatch.setattr(os, "replace", real_replace)
    from flux_nb.store import Store

    assert Store(data_dir).history(limit=None) == []


def test_sweep_with_an_unwritable_folder_keeps_every_cell_in_memory(live_server, blocked_data_dir):
    server = live_server(workers=4)
    client = FluxClient(endpoint=server.url)
    with pytest.warns(UserWarning, match="could not save"):
        result = sweep("a kite", seed=[1, 2, 3, 4], image_size={"width": 64, "height": 64}, client=client,
                       progress=False, live=False)
    client.close()
    assert [cell.status for cell in result.cells] == ["done"] * 4
    for cell in result.cells:
        check_images(cell.result)
    assert result.grid() is not None  # the pictures are still usable


def test_saving_to_an_unwritable_folder_is_a_clear_error(live_server, tmp_path):
    server = live_server()
    client = FluxClient(endpoint=server.url, store=False)
    result = client.generate("a kite", seed=3, image_size={"width": 64, "height": 64})
    client.close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        result.save(blocker / "out")
    assert str(blocker) in str(info.value)
    check_images(result)  # the result is untouched


def test_magic_with_an_unwritable_folder_still_returns_the_result(live_server, blocked_data_dir, capsys, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    server = live_server()
    monkeypatch.setenv("FLUX_NB_ENDPOINT", server.url)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "flux_nb")
        with pytest.warns(UserWarning, match="could not save"):
            result = shell.run_cell_magic("flux", "--size 64x64 -s 5", "a kite over the sea")
    finally:
        InteractiveShell.clear_instance()
    check_images(result)
    assert "Traceback" not in capsys.readouterr().err
