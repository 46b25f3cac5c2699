"""Where a cgroup v2 runner puts its workers' cgroups (tasks/cgroups.py `v2_parent`), on this machine's
real unified hierarchy: the kernel's no-internal-processes rule, migrations and delegation are the
kernel's own.

This machine binds memory, pids and cpu to cgroup v1, so its unified tree (cgroup2) hands out only
`hugetlb`: these tests run `v2_parent`'s rules with that controller. They enable hugetlb in the
unified root's `cgroup.subtree_control` (the root may always do so) and leave it on: turning it off
could race a parallel test, and it limits nothing. Skipped where no cgroup2 tree with hugetlb can
be written (not root, or a machine without one).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cgroup_v2_guest import enter

from kimi_agent.tasks.cgroups import _mountinfo, sweep_folder, v2_parent

CONTROLLERS = ("hugetlb",)
# A runner process: it is already in the cgroup argv[1] (a test's stand-in for a systemd scope) and
# asks where its workers' cgroups go.
RUNNER = r"""
import json, os, sys
from pathlib import Path
from kimi_agent.tasks.cgroups import v2_parent
parent = v2_parent(Path(sys.argv[1]), Path(sys.argv[2]), ("hugetlb",))
print(json.dumps({"parent": str(parent), "pid": os.getpid(),
                  "cgroup": [ln for ln in open("/proc/self/cgroup") if ln.startswith("0::")][0].strip()}))
"""


def _unified() -> Path | None:
    return next((Path(point) for _, point, fstype, _ in _mountinfo() if fstype == "cgroup2"), None)


def _words(path: Path) -> set[str]:
    return set(path.read_text(encoding="ascii").split())


def _why_not() -> str | None:
    top = _unified()
    if top is None:
        return "no cgroup2 tree is mounted"
    if os.geteuid() != 0:
        return "writing the unified tree's root needs root"
    if "hugetlb" not in _words(top / "cgroup.controllers"):
        return f"the cgroup2 tree at {top} has no hugetlb controller"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def _remove_tree(root: Path) -> None:
    """Kill every process in `root` and below, then remove the folders, deepest first (bounded)."""
    folders = [*sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), root]
    for d in folders:
        for pid in _words(d / "cgroup.procs"):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
    deadline = time.monotonic() + 10
    for d in folders:
        while True:
            try:
                d.rmdir()
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def top() -> Path:
    path = _unified()
    assert path is not None
    (path / "cgroup.subtree_control").write_text("+hugetlb\n", encoding="ascii")  # the root may always
    return path


@pytest.fixture
def scope(top: Path) -> Iterator[Path]:
    """A cgroup that stands in for the runner's `systemd-run --scope -p Delegate=yes` scope."""
    path = top / f"kimi-agent-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    _remove_tree(path)


def _runner(scope: Path, top: Path) -> dict[str, object]:
    done = subprocess.run(enter(scope, [sys.executable, "-c", RUNNER, str(scope), str(top)]), capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_a_runner_alone_in_its_cgroup_moves_into_a_leaf_and_hands_the_controller_to_its_workers(
        scope: Path, top: Path) -> None:
    seen = _runner(scope, top)
    pid = seen["pid"]
    assert seen["parent"] == str(scope)
    assert seen["cgroup"] == f"0::/{scope.relative_to(top)}/kimi-agent-{pid}-runner"
    assert "hugetlb" in _words(scope / "cgroup.subtree_control")
    worker = scope / f"kimi-agent-{pid}-w0-0"  # a worker cgroup of that runner gets the controller
    worker.mkdir()
    assert "hugetlb" in _words(worker / "cgroup.controllers")
    done = subprocess.run(enter(worker, ["cat", "/proc/self/cgroup"]), capture_output=True, text=True, timeout=30,
                          check=True)
    assert f"0::/{scope.relative_to(top)}/{worker.name}\n" in done.stdout
    # why the leaf: now that the scope hands out a controller, no process may live in the scope itself
    with pytest.raises(OSError) as refused:
        (scope / "cgroup.procs").write_text(f"{os.getpid()}\n", encoding="ascii")
    assert refused.value.errno == errno.EBUSY
    # the runner has ended: its leaf and its worker's cgroup are swept as a dead runner's
    assert sweep_folder(scope) == 2
    assert not worker.exists() and not (scope / f"kimi-agent-{pid}-runner").exists()


def test_a_runner_that_shares_its_cgroup_uses_the_nearest_cgroup_above_that_hands_the_controller_out(
        scope: Path, top: Path) -> None:
    other = subprocess.Popen(enter(scope, ["sleep", "60"]))
    try:
        deadline = time.monotonic() + 10
        while str(other.pid) not in _words(scope / "cgroup.procs"):
            assert time.monotonic() < deadline, "the other process never entered the scope"
            time.sleep(0.02)
        seen = _runner(scope, top)
    finally:
        other.kill()
        other.wait(timeout=10)
    assert seen["parent"] == str(top)
    assert seen["cgroup"] == f"0::/{scope.relative_to(top)}"  # not moved
    assert "hugetlb" not in _words(scope / "cgroup.subtree_control")


def test_the_root_cgroup_hands_out_controllers_with_the_runner_in_it(top: Path) -> None:
    own = Path("/proc/self/cgroup").read_text(encoding="ascii")
    if "0::/\n" not in own:
        pytest.skip("this test process is not in the unified tree's root")
    assert v2_parent(top, top, CONTROLLERS) == top
    assert Path("/proc/self/cgroup").read_text(encoding="ascii") == own  # the root is exempt: nothing moved


def test_a_controller_the_tree_does_not_have_is_named_with_the_way_out(top: Path) -> None:
    why = v2_parent(top, top, ("hugetlb", "memory"))
    assert isinstance(why, str)
    assert why.startswith(f"cgroup v2: the runner's cgroup {top} lacks memory, and no cgroup above it")
    assert "systemd-run --scope -p Delegate=yes" in why
