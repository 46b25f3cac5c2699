"""Who a sandboxed worker is on this machine: a user of its own, not the runner's root.

A worker's sandbox (tasks/sandbox.py) runs its tasks as uid 1000 in a user namespace of its own.
Left to itself bwrap maps that uid onto the user that runs it. For a runner that runs as root (which
cgroups and uplinks need) a task's processes would then be this machine's root, without
capabilities but with root's owner rights: every root-only file in a folder the sandbox sees (a
mode-600 secret in the project, in the interpreter's folders) would be readable.

So, where the runner is root, the runner writes the namespace's map itself (bwrap waits on
`--userns-block-fd` until it has): uid and gid 1000 become `SANDBOX_HOST_UID` of this machine, an
unprivileged id that owns nothing but the worker's home and staging folder; uid 0 stays root only
for bwrap's own setup, which then drops every capability, and the command starts under
`setpriv` as 1000 (`no_new_privs`: nothing gets a capability back). The kernel's file checks then
treat a task as any other unprivileged user. The namespace's `user.max_user_namespaces` is set to 0,
which keeps a task from making nested user namespaces (what bwrap's `--disable-userns` does, which
cannot be combined with a map written from outside).

What the kernel counts per user, a worker does not share: each worker slot has an id of its own
(`SANDBOX_HOST_UID` + its index: epoll watches, key quotas, pipe pages), and what it counts against
the namespace's creator, root (inotify instances and watches, POSIX message-queue bytes), is held
to a share of root's limits (`shared_limits`: half of each, split among the workers), so one task
cannot starve the other workers or the runner.

    limits = shared_limits(workers)
    plan = SandboxPlan(..., host_uid=SANDBOX_HOST_UID + i, info_fd=info_w, block_fd=block_r)
    proc = subprocess.Popen([*limits.prlimit_argv(), *bwrap_argv(plan), ...], pass_fds=(info_w, block_r))
    pid = child_pid(info_r)                        # tasks/uplink.py
    map_sandbox_user(pid, block_w, SANDBOX_HOST_UID + i, limits)   # the sandbox goes on
"""

from __future__ import annotations

import functools
import grp
import logging
import os
import pwd
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kimi_agent.errors import EnvironmentStartError
from kimi_agent.tasks.sandbox import SANDBOX_UID, SandboxPlan, bwrap_argv, probe

SANDBOX_HOST_UID = 2_000_000  # no account's id (checked); uid and gid alike
SETUP_TIMEOUT_S = 10.0  # nsenter takes a few ms
SUBORDINATE_ID_FILES = ("/etc/subuid", "/etc/subgid")  # users' ranges for rootless containers (shadow-utils)
log = logging.getLogger("kimi_agent.tasks")


@dataclass(frozen=True)
class SharedLimits:
    """A worker's share of what the kernel counts against root, its namespace's creator.
    inotify_instances, inotify_watches: the namespace's `user.max_inotify_*` (counts).
    msgqueue_bytes: RLIMIT_MSGQUEUE of its bwrap (bytes), which its namespace keeps as its maximum."""

    inotify_instances: int
    inotify_watches: int
    msgqueue_bytes: int

    def prlimit_argv(self) -> list[str]:
        """The prefix that starts bwrap with this message-queue limit."""
        return ["prlimit", f"--msgqueue={self.msgqueue_bytes}", "--"]


