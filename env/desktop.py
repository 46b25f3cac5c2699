"""The X11 desktop environment: an Xvfb of its own (or the user's display), pyautogui, mss.

`DesktopEnv()` starts a private 1920x1080x24 Xvfb plus openbox and stops both on close (and at
exit, on SIGTERM, or when our process is killed; see `env.process`). `DesktopEnv(display=":0")`
drives an existing display and leaves it running. Screenshots are mss grabs decoded once into a
PIL image (no PNG anywhere on the hot path); input goes through pyautogui bound to this display
(`env.pyautogui_x11`), so several desktops can live in one process. Browser actions (navigate,
back, tabs) become Chromium's keyboard shortcuts when a Chromium runs here, and are refused with
an `ActionError` otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import mss
import numpy as np
from mss.exception import ScreenShotError
from PIL import Image
from Xlib.error import DisplayError

from kimi_agent.actions.geometry import Geometry, norm_to_exec_pixel
from kimi_agent.actions.types import (
    Action,
    AskUser,
    Done,
    Navigate,
    NewTab,
    NormPoint,
    TypeText,
    Wait,
)
from kimi_agent.env import process
from kimi_agent.env.base import EnvKind, Observation, Outcome
from kimi_agent.env.chromium import ChromiumProcess
from kimi_agent.env.pyautogui_plan import (
    BROWSER_SHORTCUT_TYPES,
    LESS_THAN,
    action_keys,
    format_call,
    plan_input,
)
from kimi_agent.env.pyautogui_x11 import PyAutoGUI
from kimi_agent.env.settle import SettleConfig, settle
from kimi_agent.env.xvfb import Xvfb
from kimi_agent.errors import ActionError, ConfigError, EnvironmentClosedError, EnvironmentStartError

FOCUS_DELAY_S = 0.3  # after ctrl+l & co. the focused widget needs a moment, or the first keys are lost
SETTLE_SUBSAMPLE = 4  # settle compares every 4th pixel of every 4th row


class DesktopEnv:
    """An X11 desktop the agent sees through mss and drives through pyautogui.

    Args:
        display: None starts a private Xvfb; ":N" drives that existing display (left running).
        width, height, depth: size of the private Xvfb's screen.
        window_manager: start openbox (default: yes on a private Xvfb, no on an existing display).
        browser_shortcuts: map browser actions to Chromium keyboard shortcuts even when no
            Chromium was started through `start_chromium` (e.g. a browser already on screen).
        settle_config: how `execute` waits for the screen to stop changing.
        start_timeout_s: how long the private Xvfb may take to report its display, and each
            Chromium from `start_chromium` its debugging port (raise it on a slow or loaded machine).
    """

    kind: EnvKind = "desktop"

    def __init__(self, *, display: str | None = None, width: int = 1920, height: int = 1080, depth: int = 24,
                 window_manager: bool | None = None, browser_shortcuts: bool = False,
                 settle_config: SettleConfig | None = None, start_timeout_s: float = 20.0) -> None:
        if not start_timeout_s > 0:
            raise ConfigError(f"DesktopEnv start_timeout_s must be positive, not {start_timeout_s!r}")
        self.start_timeout_s = start_timeout_s
        self._xvfb: Xvfb | None = None
        self._children: list[subprocess.Popen[bytes]] = []
        self._chromiums: list[ChromiumProcess] = []
        self._closed = False
        self.settle_config = settle_config or SettleConfig()
        self.browser_shortcuts = browser_shortcuts
        if display is None:
            self._xvfb = Xvfb(width=width, height=height, depth=depth, start_timeout_s=start_timeout_s)
            display = self._xvfb.display
        self.display = display
        try:
            try:
                self._gui = PyAutoGUI(display)
                self._sct = mss.MSS(display=display)
                self._monitor = dict(self._sct.monitors[1])
            except (DisplayError, ScreenShotError) as exc:  # nothing answers there, or we may not connect
                raise EnvironmentStartError(f"cannot use X display {display}: {exc}") from exc
            if window_manager if window_manager is not None else self._xvfb is not None:
                self._start_window_manager()
        except BaseException:
            self.close()
            raise
        self.width, self.height = int(self._monitor["width"]), int(self._monitor["height"])
        self._last_geometry = Geometry.identity(self.width, self.height)

    @classmethod
    def user_display(cls, **kwargs: Any) -> DesktopEnv:
        """Drive the display named by `$DISPLAY` (your own desktop)."""
        display = os.environ.get("DISPLAY")
        if not display:
            raise EnvironmentStartError("$DISPLAY is not set; use DesktopEnv() for a private Xvfb")
        return cls(display=display, **kwargs)

    # -- the Environment protocol -------------------------------------------------------------

    def reset(self) -> Observation:
        """Nothing to restore on a live desktop: returns the current screen."""
        return self.observe()

    def observe(self) -> Observation:
        """Grab the whole screen (mss, raw BGRX) and decode it once into an RGB PIL image."""
        self._check_open()
        start = time.perf_counter()
        shot = self._sct.grab(self._monitor)
        image = Image.frombuffer("RGB", shot.size, shot.raw, "raw", "BGRX", 0, 1)
        grab_ms = (time.perf_counter() - start) * 1000.0
        self._last_geometry = Geometry.identity(self.width, self.height)
        return Observation(image=image, geometry=self._last_geometry, pointer=self._gui.position(),
                           grab_ms=grab_ms)

    def execute(self, action: Action, *, geometry: Geometry | None = None, settle: bool = True,
                on_settle: Callable[[], None] | None = None) -> Outcome:
        """Run `action`; its points are fractions of the screenshot described by `geometry`
        (default: the last observation's). Errors come back in `Outcome.error`, not raised."""
        self._check_open()
        outcome = Outcome(action=action)
        start = time.perf_counter()
        try:
            with self._gui.bound() as pyautogui:
                self._run(action, _Recorder(pyautogui, outcome), geometry or self._last_geometry)
        except ActionError as exc:
            outcome.ok, outcome.error = False, exc
        except (ValueError, TypeError) as exc:  # pyautogui rejects a key or button it does not know
            outcome.ok, outcome.error = False, ActionError(f"{action.type} failed: {exc}")
        outcome.exec_ms = (time.perf_counter() - start) * 1000.0
        if settle and outcome.ok and not isinstance(action, Wait | Done | AskUser):
            if on_settle is not None:
                on_settle()
            outcome.settle_ms = self.settle().settle_ms
        return outcome

    def focused_is_password(self) -> bool | None:
        """None: an X display does not say what kind of widget has the keyboard focus."""
        return None

    def settle(self, config: SettleConfig | None = None) -> Any:
        """Wait until the screen stops changing; returns the `SettleResult`."""
        return settle(self._settle_frame, config or self.settle_config)

    def close(self) -> None:
        """Stop browsers (gracefully), launched apps, the window manager and a private Xvfb."""
        if self._closed:
            return
        self._closed = True
        for chromium in self._chromiums:
            chromium.stop()
        for child in reversed(self._children):
            process.terminate(child, timeout_s=3.0, group=True)
        if hasattr(self, "_sct"):
            self._sct.close()
        if hasattr(self, "_gui"):
            self._gui.close()
        if self._xvfb is not None:
            self._xvfb.stop()

    def __enter__(self) -> DesktopEnv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- apps and windows ---------------------------------------------------------------------

    def launch(self, cmd: str | Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start an application on this display (stopped on close). `cmd` as a list or shell words."""
        self._check_open()
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        proc = process.spawn(argv, env={**os.environ, **(env or {}), "DISPLAY": self.display})
        self._children.append(proc)
        return proc

    def start_chromium(self, profile_dir: str | os.PathLike[str], *, window_size: tuple[int, int] | None = None,
                       window_position: tuple[int, int] = (0, 0), debugging_port: int | None = None,
                       url: str = "about:blank", extra_args: Sequence[str] = ()) -> ChromiumProcess:
        """Start a headful Chromium on this display (full screen by default), reachable over CDP."""
        self._check_open()
        chromium = ChromiumProcess(profile_dir, display=self.display,
                                   window_size=window_size or (self.width, self.height),
                                   window_position=window_position, debugging_port=debugging_port, url=url,
                                   extra_args=extra_args, start_timeout_s=self.start_timeout_s)
        self._chromiums.append(chromium)
        return chromium

    @property
    def chromium(self) -> ChromiumProcess | None:
        """The most recently started Chromium that is still running."""
        alive = [c for c in self._chromiums if c.running]
        return alive[-1] if alive else None

    def find_windows(self, name: str, *, visible_only: bool = True) -> list[int]:
        """X window ids whose title matches the regular expression `name` (xdotool search)."""
        args = ["search", *(["--onlyvisible"] if visible_only else []), "--name", name]
        result = self._xdotool(args, check=False)
        return [int(line) for line in result.stdout.split()]

    def wait_for_window(self, name: str, *, timeout_s: float = 10.0) -> int:
        """Poll until a visible window titled like `name` exists; returns its id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.find_windows(name)
            if found:
                return found[0]
            time.sleep(0.05)
        raise ActionError(f"no window titled like {name!r} appeared within {timeout_s} s")

    def activate_window(self, name: str) -> None:
        """Raise and focus the first visible window whose title matches `name`."""
        window = self.wait_for_window(name, timeout_s=2.0)
        if self._has_window_manager():
            self._xdotool(["windowactivate", "--sync", str(window)])
        else:  # no _NET_ACTIVE_WINDOW without a window manager: raise and focus directly
            self._xdotool(["windowraise", str(window)])
            self._xdotool(["windowfocus", "--sync", str(window)])

    def close_window(self, name: str) -> None:
        """Ask the first window whose title matches `name` to close (WM_DELETE via wmctrl),
        or kill its client when there is no window manager."""
        window = self.wait_for_window(name, timeout_s=2.0)
        if self._has_window_manager() and shutil.which("wmctrl"):
            self._run_tool(["wmctrl", "-i", "-c", hex(window)])
        else:
            self._xdotool(["windowkill", str(window)])

    # -- internals ----------------------------------------------------------------------------

    def _run(self, action: Action, call: _Recorder, geometry: Geometry) -> None:
        """Execute an action: the shared pyautogui plan, plus typing, URLs and waiting done locally."""

        def at(p: NormPoint) -> tuple[int, int]:
            x, y = norm_to_exec_pixel(p, geometry)
            call.outcome.exec_points.append((float(x), float(y)))
            return x, y

        if action.type in BROWSER_SHORTCUT_TYPES:
            self._require_browser(action)
        for key in action_keys(action):
            self._check_key(key)
        planned = plan_input(action, at)
        if planned is not None:
            for name, args, kwargs in planned:
                call(name, *args, **kwargs)
            return
        match action:
            case TypeText(text=text):
                self._type(text, call)
            case Navigate(url=url):
                self._require_browser(action)
                self._open_url(url, call)
            case NewTab(url=url):
                self._require_browser(action)
                chromium = self.chromium if url is not None else None
                tabs = chromium.tab_ids() if chromium is not None else set()
                call("hotkey", "ctrl", "t")
                if url is not None:
                    if chromium is not None:  # a loaded machine can take seconds to open the tab: typing
                        chromium.wait_for_new_tab(tabs)  # earlier would go to the old tab (bounded wait)
                    call.sleep(FOCUS_DELAY_S)
                    self._open_url(url, call)
            case Wait(seconds=seconds):
                call.sleep(seconds)
            case _:
                pass  # the agent loop handles terminal and question actions

    def _type(self, text: str, call: _Recorder) -> None:
        """ASCII through the keymap ('<' as shift+comma); anything else through the clipboard."""
        if not all(c == "<" or self._gui.has_key(c) for c in text):
            self._set_clipboard(text)
            call.record(f"xclip -selection clipboard <<< {text!r}")
            call("hotkey", "ctrl", "v")
            return
        for i, chunk in enumerate(text.split("<")):
            if i > 0:
                call(LESS_THAN[0], *LESS_THAN[1])
            if chunk:
                call("write", chunk)

    def _open_url(self, url: str, call: _Recorder) -> None:
        call("hotkey", "ctrl", "l")
        call.sleep(FOCUS_DELAY_S)
        self._type(url, call)
        call("press", "enter")

    def _check_key(self, key: str) -> None:
        if len(key) > 1 or key == "<":
            if key != "<" and not self._gui.has_key(key):
                raise ActionError(f"key {key!r} has no keycode on display {self.display}")
            return
        if not self._gui.has_key(key):
            raise ActionError(f"key {key!r} has no keycode on display {self.display}; type it with type_text")

    def _require_browser(self, action: Action) -> None:
        if self.browser_shortcuts or self.chromium is not None:
            return
        raise ActionError(f"{action.type} needs a browser, and no Chromium runs on this desktop; "
                          "click the browser's controls instead, or start one with start_chromium()")

    def _set_clipboard(self, text: str) -> None:
        if shutil.which("xclip") is None:
            raise ActionError("typing non-ASCII text needs xclip (apt-get install xclip)")
        # xclip forks a child that owns the selection until someone else copies or the X server
        # stops; with stdout/stderr on a pipe that child would keep our pipe open, so DEVNULL.
        result = subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=text.encode(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "DISPLAY": self.display}, timeout=5.0, check=False)
        if result.returncode != 0:
            raise ActionError(f"xclip failed with exit code {result.returncode}")
        deadline = time.monotonic() + 2.0
        while not self._gui.clipboard_owner():  # the paste must not race xclip taking the selection
            if time.monotonic() > deadline:
                raise ActionError("xclip did not take the clipboard within 2 s")
            time.sleep(0.01)

    def _settle_frame(self) -> np.ndarray:
        shot = self._sct.grab(self._monitor)
        pixels = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
        return pixels[::SETTLE_SUBSAMPLE, ::SETTLE_SUBSAMPLE, :3].copy()

    def _start_window_manager(self) -> None:
        exe = shutil.which("openbox")
        if exe is None:
            raise EnvironmentStartError("window_manager=True needs openbox (apt-get install openbox)")
        self._children.append(process.spawn([exe], env={**os.environ, "DISPLAY": self.display}))
        deadline = time.monotonic() + 5.0
        while not self._has_window_manager():
            if time.monotonic() > deadline:
                raise EnvironmentStartError(f"openbox did not start on {self.display} within 5 s")
            time.sleep(0.02)

    def _has_window_manager(self) -> bool:
        root = self._gui.root_window()
        atom = self._gui.intern_atom("_NET_SUPPORTING_WM_CHECK")
        return root.get_full_property(atom, 0) is not None

    def _xdotool(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        if shutil.which("xdotool") is None:
            raise ActionError("window management needs xdotool (apt-get install xdotool)")
        return self._run_tool(["xdotool", *args], check=check)

    def _run_tool(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10.0, check=False,
                                env={**os.environ, "DISPLAY": self.display})
        if check and result.returncode != 0:
            raise ActionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise EnvironmentClosedError("DesktopEnv is closed")
        if self._xvfb is not None and not self._xvfb.running:
            raise EnvironmentClosedError(f"the Xvfb of this DesktopEnv ({self.display}) died")


class _Recorder:
    """Calls pyautogui and records each call, exactly, as a string in `outcome.executed`."""

    def __init__(self, pyautogui: Any, outcome: Outcome) -> None:
        self._pyautogui = pyautogui
        self.outcome = outcome

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> None:
        fn: Callable[..., Any] = getattr(self._pyautogui, name)
        self.record(format_call(f"pyautogui.{name}", args, kwargs))
        fn(*args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self.record(f"time.sleep({seconds!r})")
        time.sleep(seconds)

    def record(self, text: str) -> None:
        self.outcome.executed.append(text)
