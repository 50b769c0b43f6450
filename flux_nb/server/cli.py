"""``flux-nb serve``: run the local fal-compatible server under uvicorn.

    flux-nb serve [--host 127.0.0.1] [--port 8765] [--engine preview|diffusers] [--workers N]
                  [--token T] [--latency S] [--fail-rate P] [--fault-seed N] [--result-ttl S]
                  [--model PATH] [--device D] [--dtype D] [--cpu-offload] [--allow-download]

It refuses to listen on a non-loopback address without a token (``--token`` or ``FLUX_NB_TOKEN``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

# the client's rule, so that a server started without a token is one the client talks to over
# plain http without a token (``*.localhost`` included)
from ..backend import is_loopback_host

__all__ = ["add_serve_arguments", "serve_main", "DEFAULT_PORT"]

DEFAULT_PORT = 8765


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``serve`` options to ``parser`` (used by ``flux-nb serve`` and by :func:`serve_main`)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--engine", default="preview", choices=["preview", "diffusers"], help="image engine (default preview)")
    parser.add_argument("--workers", type=_positive_int, default=2, help="jobs run at once (default 2; a GPU engine may allow fewer)")
    parser.add_argument("--token", default=None, help="require 'Authorization: Key TOKEN' (default: $FLUX_NB_TOKEN, else none)")
    parser.add_argument("--latency", type=_non_negative, default=0.0, help="seconds of work per image, the engine's own time included")
    parser.add_argument("--fail-rate", type=_fraction, default=0.0, help="fraction of requests answered with a fault (0..1)")
    parser.add_argument("--fault-seed", type=int, default=None, help="seed making the faults reproducible")
    parser.add_argument("--result-ttl", type=_non_negative, default=3600.0, help="seconds finished results are kept (default 3600)")
    parser.add_argument("--allow-local-paths", action="store_true",
                        help="trust local sources: LoRA paths may name files on this machine and LoRA URLs may point at private addresses (only for a server you alone use)")
    parser.add_argument("--public-url", default=None, help="base URL to put in answers (behind a proxy)")
    group = parser.add_argument_group("diffusers engine")
    group.add_argument("--model", default=None, help="local diffusers pipeline folder or cached model id")
    group.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the GPU if any)")
    group.add_argument("--dtype", default=None, help="bf16, fp16 or fp32")
    group.add_argument("--cpu-offload", action="store_true", help="offload model parts to the CPU (less GPU memory)")
    group.add_argument("--allow-download", action="store_true", help="let diffusers download a model not in the cache")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return parser


def _engine_options(args: argparse.Namespace) -> dict:
    if args.engine != "diffusers":
        return {}
    return {"model": args.model, "device": args.device, "dtype": args.dtype,
            "cpu_offload": args.cpu_offload, "allow_download": args.allow_download}


def _server_ending_jobs_first(config, state):
    """A uvicorn server that ends every job before its graceful shutdown: open status streams then
    send their final status (completed or cancelled) and close, instead of being cut off after the
    grace period with the jobs' fate unknown to their clients."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            try:
                await state.jobs.aclose()
            finally:
                await super().shutdown(sockets=sockets)

    return Server(config)


def serve_main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the server until interrupted. ``args``: parsed options, or argv after ``serve``."""
    if not isinstance(args, argparse.Namespace):
        parser = add_serve_arguments(argparse.ArgumentParser(prog="flux-nb serve", description=__doc__.split("\n\n")[0]))
        args = parser.parse_args(args)
    token = args.token if args.token is not None else os.environ.get("FLUX_NB_TOKEN") or None
    if not is_loopback_host(args.host) and not token:
        print(f"flux-nb serve: refusing to listen on {args.host} without a token: anyone on the network could use it; "
              "pass --token (or set FLUX_NB_TOKEN), or listen on 127.0.0.1", file=sys.stderr)
        return 2
    if args.engine == "diffusers" and not args.model:
        print("flux-nb serve: --engine diffusers needs --model (a local pipeline folder or cached model id)", file=sys.stderr)
        return 2

    import uvicorn

    from . import bind_socket, url_for
    from .app import create_app
    from .engines import load_engine

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"flux-nb serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        engine = load_engine(args.engine, **_engine_options(args))
    except Exception as exc:
        sock.close()
        print(f"flux-nb serve: cannot start the {args.engine} engine: {exc}", file=sys.stderr)
        return 1
    app = create_app(
        engine, workers=args.workers, token=token, latency=args.latency, fail_rate=args.fail_rate,
        fault_seed=args.fault_seed, result_ttl=args.result_ttl, public_url=args.public_url,
        allow_local_paths=args.allow_local_paths,
    )
    url = args.public_url or url_for(args.host if args.host not in {"0.0.0.0", "::"} else "127.0.0.1", sock.getsockname()[1])
    print(f"flux-nb: serving fal-ai/flux-lora with the {engine.name} engine at {url}  (use: FLUX_NB_ENDPOINT={url})", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", timeout_graceful_shutdown=3)
    try:
        _server_ending_jobs_first(config, app.state.flux).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn has already shut down cleanly and re-raises Ctrl-C: no traceback for that
        return 130
    return 0
