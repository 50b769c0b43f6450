"""The preview engine's speed and grid composition time, at 1024x768.

- preview engine: images per second of ``PreviewEngine.generate`` (draw + encode) in one thread,
  JPEG and PNG;
- ``render.result_mimebundle`` (the inline grid of a FluxResult: HTML of JPEG thumbnails plus a PNG
  contact sheet) for 64 images, from cold (no cached thumbnails) and warm (cached);
- the sweep's pictures for a 64-cell (8x8) sweep: making the 64 cell thumbnails (done as cells
  finish), the labelled contact sheet ``SweepResult.grid()``, and the sweep's inline display.

Medians of ``--repeats``. For scale: one single-image job costs about 15 ms of protocol work end to
end on this machine (``bench/requests_per_job.py``).

    python bench/preview_and_grid.py
    python bench/preview_and_grid.py --quick    # 4 images, 1 repeat (smoke test)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import _common as C

PROMPT = "a red fox in the snow, golden hour"


def timed(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return C.median(times)


def main(argv: list[str] | None = None) -> int:
    from flux_nb import render
    from flux_nb.params import FluxRequest
    from flux_nb.result import FluxImage, FluxResult
    from flux_nb.server.engines.base import JobContext
    from flux_nb.server.engines.preview import PreviewEngine

    p = C.parser(__doc__)
    p.add_argument("-n", "--images", type=int, default=64)
    p.add_argument("--size", default="landscape_4_3")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.size = 4, 1, "256x192"
    n = args.images

    engine = PreviewEngine()
    ctx = JobContext("bench", log=lambda m: None, is_cancelled=lambda: False, resolve_file=lambda p: p)  # type: ignore[arg-type,return-value]
    rows = []
    images: list[FluxImage] = []
    for fmt in ("jpeg", "png"):
        request = FluxRequest(PROMPT, image_size=args.size, output_format=fmt)
        made: list = []
        seconds = timed(lambda: made.extend(engine.generate(request, 1000 + len(made), ctx).images for _ in range(n)), args.repeats)
        rows.append([f"preview engine, {n} {fmt.upper()} images", seconds, seconds / n * 1000, f"{n / seconds:.0f} images/s"])
        if fmt == "jpeg":
            images = [FluxImage(data=g[0].data, content_type=g[0].content_type, width=g[0].width, height=g[0].height) for g in made[:n]]

    request = FluxRequest(PROMPT, image_size=args.size)

    def fresh_result() -> FluxResult:  # new image objects, so no thumbnail is cached yet
        return FluxResult(images=[dataclasses.replace(im) for im in images], seed=1, request=request, prompt=PROMPT)

    cold = timed(lambda: render.result_mimebundle(fresh_result()), args.repeats)
    warm_result = fresh_result()
    render.result_mimebundle(warm_result)
    warm = timed(lambda: render.result_mimebundle(warm_result), args.repeats)
    rows.append([f"render.result_mimebundle, {n} images, cold", cold, cold / n * 1000, "-"])
    rows.append([f"render.result_mimebundle, {n} images, cached thumbnails", warm, warm / n * 1000, "-"])

    # The sweep's pictures, over the same images (one per cell).
    from flux_nb.sweeps import grid as sweep_grid

    results = [FluxResult(images=[im], seed=i, request=request, prompt=PROMPT) for i, im in enumerate(images)]
    thumbs = timed(lambda: [sweep_grid.make_thumbnail(r) for r in results], args.repeats)
    rows.append([f"sweep cell thumbnails x {n}", thumbs, thumbs / n * 1000, "-"])

    with C.private_data_dir():
        from flux_nb.client import FluxClient
        from flux_nb.sweeps import sweep

        side = max(1, int(n ** 0.5))
        client = FluxClient("embedded")
        try:
            result = sweep(PROMPT, client=client, progress=False, live=False, max_cells=None, image_size=args.size,
                           guidance=[1.0 + i * 0.5 for i in range(side)], seed=list(range(1, n // side + 1)))
        finally:
            client.close()
        cells = len(result.cells)
        sheet = timed(lambda: result.grid(), args.repeats)
        inline = timed(lambda: result._repr_mimebundle_(), args.repeats)
    rows.append([f"SweepResult.grid(), {cells} cells", sheet, sheet / cells * 1000, "-"])
    rows.append([f"SweepResult inline display, {cells} cells", inline, inline / cells * 1000, "-"])

    C.report(
        f"Preview engine and grids: {args.size}, median of {args.repeats}",
        ["work", "seconds", "ms per image", "rate"],
        rows,
        ["one thread; the server runs the engine in one thread per worker, the grids run in the notebook's process"],
        json_out=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
