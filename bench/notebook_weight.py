"""Notebook weight: bytes a 4x4 sweep of 1024x768 images adds to a saved notebook.

A real kernel (nbclient + ipykernel, the embedded preview backend, a private data folder) runs one
notebook: a 4x4 sweep (guidance x seed) at 1024x768, then shows it three ways, one cell each:

- flux-nb's inline sweep grid (the SweepResult as a cell's value);
- each cell's FluxResult displayed (flux-nb's per-result thumbnail grid), 16 outputs;
- the same 16 images as PIL images, displayed directly (what ``display(image.to_pil())`` does:
  a full-size PNG each).

Bytes are those of each cell's outputs in the saved ``.ipynb`` (nbformat's JSON). Preview images
are flat and compress well, so real photographs make the PIL row heavier still: the ratio here is
a lower bound.

    python bench/notebook_weight.py            # 4x4 at 1024x768
    python bench/notebook_weight.py --quick    # 2x2 at 256x192 (smoke test)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import _common as C

SETUP = """\
import flux_nb
r = flux_nb.sweep("a lighthouse on a cliff at dusk", guidance={guidance!r}, seed={seeds!r},
                  image_size={size!r}, progress=False)
assert all(c.ok for c in r.cells), [c.error for c in r.cells]
len(r.cells)
"""
VARIANTS = {
    "flux-nb sweep grid (SweepResult inline)": "r",
    "flux-nb FluxResult per cell (a thumbnail grid each)": "from IPython.display import display\nfor c in r.cells:\n    display(c.result)",
    "PIL images displayed directly": "from IPython.display import display\nfor c in r.cells:\n    display(c.result.images[0].to_pil())",
}


def output_bytes(cell: dict) -> int:
    """Bytes the cell's outputs take in the saved notebook (nbformat writes JSON with indent=1)."""
    return len(json.dumps(cell.get("outputs", []), indent=1, sort_keys=True, ensure_ascii=False).encode())


def image_sizes(cell: dict) -> str:
    """The pixel sizes of the images embedded in a cell's outputs (readability of the grid)."""
    sizes: set[str] = set()
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        for match in re.finditer(r"data:image/(?:jpeg|png);base64,([A-Za-z0-9+/=]+)", data.get("text/html", "")):
            sizes.add(_size_of(match.group(1)))
        for mime in ("image/png", "image/jpeg"):
            if mime in data and "text/html" not in data:
                sizes.add(_size_of(data[mime]))
    return ", ".join(sorted(sizes)) or "-"


def _size_of(b64: str) -> str:
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return f"{image.width}x{image.height} {image.format}"


def main(argv: list[str] | None = None) -> int:
    import nbclient
    import nbformat

    p = C.parser(__doc__)
    p.add_argument("--size", default="landscape_4_3")
    args = p.parse_args(argv)
    guidance, seeds, size = [2.0, 3.5, 5.0, 7.0], [1, 2, 3, 4], args.size
    if args.quick:
        guidance, seeds, size = [2.0, 5.0], [1, 2], "256x192"

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(SETUP.format(guidance=guidance, seeds=seeds, size=size)))
    for source in VARIANTS.values():
        notebook.cells.append(nbformat.v4.new_code_cell(source))
    with C.private_data_dir(), tempfile.TemporaryDirectory() as tmp:
        os.environ["IPYTHONDIR"] = str(Path(tmp) / "ipython")  # no user profile or startup files
        empty = len(nbformat.writes(notebook).encode())
        client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp}})
        client.execute()
        path = Path(tmp) / "weight.ipynb"
        nbformat.write(notebook, path)
        total = path.stat().st_size
    for cell in notebook.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            raise SystemExit(f"a cell failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")

    sizes = {label: output_bytes(cell) for label, cell in zip(VARIANTS, notebook.cells[1:])}
    heaviest = sizes["PIL images displayed directly"]
    rows = [
        [label, f"{sizes[label]:,}", f"{sizes[label] / 1e6:.2f}", image_sizes(cell), C.ratio(heaviest, sizes[label])]
        for label, cell in zip(VARIANTS, notebook.cells[1:])
    ]
    n = len(guidance) * len(seeds)
    C.report(
        f"Notebook weight: a {len(guidance)}x{len(seeds)} sweep ({n} images, {size}) shown three ways",
        ["shown as", "bytes in .ipynb", "MB", "embedded images", "PIL / this"],
        rows,
        [f"whole executed notebook: {total:,} bytes (empty: {empty:,}); preview images (flat; real photos make PIL heavier)"],
        json_out=args.json,
        extra={"bytes": sizes},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
