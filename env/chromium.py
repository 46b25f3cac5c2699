"""A headful Chromium process with a debugging port, for the desktop environment and task setup.

`ChromiumProcess(profile_dir, display=":3", window_size=(1920, 1080))` starts the system Chromium
with the flags this machine needs (`CHROME_ARGS`: no sandbox as root, no GPU, no background
networking, `--test-type` to hide the unsupported-flag infobar), a remote debugging port (a free
one unless given) and waits until CDP answers. `stop()` is graceful (SIGTERM, then wait), so
`Default/Preferences` is flushed; `kill()` is not. Downloads (and the save dialog's first folder)
go to `<profile_dir>/Downloads`, never the user's real ~/Downloads: a page can start a download
with no action of the model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from kimi_agent.env import process
from kimi_agent.errors import EnvironmentStartError, StartTimeoutError

CHROME_ARGS: tuple[str, ...] = (
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-quic", "--test-type", "--password-store=basic",
)

_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "chromium", "chromium-browser",
               "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """Path of the system Chromium binary (the real one, not Debian's shell wrapper, if present)."""
    env = os.environ.get("KIMI_AGENT_CHROMIUM")
    for candidate in ((env,) if env else ()) + _CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    raise EnvironmentStartError("Chromium not found (apt-get install chromium, or set KIMI_AGENT_CHROMIUM)")


def _keep_downloads_in_profile(profile_dir: Path) -> Path:
    """Point the profile's download and save-as folders at `<profile_dir>/Downloads` (written into
    `Default/Preferences` before Chromium starts, other preferences kept); that folder."""
    downloads = profile_dir / "Downloads"
    downloads.mkdir(exist_ok=True)
    prefs_path = profile_dir / "Default" / "Preferences"
    prefs_path.parent.mkdir(exist_ok=True)
    try:
        prefs = json.loads(prefs_path.read_text())
    except (OSError, ValueError):
        prefs = {}
    if not isinstance(prefs, dict):
        prefs = {}
    download = prefs.setdefault("download", {})
    download.update({"default_directory": str(downloads), "directory_upgrade": True, "prompt_for_download": False})
    prefs.setdefault("savefile", {})["default_directory"] = str(downloads)
    prefs_path.write_text(json.dumps(prefs))
    return downloads


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromiumProcess:
    """A started Chromium window on an X display, reachable over CDP at `cdp_url`.

    Args:
        profile_dir: the `--user-data-dir` (created if missing); `Default/Preferences` lives there.
        display: X display to draw on (":N"); None uses `$DISPLAY`.
        window_size: outer window size in screen pixels (DIPs).
        window_position: top-left corner of the window on the screen.
        debugging_port: CDP port; None picks a free one.
        url: first page to open (default about:blank).
        extra_args: more command-line flags, appended after `CHROME_ARGS`.
        start_timeout_s: how long to wait for CDP to answer.
    """

    def __init__(self, profile_dir: str | os.PathLike[str], *, display: str | None = None,
                 window_size: tuple[int, int] = (1920, 1080), window_position: tuple[int, int] = (0, 0),
                 debugging_port: int | None = None, url: str = "about:blank",
                 extra_args: Sequence[str] = (), executable: str | None = None,
                 start_timeout_s: float = 20.0) -> None:
        self.profile_dir = Path(profile_dir)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.downloads_dir = _keep_downloads_in_profile(self.profile_dir)
        self.display = display or os.environ.get("DISPLAY")
        if not self.display:
            raise EnvironmentStartError("ChromiumProcess needs an X display (display=... or $DISPLAY)")
        self.window_size = window_size
        self.window_position = window_position
        self.port = debugging_port or free_port()
        self.executable = executable or find_chromium()
        self.args = [
            self.executable, *CHROME_ARGS, f"--user-data-dir={self.profile_dir}",
            f"--remote-debugging-port={self.port}", "--remote-debugging-address=127.0.0.1",
            f"--window-position={window_position[0]},{window_position[1]}",
            f"--window-size={window_size[0]},{window_size[1]}", *extra_args, url,
        ]
        env = {**os.environ, "DISPLAY": self.display}
        self._proc = process.spawn(self.args, env=env)
        self._wait_for_cdp(start_timeout_s)

    @property
    def cdp_url(self) -> str:
        """HTTP endpoint for `playwright.chromium.connect_over_cdp` (e.g. http://127.0.0.1:9222)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def preferences_path(self) -> Path:
        return self.profile_dir / "Default" / "Preferences"

    def version(self) -> dict[str, str]:
        """CDP `/json/version` (Browser, webSocketDebuggerUrl, ...)."""
        response = httpx.get(f"{self.cdp_url}/json/version", timeout=5.0)
        response.raise_for_status()
        data: dict[str, str] = response.json()
        return data

    def tab_ids(self) -> set[str]:
        """Ids of the open tabs (CDP `/json/list`, page targets); empty when CDP does not answer in 2 s."""
        try:
            response = httpx.get(f"{self.cdp_url}/json/list", timeout=2.0)
            response.raise_for_status()
            return {str(t.get("id")) for t in response.json() if isinstance(t, dict) and t.get("type") == "page"}
        except (httpx.HTTPError, ValueError):
            return set()

    def wait_for_new_tab(self, before: set[str], timeout_s: float = 5.0) -> bool:
        """Wait (at most `timeout_s`) until a tab that is not in `before` is open; whether one is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.tab_ids() - before:
                return True
            time.sleep(0.05)
        return False

    def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """Graceful shutdown: SIGTERM and wait (Chromium writes Preferences on the way out).

        Falls back to SIGKILL after `timeout_s`. Returns the exit code. Idempotent.
        """
        return process.terminate(self._proc, timeout_s=timeout_s, group=False)

    def kill(self) -> None:
        """SIGKILL the browser and its helpers (unsaved preference changes are lost)."""
        process.kill(self._proc, group=True)

    def _wait_for_cdp(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EnvironmentStartError(
                    f"Chromium exited with code {self._proc.returncode} before CDP answered: {' '.join(self.args)}")
            try:
                httpx.get(f"{self.cdp_url}/json/version", timeout=1.0).raise_for_status()
                return
            except httpx.HTTPError as exc:
                last_error = exc
                time.sleep(0.05)
        self.kill()
        raise StartTimeoutError(f"Chromium's CDP port {self.port} did not answer within {timeout_s:g} s "
                                    f"(last error: {last_error!r})")

    def __enter__(self) -> ChromiumProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ChromiumProcess(pid={self.pid}, display={self.display!r}, cdp_url={self.cdp_url!r})"


__all__ = ["CHROME_ARGS", "ChromiumProcess", "find_chromium", "free_port"]

