"""Print the reliability figures for docs/reliability.md: fault sweep, load test, kill-and-resume.

The figures come from the tests themselves (one code path: what is measured is what is asserted).
This script runs them under pytest with ``FLUX_NB_RELIABILITY_REPORT`` set, collects the JSON
lines they append, and prints one table::

    .venv/bin/python bench/reliability.py            # all three scenarios
    .venv/bin/python bench/reliability.py --json     # the raw figures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = [
    "tests/test_reliability_faults.py",
    "tests/test_reliability_load.py::test_16_clients_x_50_requests_lose_nothing",
    "tests/test_reliability_kill.py",
]

COLUMNS = [
    ("test", "test"),
    ("requests_sent", "HTTP requests"),
    ("faults_injected", "faults injected"),
    ("results_received", "results"),
    ("jobs_submitted", "jobs created"),
    ("duplicates", "duplicates"),
    ("server_peak_rss_mb", "server peak RSS (MB)"),
    ("seconds", "wall s"),
]


def run(scenarios: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "figures.jsonl"
        env = {**os.environ, "FLUX_NB_RELIABILITY_REPORT": str(report)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *scenarios]
        done = subprocess.run(command, cwd=ROOT, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the reliability tests failed (exit {done.returncode}); no figures printed")
        return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [str(row.get(key, "")) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS, help="pytest node ids (default: the three scenarios)")
    args = parser.parse_args()
    rows = run(args.scenarios)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print()
    print(table(rows))
    extras = {row["test"]: {k: v for k, v in row.items() if k not in dict(COLUMNS)} for row in rows}
    for name, more in extras.items():
        if more:
            print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in more.items()))


if __name__ == "__main__":
    main()
