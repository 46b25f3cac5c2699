"""A real terminal for CLI tests: a detached tmux session running one shell command.

`TmuxPane(cmd, cwd=..., env=...)` starts `cmd` in a new session of `width` x `height` cells (its own
tmux server socket, so tests never touch a user's tmux), `screen()` is the pane's text as a user
sees it now (`capture-pane`), `wait_for(text)` polls the screen until `text` shows up (bounded),
`send(keys)` types, and `exit_code()` waits for the command to end. `close()` kills the server.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

HAS_TMUX = shutil.which("tmux") is not None


class TmuxPane:
    """One command in a detached tmux pane, read back with `capture-pane`."""

    def __init__(self, cmd: str, *, cwd: Path, env: dict[str, str], width: int = 120, height: int = 40) -> None:
        self.cwd = cwd
        self.socket = str(cwd / "tmux.sock")
        self.rc_file = cwd / "tmux.rc"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # the shell traps SIGINT (a trap, not an ignore, so the command gets Ctrl-C as usual) and lives on
        # to write the command's exit code; the pane stays for capture-pane afterwards
        script = (f"trap true INT; cd {shlex.quote(str(cwd))} && env -i {exports} {cmd}; "
                  f"echo $? > {shlex.quote(str(self.rc_file))}; sleep 600")
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "sh", "-c", script)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self) -> str:
        """The visible pane, one line per row, trailing blanks stripped."""
        return self._tmux("capture-pane", "-p", "-t", "t").rstrip()

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        """The screen once it contains `text`; AssertionError with the last screen after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            if self.rc_file.exists() and text not in self.screen():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def exit_code(self, timeout_s: float = 120.0) -> int:
        deadline = time.monotonic() + timeout_s
        while not self.rc_file.exists() or not self.rc_file.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not end in {timeout_s:g} s; the screen was:\n{self.screen()}")
            time.sleep(0.1)
        return int(self.rc_file.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)

    def __enter__(self) -> TmuxPane:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
