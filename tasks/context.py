"""What setup steps and getters see of the machine: the `TaskHost` protocol and path mapping.

OSWorld tasks were written for an Ubuntu VM whose user is `/home/user`, with Google Chrome's
profile in `~/.config/google-chrome` and its debugging port behind `socat`. Locally each worker has
its own sandbox home; `HostPaths` maps the VM's paths into it (so the Chromium profile of a worker
is `<home>/.config/google-chrome`, exactly where the task files expect Chrome's), and the host
maps `google-chrome` to the installed Chromium on the worker's own port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

VM_HOME = "/home/user"
CHROME_PROFILE_REL = ".config/google-chrome"


@dataclass(frozen=True, slots=True)
class HostPaths:
    """A worker's sandbox: `home` stands in for the VM's /home/user."""

    home: Path

    @property
    def profile_dir(self) -> Path:
        """Chromium's --user-data-dir (its `Default/` holds Preferences, Bookmarks, History...)."""
        return self.home / CHROME_PROFILE_REL

    @property
    def default_profile(self) -> Path:
        return self.profile_dir / "Default"

    def map_path(self, path: str) -> Path:
        """A VM path (`/home/user/x`, `~/x`, `~/.config/google-chrome/...`) to a local path;
        any other absolute path is used as is, a relative one is taken relative to home."""
        if path == VM_HOME or path.startswith(VM_HOME + "/"):
            return self.home / path[len(VM_HOME):].lstrip("/")
        if path == "~" or path.startswith("~/"):
            return self.home / path[1:].lstrip("/")
        p = Path(path)
        return p if p.is_absolute() else self.home / p

    def vm_path(self, path: str) -> str:
        """The inverse of `map_path` for paths inside home: `<home>/x` -> `/home/user/x` (others
        unchanged). Getters report paths the way the task files write them."""
        home = str(self.home)
        if path == home or path.startswith(home + "/"):
            return VM_HOME + path[len(home):]
        return path

    def map_text(self, text: str) -> str:
        """Rewrite VM paths inside a shell command (`/home/user/...`, `~/...`)."""
        home = str(self.home)
        text = re.sub(r"(?<![\w/.-])/home/user(?=/|\b)", home, text)
        # `~/x` after a separator, `~` alone as a word; never the `=~` / `!~` match operators
        text = re.sub(r"(?<![^\s'\"=:])~(?=/)", home, text)
        return re.sub(r"(?<![^\s'\"])~(?=[\s'\"]|$)", home, text)


@runtime_checkable
class TaskHost(Protocol):
    """One worker's machine as tasks see it. Implemented by `LocalHost` (tasks/host.py)."""

    paths: HostPaths
    client_password: str

    @property
    def debugging_port(self) -> int: ...

    @property
    def cdp_url(self) -> str:
        """http://127.0.0.1:<port> of the running browser; raises if none is running."""
        ...

    def browser_running(self) -> bool: ...

    def start_browser(self, extra_args: list[str]) -> None:
        """Start the worker's Chromium (profile `paths.profile_dir`, port `debugging_port`)."""
        ...

    def stop_browser(self) -> None:
        """Close the worker's Chromium gracefully, so that Preferences are flushed to disk."""
        ...

    def launch(self, argv: list[str] | str, *, shell: bool) -> None:
        """Start a program in the background on the worker's display."""
        ...

    def execute(self, argv: list[str] | str, *, shell: bool, timeout_s: float) -> tuple[int, str, str]:
        """Run a program to completion on the worker's display: (returncode, stdout, stderr)."""
        ...

    def activate_window(self, name: str, *, strict: bool, by_class: bool) -> None: ...

    def close_window(self, name: str, *, strict: bool, by_class: bool) -> None: ...

    def with_cdp(self) -> Any:
        """A Playwright `Browser` connected over CDP to the worker's Chromium (shared, do not close)."""
        ...


@dataclass(slots=True)
class EpisodeEnd:
    """How the episode ended, as the evaluator needs it (`infeasible` and the final-FAIL rule)."""

    status: str  # success | failure | max_steps | error | ...
    steps: int = 0

    @property
    def reported_failure(self) -> bool:
        return self.status == "failure"


@dataclass(slots=True)
class EvalContext:
    host: TaskHost
    episode: EpisodeEnd
    cache_dir: Path
