"""`LocalHost`: one worker's machine for OSWorld tasks, on top of a `DesktopEnv`.

It owns the worker's sandbox home (standing in for the VM's /home/user, reset before every
task the way OSWorld reverts its VM snapshot), the Chromium profile inside it, a fixed debugging
port, and the browser process started on the desktop's display. Playwright is the process's
shared driver (`env.playwright_host`), connected over CDP only when a getter needs page content.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_agent.env import playwright_host, process
from kimi_agent.env.chromium import ChromiumProcess, free_port
from kimi_agent.errors import EnvironmentStartError, SetupStepError, StartTimeoutError
from kimi_agent.tasks.context import HostPaths
from kimi_agent.tasks.tree_walk import remove_tree

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from kimi_agent.env.desktop import DesktopEnv

log = logging.getLogger("kimi_agent.tasks")
DEFAULT_PASSWORD = "password"  # OSWorld's default client password; only ever substituted into commands



def _remove_tree(path: Path, attempts: int = 5) -> None:
    """`tree_walk.remove_tree(path)` (any depth: a task may nest folders past Python's recursion
    limit), tried again (0.2 s apart, `attempts` in all) while a process of the desktop (openbox
    filling ~/.cache/fontconfig on a slow machine) still adds files to it."""
    for attempt in range(attempts):
        try:
            remove_tree(path)
            return
        except OSError as e:  # a file appeared (ENOTEMPTY) or vanished (ENOENT) under the walk
            if not path.exists():
                return
            if e.errno not in (errno.ENOTEMPTY, errno.ENOENT) or attempt == attempts - 1:
                raise
            time.sleep(0.2)

COMMAND_OUTPUT_LIMIT = 16 << 20  # bytes of a command's stdout (and of its stderr) kept; the rest is cut
STRAY_WAIT_S = 5.0  # how long reset() keeps killing what a task left running
# The sandbox's private scratch folders (tmpfs): emptied between tasks of a sandboxed worker, but
# for what was there when its host was made (its display's socket and lock).
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")  # mqueue: queues outlive their processes


def _proc_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, state)} of every process this pid namespace's /proc shows."""
    return {pid: (int(fields[1]), fields[0]) for pid, fields in process.proc_stats().items()}


def _strays(table: dict[int, tuple[int, str]], launched: set[int] | frozenset[int], *,
            keep_children: bool = True) -> list[int]:
    """Live processes that are not this worker's own: its own are itself, its ancestors (bwrap's
    init) and what it started itself and holds (its direct children: the desktop's Xvfb and window
    manager, the Playwright driver) with their descendants; never a process it launched for a task.
    A task's background processes were reparented to the namespace's init, so none of them is here."""
    me = os.getpid()
    keep = {me}
    pid = me
    while pid in table and table[pid][0] not in keep and table[pid][0] > 0:
        pid = table[pid][0]
        keep.add(pid)
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    todo = [c for c in children.get(me, []) if c not in launched] if keep_children else []
    while todo:
        pid = todo.pop()
        if pid not in keep:
            keep.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(p for p, (_, state) in table.items() if p not in keep and state not in ("Z", "X"))


def kill_strays(launched: set[int] | frozenset[int] = frozenset(), *, keep_children: bool = True) -> list[int]:
    """SIGKILL every process of this (sandboxed) worker's pid namespace that is not its own (see
    `_strays`; with `keep_children` False, every one but itself and its ancestors), again while any
    is left or new ones appear (a loop that forks), for at most STRAY_WAIT_S; returns the pids still
    alive then. Only for a worker alone in its pid namespace: elsewhere these would be the host's."""
    deadline = time.monotonic() + STRAY_WAIT_S
    while strays := _strays(_proc_table(), launched, keep_children=keep_children):
        if time.monotonic() >= deadline:
            return strays
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return []


def _read_output(f: Any) -> str:
    """The first `COMMAND_OUTPUT_LIMIT` bytes a command wrote to the file `f`, as text with universal
    newlines (what `subprocess.run(..., text=True)` gives, as OSWorld's server reads it)."""
    f.seek(0)
    data = f.read(COMMAND_OUTPUT_LIMIT + 1)
    text = data[:COMMAND_OUTPUT_LIMIT].decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    if len(data) > COMMAND_OUTPUT_LIMIT:
        text += f"\n[output cut at {COMMAND_OUTPUT_LIMIT >> 20} MiB]"
    return str(text)


