"""Start-up cost: ``import flux_nb`` and ``%load_ext flux_nb`` in fresh processes.

Each measurement is a new Python process (median of ``--repeats``): the time of the statement
itself, measured inside the process after the interpreter started, and which heavy modules it
pulled in. ``import flux_nb`` must not import matplotlib, starlette, uvicorn, torch, ipywidgets or
PIL; ``%load_ext flux_nb`` runs in a real IPython InteractiveShell (created before the clock
starts) and must not import matplotlib, starlette, uvicorn or torch either.

    python bench/startup.py             # 9 runs each
    python bench/startup.py --quick     # 2 runs each (smoke test)

Where a module leaks in, ``python -X importtime -c "import flux_nb"`` shows who imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import _common as C

HEAVY = ("matplotlib", "starlette", "uvicorn", "torch", "ipywidgets", "PIL", "diffusers", "httpx", "IPython", "numpy")
#: Modules each statement must not import.
FORBIDDEN = {
    "import flux_nb": ("matplotlib", "starlette", "uvicorn", "torch", "ipywidgets", "PIL"),
    "%load_ext flux_nb": ("matplotlib", "starlette", "uvicorn", "torch"),
}

PROBE = """\
import json, sys, time
HEAVY = {heavy!r}
what = sys.argv[1]
if what == "baseline":
    start = time.perf_counter()
elif what == "import flux_nb":
    start = time.perf_counter()
    import flux_nb
else:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    before = set(sys.modules)
    start = time.perf_counter()
    shell.run_line_magic("load_ext", "flux_nb")
elapsed = time.perf_counter() - start
loaded = [m for m in HEAVY if m in sys.modules]
if what == "%load_ext flux_nb":
    loaded = [m for m in loaded if m not in before and not any(b.startswith(m + ".") for b in before)]
print(json.dumps({{"seconds": elapsed, "heavy": loaded}}))
"""


def probe(what: str, ipython_dir: str) -> dict:
    env = {**os.environ, "IPYTHONDIR": ipython_dir, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), what], capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"{what} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 2

    rows = []
    failures = []
    with C.private_data_dir(), tempfile.TemporaryDirectory() as ipython_dir:
        for what in ("import flux_nb", "%load_ext flux_nb"):
            runs = [probe(what, ipython_dir) for _ in range(args.repeats)]
            seconds = [r["seconds"] for r in runs]
            heavy = sorted({m for r in runs for m in r["heavy"]})
            bad = [m for m in heavy if m in FORBIDDEN[what]]
            if bad:
                failures.append(f"{what} imported {', '.join(bad)}")
            rows.append([what, C.median(seconds), min(seconds), max(seconds), ", ".join(heavy) or "none", "ok" if not bad else "LEAK: " + ", ".join(bad)])
    C.report(
        f"Start-up: fresh process each, {args.repeats} runs",
        ["statement", "median s", "best s", "worst s", "heavy modules loaded", "forbidden modules"],
        rows,
        ["'%load_ext' lists only modules loaded by the statement (IPython itself was imported before the clock started)",
         "target: under 0.25 s each"],
        json_out=args.json,
    )
    for failure in failures:
        print(f"LEAK: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