def shared_limits(workers: int) -> SharedLimits:
    """Half of root's inotify and message-queue limits here, split among `workers` (with a floor
    that a desktop and a browser need: 8 instances, 1024 watches, 64 KiB)."""

    def read(path: str, default: int) -> int:
        try:
            return int(Path(path).read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            return default

    n = 2 * max(1, workers)
    soft = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]
    msgqueue = 819200 if soft == resource.RLIM_INFINITY else soft
    return SharedLimits(max(8, read("/proc/sys/fs/inotify/max_user_instances", 128) // n),
                        max(1024, read("/proc/sys/fs/inotify/max_user_watches", 8192) // n),
                        max(65536, msgqueue // n))


def sandbox_host_uid() -> int:
    """The id the tasks of worker 0 get on this machine (worker i's: this + i):
    `$KIMI_AGENT_SANDBOX_UID` or `SANDBOX_HOST_UID`."""
    text = os.environ.get("KIMI_AGENT_SANDBOX_UID", "")
    try:
        return int(text) if text else SANDBOX_HOST_UID
    except ValueError:
        return SANDBOX_HOST_UID


@functools.cache
def sandbox_user_problem() -> str | None:
    """None when sandboxed tasks can run as an unprivileged user of their own here (the runner is
    root, the id is no account's, and a probe sandbox runs as it: about 20 ms once per process);
    otherwise why they run as the runner's user."""
    if os.geteuid() != 0:
        return "the runner is not root: its tasks run as its own (unprivileged) user"
    uid = sandbox_host_uid()
    if uid <= 0 or uid >= 2**32 - 1:
        return f"the sandbox's uid {uid} is not a valid unprivileged id"
    if (taken := taken_ids(uid, 1)) is not None:
        return taken
    for tool in ("nsenter", "setpriv", "prlimit"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is not installed"
    if (why := probe()) is not None:
        return f"there is no sandbox: {why}"
    with tempfile.TemporaryDirectory(prefix="kimi-user-probe-") as home:
        os.chown(home, uid, uid)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        plan = SandboxPlan(home=Path(home), host_uid=uid, info_fd=info_w, block_fd=block_r)
        try:
            proc = subprocess.Popen([*bwrap_argv(plan), "/bin/sh", "-c", "id -u; touch /home/user/x"],
                                    pass_fds=(info_w, block_r), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            for fd in (info_r, block_w):
                os.close(fd)
            return f"bwrap could not start: {e}"
        finally:
            os.close(info_w)
            os.close(block_r)
        try:
            from kimi_agent.tasks.uplink import child_pid

            map_sandbox_user(child_pid(info_r), block_w, uid, shared_limits(1))
            out, err = proc.communicate(timeout=SETUP_TIMEOUT_S)
        except (EnvironmentStartError, subprocess.TimeoutExpired) as e:
            return f"a sandbox cannot run as uid {uid} here: {e}"
        finally:
            proc.kill()
            proc.wait(SETUP_TIMEOUT_S)
        made = Path(home) / "x"
        if proc.returncode != 0 or out.strip() != str(SANDBOX_UID).encode() or made.stat().st_uid != uid:
            said = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return f"a sandbox cannot run as uid {uid} here: {said[0][:200]}"
    return None


def shut_folders(folders: tuple[Path, ...] | list[Path]) -> str | None:
    """None when every one of `folders` (what a worker binds read-only: its Python, the project)
    lets other users in (o+rx): the sandbox's own user can read them; otherwise which cannot."""
    shut = []
    for folder in folders:
        try:
            if os.stat(folder).st_mode & 0o005 != 0o005:
                shut.append(str(folder))
        except OSError:
            continue
    if not shut:
        return None
    return f"the sandbox's own user could not read {', '.join(shut[:3])} (not readable by other users)"


def taken_ids(first: int, count: int) -> str | None:
    """None when no account or group has an id in first..first+count-1 (the workers' ids: each is
    both uid and gid) and no user's subordinate ids (`/etc/subuid`, `/etc/subgid`, which rootless
    containers map their users to) overlap them; else which does."""
    last = first + count - 1
    for uid in range(first, last + 1):
        for kind, lookup in (("uid", pwd.getpwuid), ("gid", grp.getgrgid)):
            try:
                name = lookup(uid)[0]
            except KeyError:
                continue
            what = "account" if kind == "uid" else "group"
            return f"{kind} {uid} is the {what} {name!r} of this machine; set KIMI_AGENT_SANDBOX_UID to the first of a free range"
    for path in SUBORDINATE_ID_FILES:
        for owner, start, length in subordinate_ranges(path):
            if start <= last and first < start + length:
                return (f"ids {start}-{start + length - 1} are {owner!r}'s subordinate ids ({path}); set "
                        "KIMI_AGENT_SANDBOX_UID to the first of a free range")
    return None


def subordinate_ranges(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """The (user, first id, count) ranges of a subuid/subgid file (`user:first:count` a line); none
    where it does not exist. Lines that are not of that form are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("could not read %s (the sandbox's ids are not checked against it): %s", path, e)
        return []
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges


def map_sandbox_user(pid: int, block_w: int, host_uid: int, limits: SharedLimits) -> None:
    """Map the user namespace of the sandbox whose first process is `pid` (bwrap blocked on the
    read end of `block_w`): 0 to root, for bwrap's setup only, and `SANDBOX_UID` to `host_uid`;
    forbid nested user namespaces in it and hold its inotify use to `limits`; then let bwrap go on.
    `block_w` is closed here.
    EnvironmentStartError when a step fails (the sandbox then never starts its command)."""
    try:
        mapping = f"0 0 1\n{SANDBOX_UID} {host_uid} 1\n"
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
                    f.write(mapping)
        except OSError as e:
            raise EnvironmentStartError(f"could not map the sandbox's user (pid {pid}): {e.strerror or e}") from e
        nested = ["nsenter", f"--user=/proc/{pid}/ns/user", "-S", "0", "-G", "0", "/bin/sh", "-c",
                  "echo 0 > /proc/sys/user/max_user_namespaces"
                  f" && echo {limits.inotify_instances} > /proc/sys/user/max_inotify_instances"
                  f" && echo {limits.inotify_watches} > /proc/sys/user/max_inotify_watches"]
        try:
            done = subprocess.run(nested, capture_output=True, timeout=SETUP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            raise EnvironmentStartError(f"could not close the sandbox's user namespaces (pid {pid}): {e}") from e
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise EnvironmentStartError(f"could not close the sandbox's user namespaces (pid {pid}): {said[0][:200]}")
        try:
            os.write(block_w, b"1")
        except OSError as e:
            raise EnvironmentStartError(f"the sandbox (pid {pid}) is gone: {e.strerror or e}") from e
    finally:
        os.close(block_w)
