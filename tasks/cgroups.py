"""Kernel-enforced limits for one worker's process tree: a control group of its own.

A worker and everything its sandbox starts (Xvfb, Chromium, a task file's commands) run in one
cgroup made for it, below the runner's own cgroup, with

- `memory`: a hard limit on the tree's memory, page cache and tmpfs (`/tmp`, `/dev/shm`) included;
  above it the kernel reclaims, then kills a process of the tree (never one outside it), at once,
  where a poll of resident memory would see it seconds later or never (tmpfs files have no RSS);
- `pids`: at most this many processes and threads, so a fork bomb fails inside the sandbox
  instead of exhausting this machine's pid space;
- `cpu`: at most this many cores' worth of CPU time (CFS quota over a 100 ms period), so a busy
  task cannot starve the runner (which drives the GPU for every worker) or the other workers.

Both cgroup versions work: v1 (one hierarchy per controller, as on this machine: worker cgroups go
below the runner's own) and v2 (one unified tree). Under v2 a cgroup that hands controllers to its
children may hold no process itself (the kernel's no-internal-processes rule; the root is exempt), so
`v2_parent` picks where worker cgroups go, once per runner process:

1. the runner's own cgroup, if it has the controllers and is the root (the kernel's exemption);
2. the runner's own cgroup, if the runner is its only process (started with
   `systemd-run --scope -p Delegate=yes`, or alone in a container): the runner first moves itself
   into a leaf `kimi-agent-<pid>-runner` there, as systemd's delegation rules ask, then enables them
   (processes on their way out, such as the namespace init of a sandbox probe that has returned,
   are waited for, briefly: they would otherwise count as company);
3. else the nearest cgroup above it that already hands them out and that the runner may write
   (the root cgroup of a host, for root).

Where none of these works (no root, no delegation, a read-only cgroupfs), `place()` says why in one
sentence and the runner falls back to polling the tree's resident memory (worker_pool.py), without
the pids and cpu limits.

The worker enters its cgroup before it runs anything: its first process is `/bin/sh`, which writes
its own pid into the cgroup and then execs bwrap (`enter_argv`), so no child is ever born outside.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
EXIT_SETTLE_S = 2.0  # how long v2_parent waits for exiting processes to leave the runner's cgroup


@dataclass(frozen=True)
class Limits:
    """What one worker's tree may use: memory in bytes, processes + threads, CPU in cores."""

    memory_bytes: int
    pids: int
    cpus: float

    def describe(self) -> str:
        return f"memory {self.memory_bytes // 2**20} MiB, {self.pids} processes, {self.cpus:g} CPUs"


@dataclass(frozen=True)
class Mount:
    """Where the runner's own cgroup is, per controller: `dirs[c]` (the folder children go in)."""

    version: int  # 1 or 2
    dirs: dict[str, Path]


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of every mount of this process."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        sep = fields.index("-")
        out.append((fields[3], fields[4].replace("\\040", " "), fields[sep + 1], fields[sep + 3]))
    return out


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller name, and "" for the v2 tree (/proc/self/cgroup)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


def _under(mount_root: str, mount_point: str, path: str) -> Path:
    """The folder of cgroup `path` in a hierarchy mounted at `mount_point` from `mount_root`."""
    cgroup, root = PurePosixPath(path), PurePosixPath(mount_root)
    # a cgroup outside the mount's root (a cgroup namespace shows its own root as "/") is under the mount point
    rel = cgroup.relative_to(root) if cgroup.is_relative_to(root) else cgroup.relative_to("/")
    return Path(mount_point) / rel


def _v2_own(own: dict[str, str], mounts: list[tuple[str, str, str, str]]) -> tuple[Path, Path] | None:
    """(the runner's own v2 cgroup folder, the unified mount's top folder), or None without cgroup2."""
    if "" not in own:
        return None
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2":
            return _under(root, point, own[""]), Path(point)
    return None


@functools.cache
def find_mount() -> Mount | str:
    """Where this runner's worker cgroups go, with memory, pids and cpu, or why nowhere (one sentence).
    Decided once per process: under cgroup v2 deciding may move the runner into a leaf (`v2_parent`)."""
    own = _own_paths()
    mounts = _mountinfo()
    v1: dict[str, Path] = {}
    for root, point, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for c in CONTROLLERS:
            if c in opts.split(",") and c in own:
                v1[c] = _under(root, point, own[c])
    if len(v1) == len(CONTROLLERS):
        return Mount(1, v1)
    if v1:
        return f"cgroup v1 lacks the {', '.join(c for c in CONTROLLERS if c not in v1)} controller(s)"
    if (found := _v2_own(own, mounts)) is None:
        return "no cgroup hierarchy with the memory, pids and cpu controllers is mounted"
    parent = v2_parent(*found)
    return parent if isinstance(parent, str) else Mount(2, dict.fromkeys(CONTROLLERS, parent))


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text(encoding="ascii").split())
    except OSError:
        return set()


