"""Every benchmark script still runs: each in its tiny ``--quick`` mode, as a subprocess.

No timing is asserted (speed belongs to the scripts' own tables); the scripts assert their own
invariants (every cell finished, cached re-runs send nothing, no forbidden import). What is checked
here: exit status 0, a table printed, and the JSON they write has the expected rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: script -> (extra arguments, rows expected in its table)
SCRIPTS = {
    "sweep_vs_fal_client.py": ([], 6),
    "requests_per_job.py": ([], 3),
    "notebook_weight.py": ([], 3),
    "rerun_cost.py": ([], 3),
    "startup.py": ([], 2),
    "scale.py": ([], 2),
    "preview_and_grid.py": ([], 7),
    "sweep_scale.py": ([], 16),
    "diffusers_step_time.py": (["--tiny"], 2),  # tiny random model, 64x64, two steps, on the CPU
}


def run_script(name: str, args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    out_json = tmp_path / "table.json"
    env = {**os.environ, "FLUX_NB_DATA_DIR": str(tmp_path / "data"), "IPYTHONDIR": str(tmp_path / "ipython")}
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--quick", "--json", str(out_json), *args],
        capture_output=True, text=True, env=env, timeout=240, cwd=BENCH.parent,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(out_json.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_bench_script_runs(name, tmp_path):
    args, rows = SCRIPTS[name]
    proc, table = run_script(name, args, tmp_path)
    assert "| " in proc.stdout and "machine:" in proc.stdout
    assert len(table["rows"]) == rows
    assert all(len(row) == len(table["headers"]) for row in table["rows"])


def test_every_bench_script_is_covered():
    # reliability.py only runs the reliability tests under pytest and tabulates what they report:
    # running it here would run those tests a second time
    others = {"reliability.py"}
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")} - others
    assert scripts == set(SCRIPTS)


def test_stats_delta_and_percentile():
    sys.path.insert(0, str(BENCH))
    try:
        import _common as C
    finally:
        sys.path.remove(str(BENCH))
    before = {"requests": {"submit": 1, "stream": 0, "stats": 3}, "jobs": {"submitted": 1}}
    after = {"requests": {"submit": 5, "stream": 4, "stats": 9}, "jobs": {"submitted": 5}}
    delta = C.stats_delta(before, after)
    assert delta == {"submit": 4, "stream": 4, "jobs": 4}
    assert C.job_requests(delta) == 8
    assert C.percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert C.percentile([0, 10], 0.95) == pytest.approx(9.5)
    assert C.ratio(4.4, 4.0) == "1.10x" and C.ratio(1.0, 0) == "-"
