"""End to end: a real kernel runs a notebook with a distinctive key; no byte of the result carries it.

The kernel's environment points flux-nb at a local server that requires the key as its token
(``FLUX_NB_ENDPOINT`` + ``FLUX_NB_TOKEN``), with DEBUG logging on. The notebook generates,
displays, saves, shows the history and configuration, and fails twice (a server refusal and a
wrong key, both with tracebacks). Then every byte of the saved notebook, every file in the data
folder and every file the notebook saved is searched for the key.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

KEY = "nbKEY-31d7c0ffee-do-not-leak"

CELLS = [
    "import logging, os\nlogging.basicConfig(level=logging.DEBUG)\nimport flux_nb\n%load_ext flux_nb",
    "%config FluxMagics.progress = 'on'",
    "%%flux r << --size 64x64 -s 7 -n 2\na lantern in the fog",
    "r",
    "print(repr(flux_nb.get_client()), flux_nb.get_client().backend, dict(vars(flux_nb.get_client().backend)))",
    "paths = r.save('saved')\npaths",
    "%flux history",
    "%flux config",
    "flux_nb.generate('too big for this server', image_size='square_hd', seed=1)",  # 422 traceback
    "flux_nb.FluxClient(os.environ['FLUX_NB_ENDPOINT'], key=os.environ['FLUX_NB_TOKEN'] + 'x').generate('x', seed=1)",
    "%flux --key some-key a fox",
    "import sys; print({k: ('<set>' if 'TOKEN' in k else v) for k, v in os.environ.items() if k.startswith('FLUX_NB')})",
]


@pytest.mark.slow
def test_notebook_outputs_and_files_never_contain_the_key(live_server, data_dir, tmp_path, monkeypatch):
    server = live_server(token=KEY, max_pixels=512 * 512)
    monkeypatch.setenv("FLUX_NB_ENDPOINT", server.url)
    monkeypatch.setenv("FLUX_NB_TOKEN", KEY)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    workdir = tmp_path / "work"
    workdir.mkdir()

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    path = workdir / "secret-check.ipynb"
    nbformat.write(notebook, path)

    outputs = [cell.get("outputs", []) for cell in notebook.cells]
    errors = [o for cell in outputs for o in cell if o["output_type"] == "error"]
    # the notebook really ran: images shown, two failures with their tracebacks, DEBUG logs present
    assert [e["ename"] for e in errors] == ["FluxInputError", "FluxAuthError"], [e["ename"] for e in errors]
    html = "".join(o.get("data", {}).get("text/html", "") for cell in outputs for o in cell)
    assert "data:image/jpeg;base64," in html
    streams = "".join(o.get("text", "") for cell in outputs for o in cell if o["output_type"] == "stream")
    assert "DEBUG" in streams and "HTTP Request" in streams
    assert "%flux login" in streams  # the key option was refused with the hint

    assert KEY.encode() not in path.read_bytes(), "the key is in the saved notebook"
    checked = 0
    for folder in (data_dir, workdir):
        for root, _dirs, files in os.walk(folder):
            for name in files:
                data = Path(root, name).read_bytes()
                assert KEY.encode() not in data, f"the key is in {Path(root, name)}"
                checked += 1
    assert (workdir / "saved").is_dir() and any(data_dir.rglob("flux.sqlite3"))
    assert checked >= 6
