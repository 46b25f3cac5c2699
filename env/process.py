"""Child processes that never outlive us: Xvfb, Chromium, window managers, launched apps.

`spawn` starts a process in its own session (so a terminal's Ctrl+C reaches only us) with the
Linux parent-death signal set to SIGTERM, and registers it for cleanup at interpreter exit and on
SIGTERM/SIGHUP. Guarantees: a normal exit, an exception, KeyboardInterrupt, SIGTERM or SIGHUP
terminate every registered child; SIGKILL of our process is covered by the parent-death signal
(the kernel sends SIGTERM to the child when the thread that spawned it dies, so spawn from a
long-lived thread, normally the main one).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType
from typing import IO, Any

PR_SET_PDEATHSIG = 1  # Linux prctl options (linux/prctl.h)
PR_SET_DUMPABLE = 4
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def prctl(option: int, arg: int) -> None:
    """Linux `prctl(option, arg, 0, 0, 0)` on the calling thread; OSError when the kernel refuses."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {arg}) failed")


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(cmd: Sequence[str], *, env: dict[str, str] | None = None, pass_fds: Sequence[int] = (),
          stdout: int | IO[Any] | None = subprocess.DEVNULL,
          stderr: int | IO[Any] | None = subprocess.DEVNULL,
          stdin: int | IO[Any] | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start `cmd` as a tracked child (new session, parent-death SIGTERM, cleaned up at exit)."""
    _install_handlers()
    proc = subprocess.Popen(list(cmd), env=env, pass_fds=tuple(pass_fds), stdout=stdout, stderr=stderr,
                            stdin=stdin, start_new_session=True, preexec_fn=_set_pdeathsig)
    with _LOCK:
        _LIVE[proc.pid] = proc
    return proc


def terminate(proc: subprocess.Popen[bytes], *, timeout_s: float = 5.0, group: bool = False) -> int | None:
    """SIGTERM `proc` (its whole process group with `group`), wait up to `timeout_s`, then SIGKILL.

    Returns the exit code (None if it could not be reaped). Idempotent.
    """
    try:
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM, group=group)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL, group=group)
                proc.wait(5.0)
        elif group:  # the leader is gone; its group may still have members
            _signal(proc, signal.SIGKILL, group=True)
    finally:
        with _LOCK:
            _LIVE.pop(proc.pid, None)
    return proc.returncode


def kill(proc: subprocess.Popen[bytes], *, group: bool = True) -> None:
    """SIGKILL `proc` (and its process group) and reap it."""
    _signal(proc, signal.SIGKILL, group=group)
    proc.wait(5.0)
    with _LOCK:
        _LIVE.pop(proc.pid, None)


def _signal(proc: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)  # start_new_session makes the pid the group id
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        return


def live_pids() -> list[int]:
    """Pids of the tracked children still registered (for tests and diagnostics)."""
    with _LOCK:
        return [pid for pid, p in _LIVE.items() if p.poll() is None]


def cleanup_all() -> None:
    """Terminate every tracked child, newest first (apps before the X server they draw on)."""
    with _LOCK:
        procs = list(_LIVE.values())[::-1]
    for proc in procs:
        terminate(proc, timeout_s=3.0, group=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    cleanup_all()
    # Re-raise with the default action so the exit status still says "killed by signal".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    """atexit always; SIGTERM/SIGHUP only where nobody else installed a handler (main thread)."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


def proc_stats() -> dict[int, list[str]]:
    """{pid: the fields of `/proc/<pid>/stat` after the command name} of every process this pid
    namespace shows: [0] the state, [1] the parent pid, ... [21] the resident pages (`man 5 proc`).
    A process that ends while it is read is left out."""
    out: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                out[int(entry)] = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return out
