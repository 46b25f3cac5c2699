"""A private X server: Xvfb on a display number it picks itself (`-displayfd`), stopped on close.

Xvfb chooses a free display number and takes its lock file atomically, so any number of
instances, in one process or many, never collide. The process is tracked by `env.process`, which
stops it at exit, on SIGTERM/SIGHUP, and (parent-death signal) when our process is SIGKILLed.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from kimi_agent.env import process
from kimi_agent.errors import EnvironmentStartError, StartTimeoutError


class Xvfb:
    """`Xvfb(width=1920, height=1080, depth=24)`: a started virtual X server; `.display` is ":N"."""

    def __init__(self, *, width: int = 1920, height: int = 1080, depth: int = 24,
                 start_timeout_s: float = 10.0) -> None:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise EnvironmentStartError("Xvfb is not installed (apt-get install xvfb)")
        self.width, self.height, self.depth = width, height, depth
        read_fd, write_fd = os.pipe()
        try:
            self._proc = process.spawn(
                [exe, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x{depth}",
                 "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
        finally:
            os.close(write_fd)
        try:
            number = _read_display_number(read_fd, start_timeout_s)
        finally:
            os.close(read_fd)
        if number is None:
            process.terminate(self._proc, timeout_s=2.0)
            raise StartTimeoutError(
                f"Xvfb did not report a display within {start_timeout_s:g} s (exit code {self._proc.returncode})")
        self.number = number
        self.display = f":{number}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket; it disappears when the server stops."""
        return Path(f"/tmp/.X11-unix/X{self.number}")

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the server (and with it every client still drawing on it). Idempotent."""
        process.terminate(self._proc, timeout_s=timeout_s)

    def __enter__(self) -> Xvfb:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Xvfb(display={self.display!r}, {self.width}x{self.height}x{self.depth}, pid={self.pid})"


def _read_display_number(fd: int, timeout_s: float) -> int | None:
    """Read the "N\\n" Xvfb writes to the -displayfd pipe once it accepts connections."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return None
        chunk = os.read(fd, 64)
        if not chunk:
            return None
        data += chunk
    text = data.strip()
    return int(text) if text.isdigit() else None
