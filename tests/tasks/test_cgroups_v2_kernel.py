"""Worker cgroups under cgroup v2 with memory, pids and cpu, in a real Linux kernel: a User-Mode Linux
guest (Debian's `user-mode-linux`, Linux 6.1, booted in about 2 s with this machine's files as its
root over hostfs) whose only cgroup hierarchy is v2. This machine binds those controllers to cgroup
v1, so the guest is where the v2 path meets the kernel's own rules: limits, OOM kills counted in
`memory.events`, `memory.peak`, the no-internal-processes rule behind the runner's leaf.

The guest runs tests/support/cgroup_v2_guest.py and writes its answers as JSON; the asserts are here.
A second guest runs the whole runner on a built-in task (sandboxed worker, Xvfb, Chromium, scoring)
from a cgroup of its own, as `systemd-run --scope -p Delegate=yes kimi-agent run ...` would start it.
Skipped where `linux.uml` is not installed (scripts/setup.sh installs it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import uml_guest

GUEST = Path(__file__).parents[1] / "support" / "cgroup_v2_guest.py"

pytestmark = pytest.mark.skipif(uml_guest.UML is None, reason="linux.uml (apt-get install user-mode-linux) is not installed")


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Boot the guest once, run the scenario, return its answers."""
    work = tmp_path_factory.mktemp("uml")
    out = work / "out.json"
    shown = uml_guest.boot(work, f"$PYTHON {GUEST} {out}", mem="768M", timeout_s=300)
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


def test_a_runner_alone_in_its_scope_moves_into_a_leaf_even_right_after_a_sandbox_probe(
        guest: dict[str, Any]) -> None:
    # bwrap returns before its sandbox's pid-namespace init has left the cgroup: counted as company,
    # it sent the runner's workers to the tree's root instead of its scope (CI, stop 20)
    assert len(guest["probed"]) == 8
    for run in guest["probed"]:
        assert run["cgroup_after"] == f"{run['cgroup_before']}/kimi-agent-{run['pid']}-runner", run
        assert run["mount"] == "/sys/fs/cgroup" + run["cgroup_before"].removeprefix("0::"), run


RUNNER_SCRIPT = """
echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control  # what a delegating systemd would do
mkdir /sys/fs/cgroup/scope-runner
/bin/sh -c 'echo $$ > /sys/fs/cgroup/scope-runner/cgroup.procs && exec "$@"' sh \\
  $PYTHON -m kimi_agent.cli run {task} --backend solutions --out {out} --no-progress --worker-memory 1500 \\
  --start-timeout 180
echo "runner exit $?"
find /sys/fs/cgroup -name 'kimi-agent-*' > {left}
cat /sys/fs/cgroup/scope-runner/kimi-agent-*-runner/cgroup.procs >> {left}
"""


def test_the_whole_runner_in_a_v2_only_kernel_scores_a_task_in_a_sandboxed_limited_worker(
        tmp_path: Path) -> None:
    # One CPU under User-Mode Linux: Chromium takes about a minute to start here, so --start-timeout 180
    task = Path(__file__).parents[2] / "tasks" / "suites" / "chrome" / "suite-bookmark.json"
    out, left = tmp_path / "out", tmp_path / "left.txt"
    shown = uml_guest.boot(tmp_path, RUNNER_SCRIPT.format(task=task, out=out, left=left), mem="2G", timeout_s=600)
    result_file = out / "suite-bookmark" / "result.json"
    assert result_file.is_file(), shown
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert (result["status"], result["score"]) == ("success", 1.0), f"{result['reason']}\n{shown[-1500:]}"
    assert "runner exit 0" in shown, shown
    host = result["host"]
    assert host["sandbox"] == "bwrap"
    assert host["limits"].startswith("cgroup v2: memory 1500 MiB, 2048 processes"), host
    assert host["peak_memory_by"].startswith("sampled")  # Linux 6.1: the kernel's peak cannot be reset
    assert 0 < host["peak_memory_mb"] <= 1500
    remaining = left.read_text(encoding="ascii").split()
    assert len(remaining) == 1 and remaining[0].startswith("/sys/fs/cgroup/scope-runner/kimi-agent-"), (
        remaining, shown[-1500:])
    assert remaining[0].endswith("-runner")  # the ended runner's empty leaf (the next run sweeps it); no worker
