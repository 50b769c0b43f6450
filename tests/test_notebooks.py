"""The example notebooks, executed top to bottom by a real kernel against the embedded default."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"

#: Notebooks checked here, with the least number of image outputs each must show.
NOTEBOOKS = {
    "quickstart.ipynb": 4,
    "panel.ipynb": 0,  # its images are widgets: check_panel looks at the saved widget state
}

#: A whole executed notebook may not grow past this (thumbnails only, never full-size images).
MAX_NOTEBOOK_BYTES = 2_000_000


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    shutil.copy(NOTEBOOKS_DIR / name, workdir / name)
    notebook = nbformat.read(workdir / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=True,
    )
    client.execute()
    nbformat.write(notebook, workdir / name)
    return notebook


def image_outputs(notebook: nbformat.NotebookNode) -> int:
    count = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            if "<img" in html and "data:image/jpeg;base64," in html:
                count += 1
    return count


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_clean(name, tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    workdir = tmp_path / "work"
    workdir.mkdir()
    notebook = execute(name, workdir)

    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{name}: {cell.source!r} failed: {output.get('ename')}"
            if output["output_type"] == "stream":
                assert "Traceback" not in output["text"], f"{name}: {cell.source!r}: {output['text']}"
                assert not output["text"].startswith("flux: "), f"{name}: {cell.source!r}: {output['text']}"

    assert image_outputs(notebook) >= NOTEBOOKS[name]
    size = (workdir / name).stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"{name} is {size} bytes after running"
    # every PNG fallback is a small contact sheet
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                assert len(base64.b64decode(png)) < 200_000
    # generations went to the test's data folder, never the user's
    assert any(data_dir.rglob("*.jp*g")) or any(data_dir.rglob("*.png"))
    extra_checks = {"quickstart.ipynb": check_quickstart, "panel.ipynb": check_panel}
    if name in extra_checks:
        extra_checks[name](notebook, workdir)


def check_quickstart(notebook: nbformat.NotebookNode, workdir: Path) -> None:
    """Saving into out/ and reloading the parameters worked, and reproduce the same request."""
    saved = sorted((workdir / "out").iterdir())
    assert any(p.suffix == ".jpg" for p in saved) and any(p.name.endswith(".request.json") for p in saved)
    load_cell = next(c for c in notebook.cells if c.source.startswith("%flux load"))
    text = "".join(o.get("text", "") for o in load_cell.outputs)
    assert "%%flux --size landscape_4_3 --steps 4 -g 4.5 -n 1 -s 7 --format jpeg --safety\na heron standing in a misty lake at dawn" in text
    check = next(c for c in notebook.cells if c.source.startswith("again = "))
    assert check.outputs[0]["data"]["text/plain"] == "True"


def check_panel(notebook: nbformat.NotebookNode, workdir: Path) -> None:
    """The panel generated from code: its grid and history hold real JPEG thumbnails in the saved
    widget state, and the status and the copy-as-code cell describe that generation."""
    from PIL import Image

    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]

    def classes(widget: dict) -> list[str]:
        return widget["state"].get("_dom_classes", [])

    every_class = {cls for w in states.values() for cls in classes(w)}
    assert {"flux-nb-panel", "flux-nb-prompt", "flux-nb-generate", "flux-nb-cancel", "flux-nb-status",
            "flux-nb-grid", "flux-nb-history", "flux-nb-sweep"} <= every_class
    prompts = [w["state"]["value"] for w in states.values() if "flux-nb-prompt" in classes(w)]
    assert prompts == ["a lighthouse on a cliff at dusk, oil painting"]

    def jpeg_of(widget: dict) -> bytes:
        buffers = {tuple(b["path"]): b for b in widget.get("buffers", [])}
        assert ("value",) in buffers, widget.keys()
        data = base64.b64decode(buffers[("value",)]["data"])
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and min(image.size) > 16
        return data

    images = [w for w in states.values() if w.get("model_name") == "ImageModel"]
    grid = [w for w in images if "flux-nb-grid-image" in classes(w)]
    assert len(grid) == 1 and jpeg_of(grid[0])  # the generated image, as a thumbnail
    assert len(images) >= 2 and all(jpeg_of(w) for w in images)  # and its history-strip thumbnail
    statuses = [w["state"]["value"] for w in states.values() if "flux-nb-status" in classes(w)]
    assert len(statuses) == 1 and "Done #1" in statuses[0] and "seed 7" in statuses[0]
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Done #1: 1 image(s), seed 7" in printed
    assert "%%flux --size landscape_4_3 --steps 20 -g 3.5 -n 1 -s 7 --format jpeg --safety\n" in printed
    assert len(json.dumps(notebook)) < 200_000  # thumbnails only
