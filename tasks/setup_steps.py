"""OSWorld setup steps executed on this machine (no VM), registered by their `type`.

Each step has a pydantic model of its parameters (validated when the task loads) and runs
against a `TaskHost`. Host mapping, without editing task files:
- `google-chrome ...` (and `chromium ...`) starts the worker's Chromium on the worker's profile
  and debugging port; `pkill chrome` / `killall chrome` close that browser gracefully (never
  other workers' browsers); `socat` port forwards are no-ops (getters use the worker's port).
- the window "Google Chrome" (activate_window / close_window) is the worker's Chromium window.
- `/home/user/...` and `~/...` are rewritten to the worker's sandbox home; `{CLIENT_PASSWORD}`
  and `{SCREEN_WIDTH}`-style tokens are substituted. `download` and `execute`'s `stdout`/`stderr`
  files are written inside the home only, never through a symlink (`tasks/home_files.py`).
- `sudo apt install X` is satisfied when X is already installed, and refused with the package
  names otherwise; `sudo -S` prefixes are dropped (we run as the current user).

Task files are untrusted: every wait a task sets is bounded when the file loads (`MAX_WAIT_S`,
`MAX_CHECK_INTERVAL_S`, `MAX_HISTORY_AGE_S`), numbers must be real numbers (not `true` or "5"),
commands and paths must not contain a NUL byte, and one command may name at most
`MAX_APT_PACKAGES` apt packages, checked by exact name against one listing of dpkg's installed
packages (made once, and again only when dpkg's status file changes). A bad value makes the file
`invalid`, naming the field.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlparse

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kimi_agent.errors import SetupStepError
from kimi_agent.tasks.context import VM_HOME, TaskHost
from kimi_agent.tasks.home_files import home_relative, write_in_home
from kimi_agent.tasks.metrics import compare_urls
from kimi_agent.tasks.registry import setup_step
from kimi_agent.tasks.spec import TaskFieldError

BROWSER_NAMES = frozenset({"google-chrome", "google-chrome-stable", "chrome", "chromium", "chromium-browser"})
_KILL_COMMANDS = frozenset({"pkill", "killall"})
_BROWSER_OWN_FLAGS = ("--remote-debugging-port", "--user-data-dir", "--remote-debugging-address")


# Bounds on what a task file may ask for. Every real OSWorld file (369 Linux + 49 Windows examples)
# is far inside them: the longest `sleep` is 15 s, no file sets an `execute` timeout or
# `execute_with_verification` waits, the oldest history visit is 12400 s ago, and no command names
# more than one apt package.
MAX_WAIT_S = 600.0  # sleep.seconds, execute.timeout, execute_with_verification.max_wait_time
MAX_CHECK_INTERVAL_S = 60.0  # execute_with_verification.check_interval
MAX_HISTORY_AGE_S = 100 * 365 * 24 * 3600.0  # update_browse_history visit_time_from_now_in_seconds
MAX_APT_PACKAGES = 200  # distinct packages one command's `apt install` segments may name
DPKG_QUERY_TIMEOUT_S = 10.0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_nul(text: str) -> str:
    """A string a program, path or window title can take: no NUL byte (the OS cannot pass one)."""
    if "\0" in text:
        raise ValueError("contains a NUL byte")
    return text


def _command_value(command: list[str] | str) -> list[str] | str:
    """A command with words and no NUL byte (an empty command can only fail when it runs)."""
    words = [command] if isinstance(command, str) else command
    if not command or not "".join(words).strip():
        raise ValueError("is empty")
    for i, word in enumerate(words):
        if "\0" in word:
            raise ValueError("contains a NUL byte" if isinstance(command, str) else f"word {i} contains a NUL byte")
    return command


Text = Annotated[str, AfterValidator(_no_nul)]
Command = Annotated[list[str] | str, AfterValidator(_command_value)]


def _seconds(*, default: float | None = None, ge: float | None = None, gt: float | None = None,
             le: float) -> Any:
    """A number of seconds from the task file: a real number (not `true`, not "5") within bounds;
    required without a `default`."""
    return Field(... if default is None else default, ge=ge, gt=gt, le=le, strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------- helpers

def _substitute(host: TaskHost, text: str, screen: tuple[int, int] = (1920, 1080)) -> str:
    w, h = screen
    for token, value in (("{CLIENT_PASSWORD}", host.client_password), ("{SCREEN_WIDTH_HALF}", str(w // 2)),
                         ("{SCREEN_HEIGHT_HALF}", str(h // 2)), ("{SCREEN_WIDTH}", str(w)),
                         ("{SCREEN_HEIGHT}", str(h))):
        text = text.replace(token, value)
    return host.paths.map_text(text)


def _argv(command: Command, shell: bool) -> list[str] | str:
    if shell:
        return command if isinstance(command, str) else " ".join(command)
    return shlex.split(command) if isinstance(command, str) else list(command)


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _network_reasons(step: str, urls: list[str]) -> list[str]:
    return [f"network: {step} needs {url}" for url in urls
            if urlparse(url).scheme in ("http", "https") and not _is_loopback(url)]


def _browser_argv(argv: list[str]) -> list[str] | None:
    """The extra flags of a browser launch, or None when `argv` does not start a browser."""
    if not argv or Path(argv[0]).name not in BROWSER_NAMES:
        return None
    return [a for a in argv[1:] if not a.startswith(_BROWSER_OWN_FLAGS)]


def _is_browser_kill(argv: list[str]) -> bool:
    if not argv or Path(argv[0]).name not in _KILL_COMMANDS:
        return False
    targets = [a for a in argv[1:] if not a.startswith("-")]
    return bool(targets) and all(("chrom" in t) for t in targets)


# "echo pw | sudo -S apt install -y jq", "sudo apt-get update", ...
_SUDO_PREFIX = re.compile(r"^\s*(?:echo\s+\S+\s*\|\s*)?sudo\s+(?:-\S+\s+)*")
# Possessive quantifiers: the same matches, without the quadratic backtracking of `\S+` then `.*`
# on a long word followed by a newline.
_APT = re.compile(r"^\s*+(?:apt|apt-get)\s++(?P<verb>\S++)(?P<rest>.*+)$")


def _apt_packages(segment: str) -> list[str] | None:
    """Packages an `apt install` segment asks for ([] for `apt update`); None if not apt.
    Raises ValueError when the words cannot be split (an unclosed quote)."""
    m = _APT.match(_SUDO_PREFIX.sub("", segment))
    if m is None:
        return None
    if m["verb"] != "install":
        return []
    return [t for t in shlex.split(m["rest"]) if not t.startswith("-")]


# Checked names are exact: apt(8) has not read package names as patterns since apt 1.9.6 (Ubuntu 20.04),
# and no OSWorld task names a pattern (they install jq, unzip, expect, xsel, sysstat, tinyproxy).
_GLOB_CHARS = frozenset("*?[")
DPKG_STATUS = Path("/var/lib/dpkg/status")
# The last listing of each kind with what it was made from: dpkg's status file (inode, size, mtime)
# and PATH with each folder's mtime. Loading a file of 200 steps reads them once, not 200 times.
# A dpkg-query that timed out counts as "nothing installed" for DPKG_RETRY_S, then is asked again.
DPKG_RETRY_S = 60.0
_dpkg_listing: tuple[object, frozenset[str], float] | None = None
_path_listing: tuple[object, frozenset[str]] | None = None


def _dpkg_installed() -> frozenset[str]:
    """Names (`name`, `name:arch`) of the packages dpkg lists as installed: one `dpkg-query` (at
    most DPKG_QUERY_TIMEOUT_S) per change of dpkg's status file. Empty without dpkg."""
    global _dpkg_listing
    try:
        st = DPKG_STATUS.stat()
        key: object = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if _dpkg_listing is not None and _dpkg_listing[0] == key and time.monotonic() < _dpkg_listing[2]:
        return _dpkg_listing[1]
    retry_at = float("inf")
    try:
        out = subprocess.run(["dpkg-query", "-W", "--showformat=${Status}\t${Package}\t${Package}:${Architecture}"
                              "\t${binary:Package}\n"], capture_output=True, text=True,
                             errors="replace", timeout=DPKG_QUERY_TIMEOUT_S, check=False)
        rows = [line.split("\t") for line in out.stdout.splitlines()]
    except OSError:  # no dpkg here
        rows = []
    except subprocess.TimeoutExpired:
        rows, retry_at = [], time.monotonic() + DPKG_RETRY_S
    names = frozenset(name for row in rows if len(row) == 4 and "ok installed" in row[0] for name in row[1:])
    _dpkg_listing = (key, names, retry_at)
    return names


