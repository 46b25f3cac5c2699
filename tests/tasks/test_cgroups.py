"""Worker cgroups on this machine's real cgroup hierarchies (tasks/cgroups.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from kimi_agent.tasks.cgroups import Limits, WorkerCgroup, find_mount, place, probe, sweep_stale

needs_cgroups = pytest.mark.skipif(probe() is not None, reason=f"no cgroups here: {probe()}")


def _group(name: str, limits: Limits | None = None) -> WorkerCgroup:
    group = place(f"kimi-agent-{os.getpid()}-{name}", limits or Limits(256 * 2**20, 64, 1.0))
    assert isinstance(group, WorkerCgroup), group
    return group


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_cgroups
def test_everything_a_worker_starts_is_inside_and_removal_kills_what_escaped_its_session() -> None:
    group = _group("t-kill")
    try:
        # the worker leaves a process in a session of its own (what --no-sandbox workers could leave)
        out = subprocess.run(group.enter_argv(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"]),
                             capture_output=True, text=True, timeout=30, check=True).stdout
        orphan = int(out.split()[-1])
        assert _alive(orphan)
        assert f"/{group.name}" in Path(f"/proc/{orphan}/cgroup").read_text(encoding="ascii")
        assert group.usage()["pids"] == 1
    finally:
        assert group.remove()
    deadline = time.monotonic() + 10
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(orphan)
    assert not any(d.exists() for d in group.folders)


@needs_cgroups
def test_limits_are_written_and_an_oom_kill_is_counted() -> None:
    group = _group("t-oom", Limits(128 * 2**20, 32, 0.5))
    try:
        assert group.oom_kills() == 0
        done = subprocess.run(group.enter_argv(["python3", "-c", "x = b'1' * (512 << 20)"]), capture_output=True,
                              timeout=60, check=False)
        assert done.returncode == -9
        assert group.oom_kills() == 1
        assert group.usage()["peak_memory"] <= 128 * 2**20
        assert group.describe().endswith("memory 128 MiB, 32 processes, 0.5 CPUs")
    finally:
        assert group.remove()


@needs_cgroups
def test_sweep_removes_the_empty_cgroups_of_runners_that_died() -> None:
    mount = find_mount()
    assert not isinstance(mount, str)
    gone = next(p for p in range(2**22 - 1, 300, -1) if not Path(f"/proc/{p}").exists())  # a runner that died
    parents = set(mount.dirs.values())
    stale = [d / f"kimi-agent-{gone}-w0-1" for d in parents]
    live = [d / f"kimi-agent-{os.getpid()}-w0-1" for d in parents]
    for d in [*stale, *live]:
        d.mkdir()
    try:
        assert sweep_stale() >= len(stale)
        assert not any(d.exists() for d in stale)
        assert all(d.exists() for d in live)  # its runner (this process) is alive
    finally:
        for d in [*stale, *live]:
            if d.exists():
                d.rmdir()


def test_a_cgroup_path_is_found_under_its_hierarchys_mount() -> None:
    from kimi_agent.tasks.cgroups import _under

    assert _under("/", "/sys/fs/cgroup/memory", "/user/a") == Path("/sys/fs/cgroup/memory/user/a")
    assert _under("/", "/sys/fs/cgroup/memory", "/") == Path("/sys/fs/cgroup/memory")
    assert _under("/docker/x", "/sys/fs/cgroup", "/docker/x/w1") == Path("/sys/fs/cgroup/w1")
    assert _under("/docker/x", "/sys/fs/cgroup", "/docker/xy") == Path("/sys/fs/cgroup/docker/xy")  # not under it
    assert _under("/docker/x", "/sys/fs/cgroup", "/") == Path("/sys/fs/cgroup")  # a cgroup namespace's root
