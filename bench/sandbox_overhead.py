"""What the bubblewrap sandbox adds per task: the same tasks with and without it, in one run.

Runs the built-in suite's tasks (scripted solutions as the model's test double) through
`run_tasks` with `sandbox=True` and `sandbox=False`, alternating, and prints per mode the wall
time of the whole run divided by its tasks (worker start and teardown included) and the mean
per-task time measured inside the worker (setup + episode + scoring), then the differences.

    python bench/sandbox_overhead.py                 # 2 rounds of 3 tasks, 1 worker
    python bench/sandbox_overhead.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks.suites import CHROME_SUITE
from kimi_agent.tasks.suites.solutions import solution_backend

TASKS = ["suite-font-size.json", "suite-web-navigation.json", "suite-do-not-track.json"]


def one(sandbox: bool, out: Path) -> tuple[float, float]:
    """(wall seconds per task, mean in-worker seconds per task) for one run."""
    started = time.monotonic()
    summary = run_tasks([CHROME_SUITE / t for t in TASKS], solution_backend,
                        RunSettings(workers=1, max_steps=8, out_dir=out, sandbox=sandbox), progress=False)
    wall = time.monotonic() - started
    bad = [r for r in summary.results if r.status != "success"]
    if bad:
        raise SystemExit(f"a task did not succeed ({'sandbox' if sandbox else 'no sandbox'}): {bad[0]}")
    return wall / len(TASKS), statistics.mean(r.seconds for r in summary.results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for sandbox in (True, False):
                runs[sandbox].append(one(sandbox, Path(tmp) / f"r{i}-{sandbox}"))
    print(f"{len(TASKS)} tasks x {args.rounds} rounds, 1 worker, scripted solutions (test double)")
    print(f"{'mode':<12} {'wall s/task':>12} {'in-worker s/task':>17}")
    mean = {k: (statistics.mean(w for w, _ in v), statistics.mean(t for _, t in v)) for k, v in runs.items()}
    for sandbox in (True, False):
        print(f"{'bwrap' if sandbox else 'no sandbox':<12} {mean[sandbox][0]:>12.2f} {mean[sandbox][1]:>17.2f}")
    print(f"{'added':<12} {mean[True][0] - mean[False][0]:>+12.2f} {mean[True][1] - mean[False][1]:>+17.2f}")


if __name__ == "__main__":
    main()