def _path_programs() -> frozenset[str]:
    """Names of the executable files in the folders of PATH (what `shutil.which` finds), listed
    again only when PATH or one of its folders changes."""
    global _path_listing
    folders = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    key: list[object] = [tuple(folders)]
    for d in folders:
        try:
            key.append(os.stat(d).st_mtime_ns)
        except OSError:
            key.append(None)
    if _path_listing is not None and _path_listing[0] == key:
        return _path_listing[1]
    found: set[str] = set()
    for d in folders:
        try:
            with os.scandir(d) as entries:
                found.update(e.name for e in entries if e.name not in found and _is_program(e))
        except OSError:
            continue  # a missing or unreadable folder holds no program
    _path_listing = (key, frozenset(found))
    return _path_listing[1]


def _is_program(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file() and os.access(entry.path, os.X_OK)
    except OSError:
        return False


def _installed(names: list[str]) -> set[str]:
    """Which of `names` are here: a program of that name on PATH, or a package dpkg lists as
    installed under that exact name (`libc6` or `libc6:amd64`; no patterns). Without dpkg, only
    programs on PATH count. Time: linear in len(names) once both listings are made."""
    programs = _path_programs()
    found = {n for n in names if n in programs}
    rest = [n for n in names if n not in found]
    if rest:
        installed = _dpkg_installed()
        found.update(n for n in rest if n in installed)
    return found


def _split_shell(command: str) -> list[str]:
    """The `&&`-separated segments, with the blanks around each `&&` dropped (linear time; a
    regex split with `\\s*` on both sides is quadratic on a long run of blanks)."""
    parts = command.split("&&")
    last = len(parts) - 1
    trimmed = [(p.lstrip() if i > 0 else p) for i, p in enumerate(parts)]
    trimmed = [(p.rstrip() if i < last else p) for i, p in enumerate(trimmed)]
    return [p for p in trimmed if p.strip()]


def _missing_apt(command: list[str] | str) -> list[str]:
    """The packages the command's `apt install` segments name that are not installed, in order,
    each once. `TaskFieldError` on `command` for a segment that cannot be split into words or
    for more than MAX_APT_PACKAGES distinct names."""
    text = command if isinstance(command, str) else " ".join(command)
    wanted: dict[str, None] = {}
    for seg in _split_shell(text):
        try:
            names = _apt_packages(seg) or []
        except ValueError as e:
            raise TaskFieldError("command", f"apt segment {seg[:200]!r} cannot be split into words ({e})") from None
        wanted.update(dict.fromkeys(names))
        if len(wanted) > MAX_APT_PACKAGES:
            raise TaskFieldError("command", f"names more than {MAX_APT_PACKAGES} apt packages")
    if not wanted:
        return []
    here = _installed(list(wanted))
    return [name for name in wanted if name not in here]


def _apt_reason(name: str) -> str:
    if _GLOB_CHARS.intersection(name):
        return f"apt package {name!r} not installed (a pattern: only exact package names are checked)"
    return f"apt package {name!r} not installed"


def _is_apt(segment: str) -> bool:
    return _APT.match(_SUDO_PREFIX.sub("", segment)) is not None


def _localize_shell(command: str) -> str | None:
    """Drop satisfied apt segments and sudo prefixes; None when nothing is left to run."""
    kept = []
    for seg in _split_shell(command):
        if _is_apt(seg):
            continue  # checked at load time by `_missing_apt`
        kept.append(_SUDO_PREFIX.sub("", seg))
    return " && ".join(kept) if kept else None


# ---------------------------------------------------------------- processes

class LaunchParams(_Params):
    command: Command
    shell: bool = False


def _check_command(p: LaunchParams | ExecuteParams | ExecuteWithVerificationParams) -> list[str]:
    """What the host lacks for the command (apt packages); `TaskFieldError` on `command` (the task
    is invalid) for a command string that does not split into words, found at load time rather
    than mid-task."""
    if not p.shell and isinstance(p.command, str):
        try:
            words = shlex.split(p.command)
        except ValueError as e:
            raise TaskFieldError("command", f"{p.command[:200]!r} cannot be split into words ({e})") from None
        if not words:
            raise TaskFieldError("command", "has no words")
    return [_apt_reason(pkg) for pkg in _missing_apt(p.command)]


@setup_step("launch", params=LaunchParams, check=_check_command)
def launch(host: TaskHost, p: LaunchParams) -> None:
    """Start a program in the background (browsers, socat and pkill are host-mapped)."""
    if p.shell:
        cmd = _localize_shell(_substitute(host, _argv(p.command, True)))  # type: ignore[arg-type]
        if cmd is not None:
            host.launch(cmd, shell=True)
        return
    argv = [_substitute(host, a) for a in _argv(p.command, False)]
    if _run_mapped(host, argv):
        return
    host.launch(argv, shell=False)


def _run_mapped(host: TaskHost, argv: list[str]) -> bool:
    """Handle the host-mapped commands; True when `argv` was one of them."""
    if not argv:
        raise SetupStepError("empty command")
    browser_flags = _browser_argv(argv)
    if browser_flags is not None:
        if not host.browser_running():
            host.start_browser(browser_flags)
        return True
    if Path(argv[0]).name == "socat":
        return True  # the worker's debugging port is reached directly
    if _is_browser_kill(argv):
        host.stop_browser()
        return True
    return False


class UntilSpec(_Params):
    returncode: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class ExecuteParams(_Params):
    command: Command
    shell: bool = False
    stdout: Text = ""
    stderr: Text = ""
    until: UntilSpec | None = None
    timeout: float = _seconds(default=120.0, gt=0, le=MAX_WAIT_S)


def _until_met(u: UntilSpec, rc: int, out: str, err: str) -> bool:
    return ((u.returncode is not None and rc == u.returncode) or (u.stdout is not None and u.stdout in out)
            or (u.stderr is not None and u.stderr in err))


@setup_step("execute", params=ExecuteParams, check=_check_command)
def execute(host: TaskHost, p: ExecuteParams) -> None:
    """Run a command to completion (retried while `until` is unmet, at most 5 times)."""
    if p.shell:
        cmd: list[str] | str | None = _localize_shell(_substitute(host, _argv(p.command, True)))  # type: ignore[arg-type]
        if cmd is None:
            return
    else:
        cmd = [_substitute(host, a) for a in _argv(p.command, False)]
        if _run_mapped(host, cmd):
            return
    for attempt in range(5):
        rc, out, err = host.execute(cmd, shell=p.shell, timeout_s=p.timeout)
        for name, text in (("stdout", out), ("stderr", err)):
            if getattr(p, name):  # a file inside the home, reached through no symlink
                with write_in_home(host.paths.home, f"{name} file", getattr(p, name)) as file:
                    file.write(text.encode("utf-8"))
        if p.until is None or _until_met(p.until, rc, out, err):
            return
        if attempt < 4:
            time.sleep(0.3)


setup_step("command", params=ExecuteParams, check=_check_command)(execute)


class VerificationSpec(_Params):
    window_exists: Text | None = None
    command_success: Command | None = None


class ExecuteWithVerificationParams(_Params):
    command: Command
    verification: VerificationSpec = Field(default_factory=VerificationSpec)
    max_wait_time: float = _seconds(default=10.0, ge=0, le=MAX_WAIT_S)
    check_interval: float = _seconds(default=1.0, gt=0, le=MAX_CHECK_INTERVAL_S)
    shell: bool = False


@setup_step("execute_with_verification", params=ExecuteWithVerificationParams, check=_check_command)
def execute_with_verification(host: TaskHost, p: ExecuteWithVerificationParams) -> None:
    """Start a command, then poll until its window exists / a check command succeeds."""
    launch(host, LaunchParams(command=p.command, shell=p.shell))
    v = p.verification
    deadline = time.monotonic() + p.max_wait_time
    while True:
        ok = True
        if v.window_exists is not None:
            rc, _, _ = host.execute(["xdotool", "search", "--name", v.window_exists], shell=False, timeout_s=5)
            ok = ok and rc == 0
        if v.command_success is not None:
            check = v.command_success
            shell = isinstance(check, str)
            rc, _, _ = host.execute(_substitute(host, check) if isinstance(check, str) else check,
                                    shell=shell, timeout_s=10)
            ok = ok and rc == 0
        if ok:
            return
        if time.monotonic() > deadline:
            raise SetupStepError(f"verification {v.model_dump(exclude_none=True)} not met within "
                                 f"{p.max_wait_time} s after {p.command!r}")
        time.sleep(p.check_interval)


class SleepParams(_Params):
    seconds: float = _seconds(ge=0, le=MAX_WAIT_S)


@setup_step("sleep", params=SleepParams)
def sleep(host: TaskHost, p: SleepParams) -> None:
    time.sleep(p.seconds)


class OpenParams(_Params):
    path: Text = Field(min_length=1)


@setup_step("open", params=OpenParams)
def open_path(host: TaskHost, p: OpenParams) -> None:
    """Open a file or URL: web pages and .html/.pdf files in the worker's browser, anything else
    with xdg-open."""
    target = p.path
    if urlparse(target).scheme in ("http", "https", "file"):
        url = target
    else:
        local = host.paths.map_path(target)
        if not local.exists():
            raise SetupStepError(f"open: {local} does not exist")
        url = local.as_uri()
        if local.suffix.lower() not in (".html", ".htm", ".pdf", ".txt", ".svg", ".png", ".jpg"):
            if shutil.which("xdg-open") is None:
                raise SetupStepError(f"open: no application for {local} (xdg-open is not installed)")
            host.launch(["xdg-open", str(local)], shell=False)
            return
    if not host.browser_running():
        host.start_browser([])
    _cdp_new_tab(host, url)


# ---------------------------------------------------------------- windows

class WindowParams(_Params):
    window_name: Text = Field(min_length=1)
    strict: bool = False
    by_class: bool = False


# OSWorld's VM runs Google Chrome, whose windows are titled "<page> - Google Chrome"; the worker's
# browser is Chromium ("<page> - Chromium"). 27 real chrome tasks activate "Google Chrome".
_WINDOW_NAMES = {"Google Chrome": "Chromium"}


def _window_name(p: WindowParams) -> str:
    return p.window_name if p.by_class else _WINDOW_NAMES.get(p.window_name, p.window_name)


WINDOW_WAIT_S = 10.0  # a program started by the step before may not have mapped its window yet


def _on_window(act: Any, p: WindowParams) -> None:
    """`act(name, strict=, by_class=)` once the window exists, polling for at most WINDOW_WAIT_S."""
    deadline = time.monotonic() + WINDOW_WAIT_S
    while True:
        try:
            act(_window_name(p), strict=p.strict, by_class=p.by_class)
            return
        except SetupStepError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


@setup_step("activate_window", params=WindowParams)
def activate_window(host: TaskHost, p: WindowParams) -> None:
    _on_window(host.activate_window, p)


@setup_step("close_window", params=WindowParams)
def close_window(host: TaskHost, p: WindowParams) -> None:
    _on_window(host.close_window, p)


# ---------------------------------------------------------------- browser tabs (CDP HTTP endpoints)

def _cdp(host: TaskHost, method: str, path: str) -> Any:
    try:
        resp = httpx.request(method, f"{host.cdp_url}{path}", timeout=15.0)
        resp.raise_for_status()
    except httpx.HTTPError as e:
        raise SetupStepError(f"CDP {method} {path} failed: {e}") from e
    return resp.json() if resp.content.strip().startswith((b"{", b"[")) else resp.text


def _cdp_pages(host: TaskHost) -> list[dict[str, Any]]:
    return [t for t in _cdp(host, "GET", "/json/list") if t.get("type") == "page"]


def _cdp_new_tab(host: TaskHost, url: str) -> dict[str, Any]:
    target: dict[str, Any] = _cdp(host, "PUT", f"/json/new?{quote(url, safe=':/?&=%#@+,;~')}")
    return target


class OpenTabsParams(_Params):
    urls_to_open: list[str]


def _check_open_tabs(p: OpenTabsParams) -> list[str]:
    return _network_reasons("chrome_open_tabs", p.urls_to_open)


@setup_step("chrome_open_tabs", params=OpenTabsParams, check=_check_open_tabs)
def chrome_open_tabs(host: TaskHost, p: OpenTabsParams) -> None:
    """Open each URL in a new tab, then close the tab the browser started with (as OSWorld)."""
    if not host.browser_running():
        host.start_browser([])
    before = [t["id"] for t in _cdp_pages(host)]
    for url in p.urls_to_open:
        _cdp_new_tab(host, _substitute(host, url))
    if p.urls_to_open and before:
        _cdp(host, "GET", f"/json/close/{before[0]}")


class CloseTabsParams(_Params):
    urls_to_close: list[str]


@setup_step("chrome_close_tabs", params=CloseTabsParams)
def chrome_close_tabs(host: TaskHost, p: CloseTabsParams) -> None:
    """Close the first open tab matching each URL (OSWorld's URL comparison)."""
    for url in p.urls_to_close:
        for t in _cdp_pages(host):
            if compare_urls(str(t.get("url", "")), url):
                _cdp(host, "GET", f"/json/close/{t['id']}")
                break


# ---------------------------------------------------------------- files

class DownloadFile(_Params):
    url: Text = Field(min_length=1)
    path: Text = Field(min_length=1)


class DownloadParams(_Params):
    files: list[DownloadFile]


def _check_download(p: DownloadParams) -> list[str]:
    """Network reasons; `TaskFieldError` on `files[i].path` for a path outside the home (every
    OSWorld download goes to `/home/user/...` or a path relative to it)."""
    for i, f in enumerate(p.files):
        if home_relative(f.path) is None:
            raise TaskFieldError(f"files[{i}].path", f"{f.path[:200]!r} is outside the home folder ({VM_HOME})")
    return _network_reasons("download", [f.url for f in p.files])


@setup_step("download", params=DownloadParams, check=_check_download)
def download(host: TaskHost, p: DownloadParams) -> None:
    """Put files at paths inside the home (never through a symlink; see `write_in_home`) from local
    paths, file:// URLs or loopback http(s) servers."""
    for i, f in enumerate(p.files):
        scheme = urlparse(f.url).scheme
        if scheme in ("http", "https"):
            if not _is_loopback(f.url):
                raise SetupStepError(f"download: {f.url} is not on this machine and runs are offline")
            try:  # streamed to the file: the worker's RLIMIT_FSIZE and disk limit bound it, not its memory
                with httpx.stream("GET", f.url, timeout=60.0, follow_redirects=True) as resp:
                    resp.raise_for_status()
                    with write_in_home(host.paths.home, f"files[{i}].path", f.path) as out:
                        for chunk in resp.iter_bytes(1 << 20):
                            out.write(chunk)
            except httpx.HTTPError as e:
                raise SetupStepError(f"download {f.url}: {e}") from e
            continue
        src = Path(urlparse(f.url).path) if scheme == "file" else host.paths.map_path(f.url)
        if not src.is_file():
            raise SetupStepError(f"download: {src} does not exist")
        with open(src, "rb") as data, write_in_home(host.paths.home, f"files[{i}].path", f.path) as out:
            shutil.copyfileobj(data, out)


class HistoryItem(_Params):
    url: str
    title: str = ""
    visit_time_from_now_in_seconds: float = _seconds(default=0.0, ge=0, le=MAX_HISTORY_AGE_S)


class BrowseHistoryParams(_Params):
    history: list[HistoryItem]


_CHROME_EPOCH = datetime(1601, 1, 1)
_TYPED_LINK = 805306368  # PAGE_TRANSITION_LINK | CHAIN_START | CHAIN_END, as OSWorld writes


@setup_step("update_browse_history", params=BrowseHistoryParams)
def update_browse_history(host: TaskHost, p: BrowseHistoryParams) -> None:
    """Add visits to Chromium's History database (the browser is closed while it is edited)."""
    was_running = host.browser_running()
    db = host.paths.default_profile / "History"
    if not db.exists() and not was_running:
        host.start_browser([])  # let Chromium create its own schema
    if host.browser_running():
        host.stop_browser()
    if not db.exists():
        raise SetupStepError(f"update_browse_history: Chromium did not create {db}")
    conn = sqlite3.connect(db)
    try:
        for item in p.history:
            when = datetime.now() - timedelta(seconds=item.visit_time_from_now_in_seconds)
            stamp = int((when - _CHROME_EPOCH).total_seconds() * 1_000_000)
            cur = conn.execute("INSERT INTO urls (url, title, visit_count, typed_count, last_visit_time, hidden) "
                               "VALUES (?, ?, 1, 0, ?, 0)", (item.url, item.title, stamp))
            conn.execute("INSERT INTO visits (url, visit_time, from_visit, transition, segment_id, visit_duration) "
                         "VALUES (?, ?, 0, ?, 0, 0)", (cur.lastrowid, stamp, _TYPED_LINK))
        conn.commit()
    except sqlite3.Error as e:
        raise SetupStepError(f"update_browse_history: {db}: {e}") from e
    finally:
        conn.close()
    if was_running:
        host.start_browser([])
