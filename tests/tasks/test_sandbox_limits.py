"""A task file tries to exhaust this machine from inside its worker's sandbox; its worker's limits hold.

Real bwrap, Xvfb, Chromium and cgroups (tasks/cgroups.py), the real runner; the model is a test
double (the do-nothing backend). The attempts are OSWorld setup steps and getters, as a downloaded
task file would make them: a busy loop, a process that allocates more than the worker may use, a
tmpfs filled past it (memory no resident-set poll can see), and a fork bomb.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.task_files import include_exclude_task, shell_step

from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks import worker_pool as worker_pool_module
from kimi_agent.tasks.cgroups import probe as cgroup_probe
from kimi_agent.tasks.sandbox import probe
from kimi_agent.tasks.suites.solutions import do_nothing_backend

pytestmark = [
    pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                       reason="needs Xvfb and Chromium"),
    pytest.mark.skipif(probe() is not None, reason=f"bubblewrap cannot run here: {probe()}"),
]
needs_cgroups = pytest.mark.skipif(cgroup_probe() is not None, reason=f"no cgroups here: {cgroup_probe()}")


def _run(tmp_path: Path, tasks: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i, t in enumerate(tasks):
        (folder / f"t{i}.json").write_text(json.dumps(t), encoding="utf-8")
    summary = run_tasks(folder, do_nothing_backend, RunSettings(workers=1, max_steps=2, out_dir=tmp_path / "out",
                                                                **settings), progress=False)
    return {r.task_id: r for r in summary.results}


BUSY = "timeout 4 sh -c 'while :; do :; done'; times"  # `times`: the children's user and system CPU
HOG = "python3 -c \"import time; x = b'1' * (1536 << 20); time.sleep(20)\""
FILL = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=1536 2>&1; sleep 20"
BOMB = ("sh -c 'i=0; while [ $i -lt 400 ]; do sleep 5 & i=$((i+1)); done; echo all-400-started' 2>&1; "
        "echo bomb-over")


@needs_cgroups
def test_cpu_memory_tmpfs_and_fork_bomb_stay_inside_the_workers_cgroup(tmp_path: Path) -> None:
    by_id = _run(tmp_path, [
        include_exclude_task("busy", [], BUSY, ["0m"], []),
        include_exclude_task("hog", [shell_step(HOG)], "echo survived", ["survived"], []),
        include_exclude_task("tmpfs", [shell_step(FILL)], "echo survived", ["survived"], []),
        include_exclude_task("bomb", [], BOMB, ["bomb-over"], ["all-400-started"]),
    ], worker_memory_mb=1024, worker_pids=256, worker_cpus=0.25)
    assert all(r.host and r.host["limits"].startswith("cgroup v") for r in by_id.values()), by_id
    # a busy loop of 4 s wall time gets at most a quarter of a core: about 1 s of CPU, not 4
    busy = by_id["busy"]
    assert (busy.status, busy.score) == ("success", 1.0), busy
    text = busy.evaluation["metrics"][0]["result"]
    user, system = (float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", text.splitlines()[-1]))
    assert user + system < 2.0, text
    # 1.5 GB in a process, and 1.5 GB in the sandbox's /dev/shm (a tmpfs, which has no resident
    # set): the kernel stops both at 1 GiB, and the task is an error that says why
    for name in ("hog", "tmpfs"):
        r = by_id[name]
        assert r.status == "error" and "over the 1024 MiB memory limit" in r.reason, r
        assert r.host is not None and 1000 <= r.host["peak_memory_mb"] <= 1024  # it reached the limit
    assert 0 < busy.host["peak_memory_mb"] < 1000  # each task's own peak (reset when it started)
    assert busy.host["peak_memory_by"].startswith("kernel")
    # 400 processes wanted, 256 allowed for the whole worker: the bomb fails inside
    bomb = by_id["bomb"]
    assert (bomb.status, bomb.score) == ("success", 1.0), bomb


def test_without_cgroups_the_runner_polls_memory_and_kills_the_tree(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a test double for a machine where cgroups cannot be written (no root, no delegation)
    monkeypatch.setattr(worker_pool_module, "place", lambda name, limits: "test double: no cgroup here")
    by_id = _run(tmp_path, [include_exclude_task("hog", [shell_step(HOG)], "echo survived", ["survived"], [])], worker_memory_mb=768)
    hog = by_id["hog"]
    assert hog.status == "error" and "over the 768 MiB limit" in hog.reason, hog
    assert hog.host is not None and "polled" in hog.host["limits"] and "test double" in hog.host["limits"]
    assert hog.host["peak_memory_mb"] > 768  # the poll that saw it over the limit
    assert hog.host["peak_memory_by"].startswith("sampled every 2 s (the tree's resident memory)")


HOLD = "python3 -c \"import time; x = b'1' * (400 << 20); time.sleep(5)\""  # 400 MB for 5 s, then gone


@needs_cgroups
def test_where_the_kernel_cannot_reset_the_peak_the_runner_samples_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a test double for cgroup v2 before Linux 6.12 (memory.peak cannot be reset per task); the
    # cgroup itself, and its usage that the runner samples, are real
    monkeypatch.setattr(worker_pool_module.WorkerCgroup, "reset_peak", lambda self: False)
    by_id = _run(tmp_path, [include_exclude_task("hold", [shell_step(HOLD)], "echo survived", ["survived"], [])], worker_memory_mb=1024)
    hold = by_id["hold"]
    assert (hold.status, hold.score) == ("success", 1.0), hold
    assert hold.host is not None and 400 <= hold.host["peak_memory_mb"] < 1024, hold.host
    assert hold.host["peak_memory_by"].startswith("sampled every 2 s (the cgroup's usage")


# the home is a folder of this machine; no one file may outgrow the limit (RLIMIT_FSIZE), so it takes several
FILL_DISK = "for i in 1 2 3 4; do head -c 80M /dev/zero > /home/user/big$i; done; sleep 20"


def test_a_task_that_fills_this_machines_disk_is_stopped_and_its_files_removed(tmp_path: Path) -> None:
    by_id = _run(tmp_path, [include_exclude_task("fill-disk", [shell_step(FILL_DISK)], "echo survived", ["survived"], []),
                            include_exclude_task("after", [], "echo fine", ["fine"], [])], worker_disk_mb=100)
    fill, after = by_id["fill-disk"], by_id["after"]
    assert fill.status == "error" and "over the 100 MiB limit" in fill.reason, fill
    assert fill.host is not None and not Path(fill.host["worker_dir"]).exists()  # its home went with it
    assert (after.status, after.score) == ("success", 1.0), after  # on a fresh worker
    big = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.stat().st_size > 10 << 20]
    assert big == []


def test_a_task_killed_past_its_budget_keeps_the_steps_its_episode_took(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # the episode ends (one step), then scoring hangs in its postconfig; the runner kills the worker
    monkeypatch.setattr(worker_pool_module, "KILL_GRACE_S", 1.0)  # 60 s in a run
    task = include_exclude_task("hangs-scoring", [], "echo fine", ["fine"], [])
    task["evaluator"]["postconfig"] = [{"type": "sleep", "parameters": {"seconds": 300}}]
    hung = _run(tmp_path, [task], task_timeout_s=30)["hangs-scoring"]
    assert hung.status == "error" and hung.reason.startswith("timed out after 30 s"), hung
    assert hung.steps == 1 and hung.trajectory is not None, hung  # not steps 0 and no trajectory
    assert (tmp_path / "out" / hung.trajectory / "steps.jsonl").is_file()