def _enable(parent: Path, controllers: set[str]) -> None:
    """Let `parent`'s children use `controllers` (OSError EBUSY while processes run in `parent` itself,
    unless it is the root)."""
    if missing := controllers - _words(parent / "cgroup.subtree_control"):
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


def _exiting(pid: str) -> bool:
    """Whether process `pid` is on its way out: its memory is already gone (an empty command line) but
    the kernel still lists it in its cgroup, as a sandbox's pid-namespace init is for a moment after
    bwrap itself returned (`sandbox.probe`); also True once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    except OSError:
        return True


def _others(here: Path, pid: int, settle_s: float = EXIT_SETTLE_S) -> list[str]:
    """The processes other than `pid` in cgroup `here`, once those that are exiting have gone (waited
    for at most `settle_s`; a live process is counted at once)."""
    deadline = time.monotonic() + settle_s
    while True:
        others = sorted(_words(here / "cgroup.procs") - {str(pid)})
        if not others or not all(_exiting(o) for o in others) or time.monotonic() > deadline:
            return others
        time.sleep(0.02)


def v2_parent(here: Path, top: Path, controllers: tuple[str, ...] = CONTROLLERS) -> Path | str:
    """cgroup v2: the folder to make worker cgroups in, for a runner whose own cgroup is the folder
    `here` of the unified tree mounted at `top` (rules 1-3 of the module docstring), or why none (one
    sentence). Rule 2 moves this process into the leaf `here/kimi-agent-<pid>-runner`."""
    want = set(controllers)
    names = ", ".join(controllers)
    pid = os.getpid()
    if want <= _words(here / "cgroup.controllers"):
        with contextlib.suppress(OSError):  # EBUSY unless `here` is the root or already hands them out
            _enable(here, want)
            return here
        others = _others(here, pid)
        if not others:
            leaf = here / f"kimi-agent-{pid}-runner"
            try:
                leaf.mkdir(exist_ok=True)
                _write(leaf / "cgroup.procs", pid)
                _enable(here, want)
                return here
            except OSError:  # back where it was (possible: `here` hands nothing out yet)
                with contextlib.suppress(OSError):
                    _write(here / "cgroup.procs", pid)
                    leaf.rmdir()
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        why = f"the runner's cgroup {here} " + (f"holds other processes too ({shown})" if others
                                                else "cannot be made to hand them out")
    else:
        why = f"the runner's cgroup {here} lacks {', '.join(sorted(want - _words(here / 'cgroup.controllers')))}"
    for above in here.parents:
        if not above.is_relative_to(top):
            break
        if want <= _words(above / "cgroup.subtree_control") and os.access(above, os.W_OK):
            return above
    return (f"cgroup v2: {why}, and no cgroup above it that this user may write hands out {names}; start the "
            "runner alone in a delegated cgroup (`systemd-run --scope -p Delegate=yes kimi-agent run ...`)")


class WorkerCgroup:
    """One worker's cgroup (one folder per v1 hierarchy, one folder in v2); see the module docstring."""

    def __init__(self, mount: Mount, name: str, limits: Limits) -> None:
        self.mount, self.name, self.limits = mount, name, limits
        self.dirs = {c: d / name for c, d in mount.dirs.items()}
        self._peak_fd: int | None = None  # v2: the memory.peak handle that was reset (reads see its peak)

    @property
    def folders(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    def describe(self) -> str:
        return f"cgroup v{self.mount.version}: {self.limits.describe()}"

    def create(self) -> None:
        """Make the folders and write the limits (OSError when the kernel refuses)."""
        for d in self.folders:
            d.mkdir(exist_ok=True)
        quota = max(1000, round(self.limits.cpus * CFS_PERIOD_US))
        if self.mount.version == 1:
            mem = self.dirs["memory"]
            _write(mem / "memory.limit_in_bytes", self.limits.memory_bytes)
            if (mem / "memory.memsw.limit_in_bytes").exists():  # swap counts too: the limit is real
                _write(mem / "memory.memsw.limit_in_bytes", self.limits.memory_bytes)
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", quota)
        else:
            d = self.dirs["memory"]
            _write(d / "memory.max", self.limits.memory_bytes)
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", 0)
            _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        _write(self.dirs["pids"] / "pids.max", self.limits.pids)

    def enter_argv(self, argv: list[str]) -> list[str]:
        """`argv` started by a shell that first moves itself into this cgroup (then execs argv)."""
        moves = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.folders)
        return ["/bin/sh", "-c", f"{moves} && exec \"$@\"", "kimi-agent-cgroup", *argv]

    def oom_kills(self) -> int:
        """Processes of the tree the kernel killed for going over the memory limit (0 if unknown)."""
        d = self.dirs["memory"]
        name, key = ("memory.oom_control", "oom_kill") if self.mount.version == 1 else ("memory.events", "oom_kill")
        try:
            text = (d / name).read_text(encoding="ascii")
        except OSError:
            return 0
        m = re.search(rf"^{key} (\d+)$", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    def _memory_file(self) -> Path:
        return self.dirs["memory"] / ("memory.usage_in_bytes" if self.mount.version == 1 else "memory.current")

    def memory_bytes(self) -> int | None:
        """The tree's memory now (bytes, page cache and tmpfs included), None where unreadable."""
        try:
            return int(self._memory_file().read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    def usage(self) -> dict[str, int]:
        """What the tree uses now: memory (bytes), peak memory (bytes, where the kernel keeps it), pids."""
        mem = self.dirs["memory"]
        files = {"memory": self._memory_file(), "pids": self.dirs["pids"] / "pids.current"}
        if self._peak_fd is None:  # else the reset handle below answers
            files["peak_memory"] = mem / ("memory.max_usage_in_bytes" if self.mount.version == 1 else "memory.peak")
        out = {}
        for key, path in files.items():
            try:
                out[key] = int(path.read_text(encoding="ascii"))
            except (OSError, ValueError):
                continue  # not kept by this kernel
        if self._peak_fd is not None:  # v2: the peak since the last reset, through the handle that reset it
            with contextlib.suppress(OSError, ValueError):
                out["peak_memory"] = int(os.pread(self._peak_fd, 64, 0))
        return out

    def kill(self) -> int:
        """SIGKILL every process still in the cgroup (a `--no-sandbox` worker's leftovers); how many."""
        if self.mount.version == 2 and (self.dirs["memory"] / "cgroup.kill").exists():  # Linux 5.14+: no fork race
            with contextlib.suppress(OSError):
                _write(self.dirs["memory"] / "cgroup.kill", 1)
        pids: set[int] = set()
        for d in self.folders:
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text(encoding="ascii").split())
            except (OSError, ValueError):
                continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def reset_peak(self) -> bool:
        """Start a new peak-memory reading (at a task's start); False where the kernel cannot. cgroup v2
        (Linux 6.12+) resets `memory.peak` only for reads through the handle that wrote it, so that
        handle is kept open for `usage()`; older kernels refuse the write."""
        if self.mount.version == 1:
            try:
                _write(self.dirs["memory"] / "memory.max_usage_in_bytes", 0)
            except OSError:
                return False
            return True
        self._close_peak()
        try:
            fd = os.open(self.dirs["memory"] / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.write(fd, b"reset\n")
        except OSError:
            os.close(fd)
            return False
        self._peak_fd = fd
        return True

    def _close_peak(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None

    def remove(self, wait_s: float = 10.0) -> bool:
        """Kill what is left in the cgroup, then remove its folders once the kernel has reaped every
        process (a bounded wait); False if some stayed."""
        self._close_peak()
        self.kill()
        deadline = time.monotonic() + wait_s
        left = self.folders
        while left:
            still = []
            for d in left:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    still.append(d)
            left = still
            if left:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n", encoding="ascii")


def place(name: str, limits: Limits) -> WorkerCgroup | str:
    """A created cgroup for one worker, or why none could be made (one sentence)."""
    mount = find_mount()
    if isinstance(mount, str):
        return mount
    group = WorkerCgroup(mount, name, limits)
    try:
        group.create()
    except OSError as e:
        group.remove(0)
        where = e.filename or group.folders[0]
        return f"cannot write cgroup v{mount.version} limits at {where}: {e.strerror or e}"
    return group


def sweep_stale(prefix: str = "kimi-agent-") -> int:
    """Remove empty worker cgroups (and v2 runner leaves) that runners which died without cleaning up
    left (`<prefix><pid>-...` whose runner pid is gone); how many were removed."""
    mount = find_mount()
    if isinstance(mount, str):
        return 0
    return sum(sweep_folder(parent, prefix) for parent in set(mount.dirs.values()))


def sweep_folder(parent: Path, prefix: str = "kimi-agent-") -> int:
    """`sweep_stale` in one folder."""
    try:
        children = list(parent.glob(f"{prefix}*"))
    except OSError:
        return 0
    removed = 0
    for d in children:
        m = re.match(rf"{re.escape(prefix)}(\d+)-", d.name)
        if m is None or Path(f"/proc/{m.group(1)}").exists() or not d.is_dir():
            continue
        try:
            d.rmdir()  # fails while processes are in it: then it is not stale
            removed += 1
        except OSError:
            continue
    return removed


@functools.cache
def probe() -> str | None:
    """None when this process can make worker cgroups here; otherwise why not, in one sentence."""
    group = place(f"kimi-agent-{os.getpid()}-probe", Limits(256 * 2**20, 64, 1.0))
    if isinstance(group, str):
        return group
    group.remove()
    return None


def default_cpus(workers: int) -> float:
    """A fair share of this machine's cores per worker, at least one."""
    return max(1.0, round((os.cpu_count() or 1) / max(1, workers), 1))
