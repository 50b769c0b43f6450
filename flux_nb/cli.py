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
    return parser


# --- generate: owned by the lead; fill in the body ------------------------------------------------
def _generate_main(args: argparse.Namespace) -> int:
    """``flux-nb generate PROMPT ...``: run one job, save the images to --out, print the result JSON."""
    raise SystemExit("not yet")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flux-nb`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .server.cli import serve_main

        return serve_main(args)
    return _generate_main(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