class LocalHost:
    """The `TaskHost` of one worker. `desktop` provides the display; `home` is wiped by `reset()`."""

    def __init__(self, desktop: DesktopEnv, home: str | os.PathLike[str], *, debugging_port: int | None = None,
                 client_password: str = DEFAULT_PASSWORD, own_pid_namespace: bool = False) -> None:
        """own_pid_namespace: this process is a sandboxed worker alone in its pid namespace (with
        bwrap's init), so `reset()` may kill every process it sees that is not its own and empty
        the sandbox's private `SCRATCH_DIRS` of what was not there now."""
        self.desktop = desktop
        self.own_pid_namespace = own_pid_namespace
        self.paths = HostPaths(Path(home).resolve())
        self.client_password = client_password
        self._port = debugging_port or free_port()
        self._browser: ChromiumProcess | None = None
        self._launched: list[subprocess.Popen[bytes]] = []
        self._cdp: Browser | None = None
        self._pw: Any = None
        self._playwright_acquired = False
        self._scratch_kept = {d: set(os.listdir(d)) for d in SCRATCH_DIRS if os.path.isdir(d)} if own_pid_namespace else {}
        self._used = False  # a task ran since this host was made (its first reset() has nothing to clear)

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Fresh state for the next task: no browser, no launched apps, an empty home with a
        Chromium profile whose Default/Preferences exists (task commands edit it with jq)."""
        self.stop_browser()
        launched = {proc.pid for proc in self._launched}
        for proc in self._launched:
            process.terminate(proc, timeout_s=3.0, group=True)
        self._launched.clear()
        if self.own_pid_namespace and self._used:  # a new host comes after clear_sandbox() or at start
            left = kill_strays(launched)
            if left:
                log.warning("processes of the last task outlived SIGKILL: %s", left)
            self._empty_scratch()
        home = self.paths.home
        home.mkdir(parents=True, exist_ok=True)
        for child in list(home.iterdir()):  # the home may be a mount point (/home/user in the sandbox)
            if child.is_dir() and not child.is_symlink():
                _remove_tree(child)
            else:
                child.unlink()
        self.paths.default_profile.mkdir(parents=True)
        (self.paths.home / "Desktop").mkdir()
        (self.paths.default_profile / "Preferences").write_text(json.dumps({}), encoding="utf-8")
        self._used = True

    def clear_sandbox(self) -> None:
        """After `close()` and the desktop's: kill every process of the sandbox but this worker (its
        desktop's too, and whatever a task started through them: a window manager's key binding, a
        debugger attached to Xvfb) and empty the scratch folders; the worker then starts a fresh
        desktop and host. Only for a sandboxed worker (`own_pid_namespace`)."""
        if not self.own_pid_namespace:
            raise RuntimeError("clear_sandbox() is for a worker alone in its pid namespace")
        if left := kill_strays(keep_children=False):
            log.warning("processes of the last task outlived SIGKILL: %s", left)
        self._empty_scratch()

    def _empty_scratch(self) -> None:
        """Remove what the last task left in the sandbox's /tmp, /var/tmp, /dev/shm and /dev/mqueue (each task
        starts from them as OSWorld's from its VM snapshot); what cannot be removed is logged."""
        for folder, kept in self._scratch_kept.items():
            for name in set(os.listdir(folder)) - kept:
                path = Path(folder, name)
                try:
                    if path.is_dir() and not path.is_symlink():
                        _remove_tree(path)
                    else:
                        path.unlink(missing_ok=True)
                except OSError as e:
                    log.warning("could not remove %s, which the last task left: %s", path, e)

    def close(self) -> None:
        self.stop_browser()
        for proc in self._launched:
            process.terminate(proc, timeout_s=3.0, group=True)
        self._launched.clear()
        if self._playwright_acquired:
            self._playwright_acquired = False
            playwright_host.release()

    # -- browser --------------------------------------------------------------------------------

    @property
    def debugging_port(self) -> int:
        return self._port

    @property
    def browser(self) -> ChromiumProcess | None:
        return self._browser if self._browser is not None and self._browser.running else None

    @property
    def cdp_url(self) -> str:
        if self.browser is None:
            raise SetupStepError("the browser is not running (no debugging port to talk to)")
        return self._browser.cdp_url  # type: ignore[union-attr]

    def browser_running(self) -> bool:
        return self.browser is not None

    def start_browser(self, extra_args: list[str]) -> None:
        if self.browser_running():
            return
        self._drop_cdp()
        try:
            self._browser = self.desktop.start_chromium(self.paths.profile_dir, debugging_port=self._port,
                                                        url="about:blank", extra_args=extra_args)
        except StartTimeoutError as e:
            raise SetupStepError(f"cannot start Chromium: {e} (a slow or loaded machine may need a larger "
                                 f"kimi-agent run --start-timeout)") from e
        except EnvironmentStartError as e:
            raise SetupStepError(f"cannot start Chromium: {e}") from e

    def stop_browser(self) -> None:
        """Graceful close, so Chromium writes Preferences, Bookmarks and History: CDP `Browser.close`
        (a normal quit, which also commits pending bookmark writes that SIGTERM can drop), then
        SIGTERM and wait as a fallback."""
        browser, self._browser = self._browser, None
        if browser is not None and browser.running:
            from playwright.sync_api import Error as PlaywrightError

            self._browser = browser
            try:
                self.with_cdp().new_browser_cdp_session().send("Browser.close")
            except PlaywrightError as e:  # the connection may drop before the reply: fine
                log.debug("CDP Browser.close: %s", e)
            self._browser = None
            deadline = time.monotonic() + 10.0
            while browser.running and time.monotonic() < deadline:
                time.sleep(0.05)
        self._drop_cdp()
        if browser is not None:
            browser.stop()

    def crash_browser(self) -> None:
        """SIGKILL the browser (tests use this to simulate a crash)."""
        if self._browser is not None:
            self._browser.kill()

    def with_cdp(self) -> Browser:
        if self._cdp is not None and self._cdp.is_connected():
            return self._cdp
        if self._browser is None or not self._browser.running:
            raise SetupStepError("the browser is not running (no debugging port to talk to)")
        if not self._playwright_acquired:
            self._pw = playwright_host.acquire()
            self._playwright_acquired = True
        self._cdp = self._pw.chromium.connect_over_cdp(self._browser.cdp_url)
        return self._cdp

    def _drop_cdp(self) -> None:
        if self._cdp is not None:
            cdp, self._cdp = self._cdp, None
            if cdp.is_connected():
                cdp.close()

    # -- processes and windows ------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.desktop.display, "HOME": str(self.paths.home)}

    def launch(self, argv: list[str] | str, *, shell: bool) -> None:
        cmd = ["bash", "-c", argv] if isinstance(argv, str) else list(argv)
        if shell and isinstance(argv, list):
            cmd = ["bash", "-c", " ".join(argv)]
        try:  # in the home, as OSWorld's in-VM server (the worker's own folder is `/` in a sandbox)
            proc = process.spawn(["env", "-C", str(self.paths.home), "--", *cmd], env=self._env())
        except OSError as e:
            raise SetupStepError(f"cannot launch {cmd!r}: {e}") from e
        self._launched.append(proc)

    def execute(self, argv: list[str] | str, *, shell: bool, timeout_s: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of a command run in the home, within `timeout_s`. The output is
        decoded as UTF-8 with bad bytes replaced, and each stream keeps its first
        `COMMAND_OUTPUT_LIMIT` bytes (it goes through a temporary file, never all into memory)."""
        cmd: list[str] | str = argv if shell or isinstance(argv, list) else argv.split()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                done = subprocess.run(cmd, shell=shell, env=self._env(), stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=err, timeout=timeout_s, cwd=self.paths.home, check=False,
                                      executable="/bin/bash" if shell else None)
            except subprocess.TimeoutExpired as e:
                raise SetupStepError(f"{argv!r} did not finish within {timeout_s} s") from e
            except (OSError, ValueError) as e:  # ValueError: a NUL byte in the command
                raise SetupStepError(f"cannot run {argv!r}: {e}") from e
            return done.returncode, _read_output(out), _read_output(err)

    def _find_window(self, name: str, *, strict: bool, by_class: bool) -> int:
        pattern = f"^{re.escape(name)}$" if strict else re.escape(name)
        _, out, _ = self.execute(["xdotool", "search", "--onlyvisible", "--class" if by_class else "--name",
                                   pattern], shell=False, timeout_s=10)
        ids = [int(x) for x in out.split()]
        if not ids:
            raise SetupStepError(f"no window {'of class' if by_class else 'titled'} {name!r}")
        return ids[0]

    def activate_window(self, name: str, *, strict: bool, by_class: bool) -> None:
        window = self._find_window(name, strict=strict, by_class=by_class)
        self.execute(["xdotool", "windowactivate", "--sync", str(window)], shell=False, timeout_s=10)

    def close_window(self, name: str, *, strict: bool, by_class: bool) -> None:
        window = self._find_window(name, strict=strict, by_class=by_class)
        if shutil.which("wmctrl"):
            rc, _, _ = self.execute(["wmctrl", "-i", "-c", hex(window)], shell=False, timeout_s=10)
            if rc == 0:
                return
        self.execute(["xdotool", "windowkill", str(window)], shell=False, timeout_s=10)

    def describe(self) -> dict[str, Any]:
        return {"home": str(self.paths.home), "profile_dir": str(self.paths.profile_dir),
                "debugging_port": self._port, "display": self.desktop.display}
