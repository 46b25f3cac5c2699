"""What the bubblewrap sandbox and the workers' cgroups add per task: the same tasks three ways, in one run.

Runs the built-in suite's tasks (scripted solutions as the model's test double) through
`run_tasks` in bwrap with the worker's cgroup (the default), in bwrap without a cgroup (memory
polled instead), and with no sandbox, alternating, and prints per mode the wall time of the whole
run divided by its tasks (worker start and teardown included), the mean per-task time measured
inside the worker (setup + episode + scoring) and, with a cgroup, the worker tree's mean peak
memory per task; then the differences to no sandbox.

    python bench/sandbox_overhead.py                 # 2 rounds of 3 tasks, 1 worker
    python bench/sandbox_overhead.py --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from kimi_agent.tasks import RunSettings, run_tasks, worker_pool
from kimi_agent.tasks.suites import CHROME_SUITE
from kimi_agent.tasks.suites.solutions import solution_backend

TASKS = ["suite-font-size.json", "suite-web-navigation.json", "suite-do-not-track.json"]


MODES = ("bwrap + cgroup", "bwrap, no cgroup", "no sandbox")


def one(mode: str, out: Path) -> tuple[float, float, float | None]:
    """(wall seconds per task, mean in-worker seconds per task, mean peak MiB per task or None)."""
    started = time.monotonic()
    settings = RunSettings(workers=1, max_steps=8, out_dir=out, sandbox=mode != "no sandbox")
    with mock.patch.object(worker_pool, "place", lambda name, limits: "off for this benchmark") if (
            mode == "bwrap, no cgroup") else contextlib.nullcontext():
        summary = run_tasks([CHROME_SUITE / t for t in TASKS], solution_backend, settings, progress=False)
    wall = time.monotonic() - started
    bad = [r for r in summary.results if r.status != "success"]
    if bad:
        raise SystemExit(f"a task did not succeed ({mode}): {bad[0]}")
    peaks = [r.host["peak_memory_mb"] for r in summary.results if r.host and "peak_memory_mb" in r.host]
    return (wall / len(TASKS), statistics.mean(r.seconds for r in summary.results),
            statistics.mean(peaks) if peaks else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list[tuple[float, float, float | None]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for n, mode in enumerate(MODES):
                runs[mode].append(one(mode, Path(tmp) / f"r{i}-{n}"))
    print(f"{len(TASKS)} tasks x {args.rounds} rounds, 1 worker, scripted solutions (test double)")
    print(f"{'mode':<24} {'wall s/task':>12} {'in-worker s/task':>17} {'peak MiB/task':>14}")
    base = runs["no sandbox"]
    for mode, v in runs.items():
        peaks = [p for _, _, p in v if p is not None]
        peak = f"{statistics.mean(peaks):>14.0f}" if peaks else f"{'-':>14}"
        print(f"{mode:<24} {statistics.mean(w for w, _, _ in v):>12.2f} {statistics.mean(t for _, t, _ in v):>17.2f} {peak}")
    for mode in MODES[:2]:
        wall = statistics.mean(w for w, _, _ in runs[mode]) - statistics.mean(w for w, _, _ in base)
        inside = statistics.mean(t for _, t, _ in runs[mode]) - statistics.mean(t for _, t, _ in base)
        print(f"{'added: ' + mode:<24} {wall:>+12.2f} {inside:>+17.2f}")

if __name__ == "__main__":
    main()
