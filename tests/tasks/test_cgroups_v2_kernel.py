"""Worker cgroups under cgroup v2 with memory, pids and cpu, in a real Linux kernel: a User-Mode Linux
guest (Debian's `user-mode-linux`, Linux 6.1, booted in about 2 s with this machine's files as its
root over hostfs) whose only cgroup hierarchy is v2. This machine binds those controllers to cgroup
v1, so the guest is where the v2 path meets the kernel's own rules: limits, OOM kills counted in
`memory.events`, `memory.peak`, the no-internal-processes rule behind the runner's leaf.

The guest runs tests/support/cgroup_v2_guest.py and writes its answers as JSON; the asserts are here.
Skipped where `linux.uml` is not installed (scripts/setup.sh installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

GUEST = Path(__file__).parents[1] / "support" / "cgroup_v2_guest.py"
ROOT = Path(__file__).parents[2]
UML = shutil.which("linux.uml")

pytestmark = pytest.mark.skipif(UML is None, reason="linux.uml (apt-get install user-mode-linux) is not installed")

INIT = """#!/bin/sh
# PID 1 of the guest: its own proc, sys, cgroup2 (the only hierarchy) and /dev/shm; the scenario; off
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
cd {root}
PYTHONDONTWRITEBYTECODE=1 {python} {guest} {out} > {log} 2>&1
echo "guest exit $?" >> {log}
poweroff -f
"""


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Boot the guest once, run the scenario, return its answers."""
    work = tmp_path_factory.mktemp("uml")
    out, log = work / "out.json", work / "guest.log"
    init = work / "init.sh"
    init.write_text(INIT.format(root=ROOT, python=sys.executable, guest=GUEST, out=out, log=log), encoding="utf-8")
    init.chmod(0o755)
    assert UML is not None
    console = subprocess.run([UML, "mem=768M", "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}",
                              "con=null", "con0=fd:0,fd:1", f"uml_dir={work}"], cwd=work, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=300)
    shown = f"--- console\n{console.stdout[-2000:]}\n--- guest log\n{log.read_text() if log.exists() else '(none)'}"
    assert out.exists(), shown
    return json.loads(out.read_text(encoding="utf-8"))


def _check_worker(w: dict[str, Any], memory_mib: int, pids: int) -> None:
    """One worker cgroup's life in the guest (see `_worker` there)."""
    assert w["place"].startswith(f"cgroup v2: memory {memory_mib} MiB, {pids} processes"), w
    assert w["files"]["memory.max"] == str(memory_mib << 20)
    assert w["files"]["pids.max"] == str(pids)
    assert w["files"]["cpu.max"] == "50000 100000"
    assert w["files"].get("memory.swap.max", "0") == "0"
    assert w["hog_rc"] == -9 and w["oom_kills_after_hog"] == 1  # a 400 MiB process: killed, and counted
    assert w["shm_rc"] != 0 and w["oom_kills_after_shm"] == 2  # 300 MB of tmpfs: charged, killed, counted
    assert 0 < w["usage"]["peak_memory"] <= memory_mib << 20
    assert w["busy_cpu_s"] <= 0.7 * w["busy_wall_s"]  # 0.5 CPU (the guest has 1, idle otherwise: ~1.0 unlimited)
    assert w["storm_rc"] != 0 and "fork" in " ".join(w["storm_err"]).lower()  # 64 sleeps past pids.max
    assert w["pids_before_remove"] >= 1  # the storm's sleeps and the leftover, still inside
    assert w["removed"] and w["orphan_gone"] and w["folder_gone"]


def test_the_guest_has_only_cgroup_v2(guest: dict[str, Any]) -> None:
    assert guest["kernel"].startswith("6.")
    assert guest["cgroup"] == "0::/"


def test_a_runner_at_the_root_puts_workers_there_and_the_kernel_enforces_every_limit(guest: dict[str, Any]) -> None:
    assert guest["mount"] == {"version": 2, "parent": "/sys/fs/cgroup"}
    _check_worker(guest["root"], 128, 32)
    assert guest["root"]["reset_peak"] is False  # Linux 6.1: memory.peak cannot be reset (6.12+ can)


def test_a_runner_alone_in_its_scope_moves_into_a_leaf_and_its_workers_get_limits_there(guest: dict[str, Any]) -> None:
    alone = guest["alone"]
    assert alone["cgroup_before"] == "0::/scope-alone"
    assert alone["cgroup_after"] == f"0::/scope-alone/kimi-agent-{alone['pid']}-runner"
    assert alone["mount"] == alone["scope"] == "/sys/fs/cgroup/scope-alone"
    assert {"cpu", "memory", "pids"} <= set(alone["scope_subtree_control"])
    assert alone["worker"]["folder"] == f"/sys/fs/cgroup/scope-alone/kimi-agent-{alone['pid']}-w0-0"
    _check_worker(alone["worker"], 96, 24)
    assert alone["swept"] == 1  # the ended runner's leaf


def test_a_runner_sharing_its_scope_puts_workers_in_the_nearest_cgroup_that_hands_out_the_controllers(
        guest: dict[str, Any]) -> None:
    shared = guest["shared"]
    assert shared["cgroup_after"] == shared["cgroup_before"] == "0::/scope-shared"  # not moved
    assert shared["mount"] == "/sys/fs/cgroup"
    assert shared["scope_subtree_control"] == []
    assert shared["worker"]["folder"] == f"/sys/fs/cgroup/kimi-agent-{shared['pid']}-w0-0"
    _check_worker(shared["worker"], 96, 24)
    assert shared["swept"] == 0
