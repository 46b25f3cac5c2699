"""What tests/tasks/test_cgroups_v2_kernel.py runs inside a User-Mode Linux guest whose only cgroup
hierarchy is v2 (memory, pids and cpu in one unified tree): the worker cgroups of tasks/cgroups.py,
as a runner uses them, with every answer written to the JSON file named by argv[1].

    python cgroup_v2_guest.py OUT.json           # the runner at the tree's root (rule 1), then rules 2, 3
    python cgroup_v2_guest.py OUT.json runner    # internal: a runner placed in a scope by the caller
    python cgroup_v2_guest.py OUT.json probed    # internal: the same, after a sandbox probe, no worker
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kimi_agent.tasks import cgroups, sandbox

HOG = "x = bytearray(400 << 20)"  # 400 MiB, over every limit below
SHM_HOG = "head -c 300000000 /dev/zero > /dev/shm/fill"  # 300 MB of tmpfs: no process's RSS holds it
BUSY = "import os, time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass\nprint(sum(os.times()[:2]))"
TREE = Path("/sys/fs/cgroup")
PROBED_RUNS = 8


def _cgroup_line() -> str:
    return next(ln for ln in Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines() if ln.startswith("0::"))


def _worker(name: str, limits: cgroups.Limits) -> dict[str, Any]:
    """One worker cgroup from `place`, through what a worker does: limits, a memory hog, a tmpfs hog,
    a busy loop, a fork storm, a leftover process; then removal."""
    group = cgroups.place(name, limits)
    if isinstance(group, str):
        return {"place": group}
    d = group.folders[0]
    out: dict[str, Any] = {"place": group.describe(), "folder": str(d), "seconds": {}}
    t0 = time.monotonic()

    def lap(what: str) -> None:
        nonlocal t0
        out["seconds"][what], t0 = round(time.monotonic() - t0, 2), time.monotonic()

    out["files"] = {n: (d / n).read_text(encoding="ascii").strip()
                    for n in ("memory.max", "memory.swap.max", "pids.max", "cpu.max") if (d / n).exists()}
    out["reset_peak"] = group.reset_peak()
    hog = subprocess.run(group.enter_argv([sys.executable, "-c", HOG]), capture_output=True, timeout=120)
    out["hog_rc"], out["oom_kills_after_hog"] = hog.returncode, group.oom_kills()
    lap("hog")
    shm = subprocess.run(group.enter_argv(["sh", "-c", SHM_HOG]), capture_output=True, timeout=120)
    out["shm_rc"], out["oom_kills_after_shm"] = shm.returncode, group.oom_kills()
    Path("/dev/shm/fill").unlink(missing_ok=True)
    lap("shm")
    out["usage"] = group.usage()
    t = time.monotonic()
    busy = subprocess.run(group.enter_argv([sys.executable, "-c", BUSY]), capture_output=True, text=True, timeout=120)
    out["busy_cpu_s"], out["busy_wall_s"] = float(busy.stdout.strip() or "nan"), time.monotonic() - t
    lap("busy")
    storm = subprocess.run(group.enter_argv(["sh", "-c", "for i in $(seq 64); do sleep 2 & done; wait"]),
                           capture_output=True, text=True, timeout=120)
    out["storm_rc"], out["storm_err"] = storm.returncode, storm.stderr.strip().splitlines()[:1]
    lap("storm")
    left = subprocess.run(group.enter_argv(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"]),
                          capture_output=True, text=True, timeout=60)
    orphan = int(left.stdout.split()[-1]) if left.stdout.split() else None
    out["pids_before_remove"] = group.usage().get("pids")
    out["removed"] = group.remove()
    out["orphan_gone"] = orphan is not None and not Path(f"/proc/{orphan}").exists()
    out["folder_gone"] = not d.exists()
    lap("remove")
    return out


def runner(out_path: Path, probed: bool = False) -> None:
    """A runner already placed in some cgroup by its parent: where its workers go, and one worker; or,
    `probed`, where they go right after a sandbox probe (as `kimi-agent run` asks), and no worker."""
    before = _cgroup_line()
    if probed:  # bwrap returns before its pid-namespace init has left the cgroup (here, often)
        assert sandbox.probe() is None
    mount = cgroups.find_mount()
    result: dict[str, Any] = {"pid": os.getpid(), "cgroup_before": before}
    result["mount"] = mount if isinstance(mount, str) else str(mount.dirs["memory"])
    result["cgroup_after"] = _cgroup_line()
    if not isinstance(mount, str) and not probed:
        result["worker"] = _worker(f"kimi-agent-{os.getpid()}-w0-0", cgroups.Limits(96 << 20, 24, 0.5))
    out_path.write_text(json.dumps(result), encoding="utf-8")


def enter(cgroup: Path, argv: list[str]) -> list[str]:
    """argv, started by a shell that first moves itself into `cgroup` (a folder of a v2 tree)."""
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]


def main(out_path: Path) -> None:
    result: dict[str, Any] = {"kernel": os.uname().release, "cgroup": _cgroup_line()}
    mount = cgroups.find_mount()  # rule 1: this process is in the tree's root
    result["mount"] = mount if isinstance(mount, str) else {"version": mount.version, "parent": str(mount.dirs["memory"])}
    result["root"] = _worker(f"kimi-agent-{os.getpid()}-w0-0", cgroups.Limits(128 << 20, 32, 0.5))
    # rule 2: a runner alone in a scope of its own; rule 3: a runner sharing its scope with another process
    for rule, company in (("alone", False), ("shared", True)):
        scope = TREE / f"scope-{rule}"
        scope.mkdir()
        other = subprocess.Popen(enter(scope, ["sleep", "300"])) if company else None
        while other is not None and str(other.pid) not in (scope / "cgroup.procs").read_text(encoding="ascii").split():
            time.sleep(0.02)
        child_out = out_path.with_name(f"{out_path.stem}-{rule}.json")
        subprocess.run(enter(scope, [sys.executable, __file__, str(child_out), "runner"]), timeout=300, check=True)
        result[rule] = json.loads(child_out.read_text(encoding="utf-8"))
        result[rule]["scope"] = str(scope)
        result[rule]["scope_subtree_control"] = (scope / "cgroup.subtree_control").read_text(encoding="ascii").split()
        if other is not None:
            other.kill()
            other.wait()
        result[rule]["swept"] = cgroups.sweep_folder(scope)  # the ended runner's leaf
    # rule 2 again, right after a sandbox probe, in fresh scopes: an exiting process is no company
    result["probed"] = []
    for i in range(PROBED_RUNS):
        scope = TREE / f"scope-probed-{i}"
        scope.mkdir()
        child_out = out_path.with_name(f"{out_path.stem}-probed-{i}.json")
        subprocess.run(enter(scope, [sys.executable, __file__, str(child_out), "probed"]), timeout=300, check=True)
        result["probed"].append(json.loads(child_out.read_text(encoding="utf-8")))
        cgroups.sweep_folder(scope)
        scope.rmdir()
    out_path.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] in ("runner", "probed"):
        runner(Path(sys.argv[1]), probed=sys.argv[2] == "probed")
    else:
        main(Path(sys.argv[1]))
