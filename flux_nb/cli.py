"""The ``flux-nb`` command: ``flux-nb serve`` (local server) and ``flux-nb generate`` (one job).

Imports of the parts each subcommand needs happen only when it runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .server.cli import add_serve_arguments

    parser = argparse.ArgumentParser(prog="flux-nb", description="Flux LoRA image generation from Jupyter, fal.ai or a local server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the local fal-compatible server", description="Run the local fal-compatible server.")
    add_serve_arguments(serve)

    generate = commands.add_parser("generate", help="generate images and save them", description="Generate images and save them.")
    generate.add_argument("prompt", help="the text prompt")
    generate.add_argument("--seed", type=int, default=None, help="seed (default: the server picks one)")
    generate.add_argument("--out", default=".", help="folder to save the images in (default: here)")
    generate.add_argument("--size", default=None, help="a preset (landscape_4_3, square_hd, ...) or WIDTHxHEIGHT")
    generate.add_argument("--steps", type=int, default=None, help="inference steps (1..50)")
    generate.add_argument("-g", "--guidance", type=float, default=None, help="guidance scale (0..35)")
    generate.add_argument("-n", "--num-images", type=int, default=None, help="images to make (1..4)")
    generate.add_argument("--format", choices=["jpeg", "png"], default=None, help="output format")
    generate.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]", help="a LoRA (repeatable)")
    generate.add_argument("--no-safety", action="store_true", help="turn the safety checker off")
    generate.add_argument("--endpoint", default=None, help="'fal', 'embedded' or a server URL (default: from the environment)")
    generate.add_argument("--show", action="store_true", help="open the saved images in the default viewer")
    return parser


def _generate_main(args: argparse.Namespace) -> int:
    """``flux-nb generate PROMPT ...``: run one job, save the images to --out, print the result JSON."""
    import json
    import sys
    from pathlib import Path

    from .client import FluxClient, get_client
    from .errors import FluxError
    from .magic_args import parse_lora

    fields = {
        "seed": args.seed,
        "image_size": args.size,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "num_images": args.num_images,
        "output_format": args.format,
        "enable_safety_checker": False if args.no_safety else None,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        if args.lora:
            fields["loras"] = [parse_lora(text) for text in args.lora]
        client = get_client() if args.endpoint is None else FluxClient(args.endpoint, announce=True)
        result = client.generate(args.prompt, **fields)
        paths = result.save(Path(args.out))
    except FluxError as exc:
        print(f"flux-nb generate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out names a file, or the folder cannot be written
        print(f"flux-nb generate: cannot save to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flux-nb generate: cancelled", file=sys.stderr)
        return 130
    images = [p for p in paths if p.suffix.lower() in {".png", ".jpeg", ".jpg"}]
    summary = {
        "request_id": result.request_id,
        "backend": result.backend,
        "seed": result.seed,
        "prompt": result.prompt,
        "images": [
            {"path": str(path), "width": im.width, "height": im.height, "content_type": im.content_type, "nsfw": im.nsfw}
            for path, im in zip(images, result.images)
        ],
        "timings": result.timings,
        "request": result.reproduce_request.to_dict(),
    }
    print(json.dumps(summary, indent=2))
    if args.show:
        _show(images)
    return 0


def _show(paths: list) -> None:
    """Open images in the desktop's viewer; on a headless machine just say where they are."""
    import sys
    import webbrowser

    opened = False
    for path in paths:
        try:
            opened = webbrowser.open(path.resolve().as_uri()) or opened
        except webbrowser.Error:
            pass
    if not opened:
        print(f"(no viewer available here: the images are in {paths[0].parent})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flux-nb`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .server.cli import serve_main

        return serve_main(args)
    return _generate_main(args)


if __name__ == "__main__":  # pragma: no cover - python -m flux_nb.cli
    raise SystemExit(main())
