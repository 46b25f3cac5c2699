"""The browser environment: Playwright (sync API) driving the system Chromium.

Screenshots are of the viewport in CSS pixels (`scale="css"`, JPEG, decoded once to PIL), so the
screenshot and Playwright's mouse share one coordinate frame whatever the device scale factor.
A popup becomes the current tab only when it opens during the model's own action; Chromium's
popup blocker stays on and a page holds at most `MAX_PAGES` tabs. Every Playwright call of an
action is bounded (`env.page_hang`): a page that never answers is crashed and replaced by a fresh
tab at the last URL seen, and the action fails with an `ActionError` naming it. `type_text` uses
key events for ASCII and `insert_text` for the rest. An optional URL allowlist (`env.url_allowlist`,
an origin check) is enforced on every request of the context by `env.request_guard`: navigations,
redirects, popups, frames and subresources; what Chromium fetches by itself (speculation-rules
prefetch and prerender, WebRTC STUN/TURN) is sent to a proxy that refuses every connection.
`BrowserEnv.attach(cdp_url)` drives a Chromium someone else started (e.g. `DesktopEnv.start_chromium`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from PIL import Image

from kimi_agent.actions.geometry import Geometry, norm_to_exec
from kimi_agent.actions.keys import to_playwright
from kimi_agent.actions.types import (
    Action,
    AskUser,
    Click,
    CloseTab,
    Done,
    Drag,
    GoBack,
    GoForward,
    Hotkey,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseUp,
    Move,
    Navigate,
    NewTab,
    NormPoint,
    Press,
    Reload,
    Scroll,
    SwitchTab,
    TypeText,
    Wait,
)
from kimi_agent.env import playwright_host
from kimi_agent.env.base import EnvKind, Observation, Outcome
from kimi_agent.env.chromium import CHROME_ARGS, find_chromium
from kimi_agent.env.page_hang import PageHung, bounded, wake
from kimi_agent.env.request_guard import BlockedRequest, RequestGuard
from kimi_agent.env.settle import SettleConfig, SettleResult, settle
from kimi_agent.env.url_allowlist import UrlAllowlist
from kimi_agent.env.xvfb import Xvfb
from kimi_agent.errors import ActionError, EnvironmentClosedError, EnvironmentStartError

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, CDPSession, Page

SCROLL_PX_PER_CLICK = 100  # one wheel click, in CSS pixels (Chromium scrolls about this much)
OBSERVE_TIMEOUT_S = 10.0  # an observation's screenshot; past it, the last good frame is shown again
CDP_SHOT_RETRY_S = 3.0  # at least this long to get the browser's own frame after Playwright's screenshot failed
SETTLE_GRAB_TIMEOUT_S = 1.0  # one settle frame; past it the frame counts as changing
ACTION_TIMEOUT_S = 15.0  # every other Playwright call (input, goto, reload, tabs)
HANG_GRACE_S = 5.0  # a call with its own Playwright timeout is crashed this long after it should have ended
PASSWORD_CHECK_TIMEOUT_S = 5.0  # asking the page what has the focus
RECOVER_TIMEOUT_S = 5.0  # loading the last good URL again in the tab that replaces a hung one
TYPE_S_PER_CHAR = 0.02  # typing's bound grows with the text
MAX_PAGES = 10  # tabs a page may hold open; popups beyond it are closed at once
GOTO_ATTEMPTS = 4  # loads of a start page that a navigation left pending by the last page may interrupt
_GOTO_LIMIT_S = GOTO_ATTEMPTS * (ACTION_TIMEOUT_S + 1.0) + HANG_GRACE_S  # `_goto` retries, each with its timeout
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]+")


class BrowserEnv:
    """A Chromium page (and its tabs) the agent sees and drives through Playwright.

    Args:
        headless: False shows the window, on `display` or on a private Xvfb started here.
        viewport: (width, height) in CSS pixels.
        device_scale_factor: device pixels per CSS pixel (screenshots stay in CSS pixels).
        user_data_dir: a persistent profile (needed for chrome:// pages); None: a fresh context.
        start_url: loaded at start and by `reset()`.
        allowed_urls: origins with optional path prefixes a page may load (`env.url_allowlist`
            forms, e.g. "http://127.0.0.1:8000" or "https://example.com/docs/"); None allows all.
        allow_subresources: with an allowlist, let scripts, images, fetch() and WebSockets reach
            any origin (default: only the allowed origins).
        settle_config: how `execute` waits for the page to stop changing.
        screenshot_quality: JPEG quality of observations (1-100).
        display: X display for a headed browser; None starts a private Xvfb.
    """

    kind: EnvKind = "browser"

    def __init__(self, *, headless: bool = True, viewport: tuple[int, int] | None = (1920, 1080),
                 device_scale_factor: float = 1.0, user_data_dir: str | os.PathLike[str] | None = None,
                 start_url: str = "about:blank", allowed_urls: Sequence[str] | UrlAllowlist | None = None,
                 allow_subresources: bool = False,
                 settle_config: SettleConfig | None = None, screenshot_quality: int = 90,
                 display: str | None = None, executable_path: str | None = None,
                 extra_args: Sequence[str] = (), _attach_cdp_url: str | None = None) -> None:
        self.viewport = viewport
        self.device_scale_factor = device_scale_factor
        self.start_url = start_url
        self.allowlist = (None if allowed_urls is None else allowed_urls if isinstance(allowed_urls, UrlAllowlist)
                          else UrlAllowlist(allowed_urls))
        self._guard = None if self.allowlist is None else RequestGuard(self.allowlist,
                                                                       allow_subresources=allow_subresources)
        self.settle_config = settle_config or SettleConfig()
        self.screenshot_quality = screenshot_quality
        self._xvfb: Xvfb | None = None
        self._browser: Browser | None = None
        self._attached = _attach_cdp_url is not None
        self._cdp: dict[int, CDPSession] = {}
        self._pointer: tuple[float, float] | None = None
        self._last_image: Image.Image | None = None
        self._last_url = start_url
        self._acting = False  # a popup opened while this is set is the model's, and is followed
        self._dead_proxy: socket.socket | None = None
        self._closed = False
        self._pw = playwright_host.acquire()
        try:
            self._context = self._open(headless=headless, user_data_dir=user_data_dir, display=display,
                                       executable_path=executable_path, extra_args=extra_args,
                                       cdp_url=_attach_cdp_url)
            self._context.set_default_timeout(ACTION_TIMEOUT_S * 1000.0)
            self._context.set_default_navigation_timeout(ACTION_TIMEOUT_S * 1000.0)
            self._context.on("page", self._on_new_page)
            if self._guard is not None:
                self._guard.install(self._context)
            pages = [p for p in self._context.pages if not p.is_closed()]
            self._page = pages[0] if pages else self._context.new_page()
            if not self._attached:
                self._open_start_page()
        except BaseException:
            self.close()
            raise
        self._last_geometry = self._geometry()

    @classmethod
    def attach(cls, cdp_url: str, **kwargs: Any) -> BrowserEnv:
        """Drive a running Chromium over CDP (its default context, so chrome:// pages work).

        The viewport is the window's; `close()` disconnects and leaves the browser running.
        """
        return cls(viewport=None, _attach_cdp_url=cdp_url, **kwargs)

    # -- the Environment protocol -------------------------------------------------------------

    @property
    def page(self) -> Page:
        """The current tab."""
        self._check_open()
        if self._page.is_closed():
            self._page = self._fallback_page()
        return self._page

    @property
    def context(self) -> BrowserContext:
        return self._context

    @property
    def blocked_urls(self) -> list[str]:
        """URLs the allowlist refused, oldest first (see `blocked` for the kind and the reason)."""
        return [b.url for b in self.blocked]

    @property
    def blocked(self) -> list[BlockedRequest]:
        return [] if self._guard is None else list(self._guard.blocked)

    def reset(self) -> Observation:
        """Close every tab but one and load `start_url` in it."""
        page = self.page
        for other in list(self._context.pages):
            if other is not page:
                other.close()
        self._goto(page, self.start_url)
        return self.observe()

    def observe(self) -> Observation:
        """A JPEG screenshot of the viewport in CSS pixels, decoded to an RGB PIL image.

        Bounded: when Playwright's screenshot fails within `OBSERVE_TIMEOUT_S` (a page that keeps
        navigating, a busy one), the browser's own frame is taken over CDP (it waits for no load
        event); when that fails too, the last good frame is shown again (its title says so). The
        title comes from the browser process, never the page.
        """
        from playwright.sync_api import Error as PlaywrightError

        page = self.page
        start = time.perf_counter()
        data: bytes | None
        try:
            data = page.screenshot(type="jpeg", quality=self.screenshot_quality, scale="css", caret="initial",
                                   animations="allow", timeout=OBSERVE_TIMEOUT_S * 1000.0)
        except PlaywrightError as exc:
            data = self._retry_cdp_screenshot(page, deadline=max(start + OBSERVE_TIMEOUT_S,
                                                                   time.perf_counter() + CDP_SHOT_RETRY_S))
            if data is None and self._last_image is None:
                raise ActionError(f"the page gave no screenshot within {OBSERVE_TIMEOUT_S:g} s: {exc.message}") from exc
        if data is not None:
            image: Image.Image = Image.open(io.BytesIO(data))
            image.load()
            self._last_image, self._last_url, title = image, page.url, self._title(page)
        else:
            assert self._last_image is not None
            image, title = self._last_image, f"(not answering: the last frame is shown) {self._title(page)}"
        grab_ms = (time.perf_counter() - start) * 1000.0
        self._last_geometry = self._geometry(image.size)
        pointer = None if self._pointer is None else (int(self._pointer[0]), int(self._pointer[1]))
        return Observation(image=image, geometry=self._last_geometry, pointer=pointer, url=page.url,
                           title=title, grab_ms=grab_ms)

    def execute(self, action: Action, *, geometry: Geometry | None = None, settle: bool = True,
                on_settle: Callable[[], None] | None = None) -> Outcome:
        """Run `action`; points are fractions of the screenshot described by `geometry` (default: the
        last observation's). Errors come back in `Outcome.error`, not raised."""
        from playwright.sync_api import Error as PlaywrightError

        page = self.page
        outcome = Outcome(action=action)
        blocked_before = len(self.blocked)
        start = time.perf_counter()
        self._acting = True  # a popup that opens while the action runs or settles is followed
        try:
            self._run(action, _Recorder(outcome, partial(self._bounded, page)), page, geometry or self._last_geometry)
        except PageHung as exc:
            outcome.ok, outcome.error = False, ActionError(f"{action.type} hung: {exc}; {self._replace(exc.page)}")
        except ActionError as exc:
            outcome.ok, outcome.error = False, exc
        except PlaywrightError as exc:
            outcome.ok, outcome.error = False, ActionError(f"{action.type} failed: {exc.message}")
        outcome.exec_ms = (time.perf_counter() - start) * 1000.0
        try:
            if settle and outcome.ok and not isinstance(action, Wait | Done | AskUser):
                if on_settle is not None:
                    on_settle()
                outcome.settle_ms = self.settle().settle_ms
        finally:
            self._acting = False
        blocked = self.blocked[blocked_before:]
        if blocked:  # the allowlist's reason, not Playwright's net::ERR_BLOCKED_BY_CLIENT
            outcome.ok = False
            outcome.error = ActionError(f"{'; '.join(str(b) for b in blocked[:3])} was blocked: the URL "
                                        f"allowlist permits only {self.allowlist}")
        return outcome

    def focused_is_password(self) -> bool | None:
        """Whether the current tab's focused element is an `<input type=password>`, looking into
        open shadow roots and into frames (each frame that has the focus is asked, so cross-origin
        frames count too); None when the page cannot be asked (navigating, closed, not answering
        within `PASSWORD_CHECK_TIMEOUT_S`: such a page is replaced as a hung action's is)."""
        from playwright.sync_api import Error as PlaywrightError

        self._check_open()
        page = self.page
        deadline = time.perf_counter() + PASSWORD_CHECK_TIMEOUT_S
        try:
            for frame in page.frames:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                if frame.is_detached():
                    continue
                if self._bounded(page, "frame.evaluate", frame.evaluate, _FOCUSED_PASSWORD_JS,
                                 frame is not page.main_frame, limit_s=left):
                    return True
        except PageHung as exc:
            self._replace(exc.page)
            return None
        except PlaywrightError:
            return None
        return False

    def settle(self, config: SettleConfig | None = None) -> SettleResult:
        """Wait until the current tab stops changing (tiny JPEG frames compared for equality)."""
        page = self.page
        return settle(lambda: self._settle_frame(page), config or self.settle_config,
                      sleep=lambda s: page.wait_for_timeout(s * 1000.0))

    def close(self) -> None:
        """Close the context and browser (attached: disconnect only), then the private Xvfb."""
        if self._closed:
            return
        self._closed = True
        from playwright.sync_api import Error as PlaywrightError

        try:
            if self._attached and self._browser is not None:
                self._browser.close()  # over CDP this disconnects; the browser keeps running
            else:
                if hasattr(self, "_context"):
                    self._context.close()  # a persistent profile writes its Preferences here
                if self._browser is not None:
                    self._browser.close()
        except PlaywrightError as exc:
            if "closed" not in exc.message.lower():  # already gone is fine; anything else is not
                raise
        finally:
            playwright_host.release()
            if self._dead_proxy is not None:
                self._dead_proxy.close()
            if self._xvfb is not None:
                self._xvfb.stop()

    def interrupt(self) -> None:
        """Wake this env's Playwright event loop from another thread (thread-safe), so an episode
        thread blocked in a Playwright call runs Python again and sees the watchdog's exception."""
        if not self._closed and hasattr(self, "_page"):
            wake(self._page)

    def __enter__(self) -> BrowserEnv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the one mapping from actions to Playwright calls --------------------------------------

    def _run(self, action: Action, call: _Recorder, page: Page, geometry: Geometry) -> None:
        mouse, keyboard = page.mouse, page.keyboard
        view_w, view_h = self._viewport_size(page)

        def at(p: NormPoint) -> tuple[float, float]:
            x, y = norm_to_exec(p, geometry)
            x, y = round(min(max(x, 0.0), view_w - 1.0), 2), round(min(max(y, 0.0), view_h - 1.0), 2)
            call.outcome.exec_points.append((x, y))
            return x, y

        def move(p: NormPoint | None) -> None:
            if p is not None:
                x, y = at(p)
                call("page.mouse.move", mouse.move, x, y)
                self._pointer = (x, y)

        match action:
            case Click(point=point, button=button, clicks=clicks, modifiers=modifiers):
                for key in modifiers:
                    call("page.keyboard.down", keyboard.down, _key(key))
                move(point)
                x, y = self._pointer or (0.0, 0.0)
                call("page.mouse.click", mouse.click, x, y, button=button, click_count=clicks)
                for key in reversed(modifiers):
                    call("page.keyboard.up", keyboard.up, _key(key))
            case Move(point=point):
                move(point)
            case Drag(start=start, end=end, button=button, duration_s=duration_s):
                move(start)
                call("page.mouse.down", mouse.down, button=button)
                x, y = at(end)
                call("page.mouse.move", mouse.move, x, y, steps=max(2, int(duration_s * 30)))
                self._pointer = (x, y)
                call("page.mouse.up", mouse.up, button=button)
            case MouseDown(point=point, button=button):
                move(point)
                call("page.mouse.down", mouse.down, button=button)
            case MouseUp(point=point, button=button):
                move(point)
                call("page.mouse.up", mouse.up, button=button)
            case Scroll(point=point, direction=direction, amount=amount):
                move(point)
                px = float(amount * SCROLL_PX_PER_CLICK)
                dx = {"left": -px, "right": px}.get(direction, 0.0)
                dy = {"up": -px, "down": px}.get(direction, 0.0)
                call("page.mouse.wheel", mouse.wheel, dx, dy)
            case TypeText(text=text):
                for run in _ASCII_RUNS.findall(text):  # key events for ASCII, insertText for the rest
                    limit_s = ACTION_TIMEOUT_S + TYPE_S_PER_CHAR * len(run)
                    if run.isascii():
                        call("page.keyboard.type", keyboard.type, run, limit_s=limit_s)
                    else:
                        call("page.keyboard.insert_text", keyboard.insert_text, run, limit_s=limit_s)
            case Press(key=key, presses=presses):
                for _ in range(presses):
                    call("page.keyboard.press", keyboard.press, _key(key))
            case Hotkey(keys=keys):
                call("page.keyboard.press", keyboard.press, "+".join(_key(k) for k in keys))
            case KeyDown(key=key):
                call("page.keyboard.down", keyboard.down, _key(key))
            case KeyUp(key=key):
                call("page.keyboard.up", keyboard.up, _key(key))
            case Navigate(url=url):
                self._check_allowed(url)
                call("page.goto", lambda u: self._goto(page, u), url, limit_s=_GOTO_LIMIT_S)
            case GoBack():
                if call("page.go_back", page.go_back, wait_until="commit") is None:
                    raise ActionError("go_back: this tab has no previous page")
            case GoForward():
                if call("page.go_forward", page.go_forward, wait_until="commit") is None:
                    raise ActionError("go_forward: this tab has no next page")
            case Reload():
                call("page.reload", page.reload, wait_until="domcontentloaded")
            case NewTab(url=url):
                if url is not None:
                    self._check_allowed(url)
                new = call("context.new_page", self._context.new_page)
                self._page = new
                if url is not None:
                    self._bounded(new, "page.goto", self._goto, new, url, limit_s=_GOTO_LIMIT_S)
                    call.outcome.executed.append(f"page.goto({url!r})")
            case CloseTab():
                call("page.close", page.close)
                self._page = self._fallback_page()
                self._page.bring_to_front()
            case SwitchTab(index=index):
                pages = self._context.pages
                if index >= len(pages):
                    raise ActionError(f"switch_tab: no tab {index}; {len(pages)} tab(s) are open (0-based)")
                self._page = pages[index]
                call(f"context.pages[{index}].bring_to_front", self._page.bring_to_front)
            case Wait(seconds=seconds):
                call("page.wait_for_timeout", page.wait_for_timeout, seconds * 1000.0,
                     limit_s=seconds + ACTION_TIMEOUT_S)
            case Done() | AskUser():
                pass  # the agent loop handles terminal and question actions

    # -- internals ----------------------------------------------------------------------------

    def _open(self, *, headless: bool, user_data_dir: str | os.PathLike[str] | None, display: str | None,
              executable_path: str | None, extra_args: Sequence[str], cdp_url: str | None) -> BrowserContext:
        from playwright.sync_api import Error as PlaywrightError

        try:
            if cdp_url is not None:
                self._browser = self._pw.chromium.connect_over_cdp(cdp_url)
                if not self._browser.contexts:
                    raise EnvironmentStartError(f"the browser at {cdp_url} has no default context")
                return self._browser.contexts[0]
            env = dict(os.environ)
            if not headless:
                if display is None:
                    w, h = self.viewport or (1920, 1080)
                    self._xvfb = Xvfb(width=max(1920, w + 100), height=max(1080, h + 200))
                    display = self._xvfb.display
                env["DISPLAY"] = display
            options: dict[str, Any] = {
                "executable_path": executable_path or find_chromium(), "headless": headless,
                "args": [*CHROME_ARGS, *self._guard_args(), *extra_args], "env": env,
                "ignore_default_args": ["--disable-popup-blocking"]}  # Playwright's default: popups unblocked
            context_options: dict[str, Any] = {"device_scale_factor": self.device_scale_factor}
            if self._guard is not None:
                context_options["service_workers"] = "block"  # their fetches would bypass the guard
            if self.viewport is None:
                context_options["no_viewport"] = True
            else:
                context_options["viewport"] = {"width": self.viewport[0], "height": self.viewport[1]}
            if user_data_dir is not None:
                Path(user_data_dir).mkdir(parents=True, exist_ok=True)
                return self._pw.chromium.launch_persistent_context(str(user_data_dir), **options,
                                                                   **context_options)
            self._browser = self._pw.chromium.launch(**options)
            return self._browser.new_context(**context_options)
        except PlaywrightError as exc:
            raise EnvironmentStartError(f"cannot start or reach Chromium: {exc.message}") from exc

    def _open_start_page(self) -> None:
        """Load `start_url` in the first tab; `EnvironmentStartError` with one line saying why not."""
        from playwright.sync_api import Error as PlaywrightError

        if self._guard is not None and not self._guard.allowed(self.start_url, navigation=True):
            raise EnvironmentStartError(f"the start page {self.start_url} is not on the URL allowlist "
                                        f"({self.allowlist})")
        try:
            self._goto(self._page, self.start_url)
        except PlaywrightError as exc:  # e.g. "Page.goto: net::ERR_CONNECTION_REFUSED at URL"; not the call log
            reason = (exc.message.strip().splitlines() or [type(exc).__name__])[0]
            raise EnvironmentStartError(f"cannot open the start page {self.start_url}: {reason}") from exc

    def _goto(self, page: Page, url: str) -> None:
        """Load `url`, trying again (at most `GOTO_ATTEMPTS` times, a short pause between) while a
        navigation still pending from the last page (the error page of a blocked request, a
        redirect, a refresh) interrupts it; any other error, or the last interruption, is raised."""
        from playwright.sync_api import Error as PlaywrightError

        for attempt in range(1, GOTO_ATTEMPTS + 1):
            try:
                page.goto(url, wait_until="load")
                return
            except PlaywrightError as exc:
                if "interrupted by another navigation" not in exc.message or attempt == GOTO_ATTEMPTS:
                    raise
                page.wait_for_timeout(100.0 * attempt)

    def _guard_args(self) -> list[str]:
        """With an allowlist: what Chromium fetches outside the guard's routes (speculation-rules
        prefetch and prerender, WebRTC's STUN/TURN) goes to a proxy on a port bound here and never
        listened on, so every such connection is refused; loopback is proxied too (`<-loopback>`),
        the allowed origins' host:port pairs are not (e.g. their WebSockets); WebRTC may not use
        UDP outside a proxy, so it has no way out."""
        if self.allowlist is None:
            return []
        self._dead_proxy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead_proxy.bind(("127.0.0.1", 0))
        port = self._dead_proxy.getsockname()[1]
        bypass = ";".join(["<-loopback>", *(f"{e.host}:{e.port}" for e in self.allowlist.entries)])
        return [f"--proxy-server=http://127.0.0.1:{port}", f"--proxy-bypass-list={bypass}",
                "--webrtc-ip-handling-policy=disable_non_proxied_udp"]

    def _on_new_page(self, page: Page) -> None:
        """A popup or new tab: followed when the model's action opened it, closed at once beyond
        `MAX_PAGES` tabs, otherwise left in the background."""
        from playwright.sync_api import Error as PlaywrightError

        if len(self._context.pages) > MAX_PAGES:
            with contextlib.suppress(PlaywrightError):  # it may have closed itself first
                page.close()
            return
        if self._acting:
            self._page = page

    def _bounded(self, page: Page, name: str, fn: Callable[..., Any], *args: Any,
                 limit_s: float | None = None, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` within `limit_s` (default: `ACTION_TIMEOUT_S` + `HANG_GRACE_S`), or
        `PageHung` (the page's script was stopped or its renderer crashed; see `env.page_hang`)."""
        limit = ACTION_TIMEOUT_S + HANG_GRACE_S if limit_s is None else limit_s
        return bounded(page, self._cdp_session(page), name, fn, *args, timeout_s=limit, **kwargs)

    def _replace(self, hung: Page) -> str:
        """Close a crashed tab and open a fresh one at the last URL that gave a screenshot; what
        happened, as a clause for the action's error."""
        from playwright.sync_api import Error as PlaywrightError

        url = self._last_url
        self._cdp.pop(id(hung), None)
        fresh = self._fresh_page()  # before the crashed tab closes: a browser left with no tab may exit
        with contextlib.suppress(PlaywrightError):  # a crashed target may already be gone
            hung.close()
        if self._page is hung or self._page.is_closed():
            self._page = fresh
        if url == "about:blank" or (self._guard is not None and not self._guard.allowed(url, navigation=True)):
            return "its tab was closed and replaced by a blank one"
        try:
            fresh.goto(url, wait_until="commit", timeout=RECOVER_TIMEOUT_S * 1000.0)
        except PlaywrightError as exc:
            return f"its tab was closed; a new tab could not load {url} again ({exc.message.splitlines()[0]})"
        return f"its tab was closed and {url} was loaded again in a new tab"

    def _fresh_page(self) -> Page:
        """A new tab in the context, to replace a hung one; `EnvironmentClosedError` when the browser
        is gone."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            return self._context.new_page()
        except PlaywrightError as exc:
            raise EnvironmentClosedError(f"no new tab could be opened after a hung one was closed "
                                         f"({exc.message.splitlines()[0]})") from None

    def _cdp_session(self, page: Page) -> CDPSession:
        key = id(page)
        if key not in self._cdp:
            self._cdp[key] = self._context.new_cdp_session(page)
        return self._cdp[key]

    def _retry_cdp_screenshot(self, page: Page, *, deadline: float) -> bytes | None:
        """`_cdp_screenshot` tried again every 50 ms until it gives a frame or `deadline` (a
        `time.perf_counter()` value) passes; tried at least once."""
        from playwright.sync_api import Error as PlaywrightError

        while True:
            data = self._cdp_screenshot(page, timeout_s=max(0.5, deadline - time.perf_counter()))
            if data is not None or time.perf_counter() >= deadline:
                return data
            try:
                page.wait_for_timeout(50.0)
            except PlaywrightError:
                time.sleep(0.05)

    def _cdp_screenshot(self, page: Page, *, quality: int | None = None,
                        timeout_s: float = OBSERVE_TIMEOUT_S) -> bytes | None:
        """The viewport as the browser draws it (CDP `Page.captureScreenshot`, which waits for no
        load event or font and runs no script in the page), as JPEG in CSS pixels; None when it
        gives none within `timeout_s`."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            view_w, view_h = self._viewport_size(page)
            dpr = self.device_scale_factor if not self._attached else 1.0
            clip = {"x": 0, "y": 0, "width": view_w, "height": view_h, "scale": 1.0 / dpr}
            shot = self._cdp_session(page).send(
                "Page.captureScreenshot", {"format": "jpeg", "quality": quality or self.screenshot_quality,
                                           "clip": clip, "optimizeForSpeed": True}, timeout=timeout_s * 1000.0)
        except (PlaywrightError, PageHung):
            return None
        return base64.b64decode(shot["data"])

    def _fallback_page(self) -> Page:
        pages = [p for p in self._context.pages if not p.is_closed()]
        return pages[-1] if pages else self._context.new_page()

    def _check_allowed(self, url: str) -> None:
        if self._guard is not None and not self._guard.allowed(url, navigation=True):
            self._guard.blocked.append(BlockedRequest(url, "navigation", "typed URL not on the URL allowlist"))
            raise ActionError(f"navigation to {url} refused: the URL allowlist permits only {self.allowlist}")

    def _viewport_size(self, page: Page) -> tuple[float, float]:
        if page.viewport_size is not None:
            return float(page.viewport_size["width"]), float(page.viewport_size["height"])
        size = self._bounded(page, "page.evaluate", page.evaluate, "() => [innerWidth, innerHeight]")
        return float(size[0]), float(size[1])

    def _geometry(self, shot_size: tuple[int, int] | None = None) -> Geometry:
        page = self.page
        view_w, view_h = self._viewport_size(page)
        dpr = (self.device_scale_factor if not self._attached
               else float(self._bounded(page, "page.evaluate", page.evaluate, "devicePixelRatio")))
        shot_w, shot_h = shot_size or (int(view_w), int(view_h))
        return Geometry(shot_width=shot_w, shot_height=shot_h, exec_width=view_w, exec_height=view_h,
                        device_pixel_ratio=dpr)

    def _settle_frame(self, page: Page) -> bytes:
        """A small JPEG of the viewport, taken over CDP within `SETTLE_GRAB_TIMEOUT_S` (Playwright's
        screenshot would run script in the page as a user gesture, which lets it open a popup);
        while none can be taken (the page is navigating, busy or closing) a frame that differs
        from every other, so settling waits, up to its cap, and never longer than one grab past it."""
        frame = self._cdp_screenshot(page, quality=30, timeout_s=SETTLE_GRAB_TIMEOUT_S)
        return frame if frame is not None else f"no frame at {time.perf_counter()}".encode()

    def _title(self, page: Page) -> str:
        """The tab's title as the browser process knows it (a busy page cannot block this)."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            info = self._cdp_session(page).send("Target.getTargetInfo", timeout=OBSERVE_TIMEOUT_S * 1000.0)["targetInfo"]
        except PlaywrightError:
            self._cdp.pop(id(page), None)
            return ""
        return str(info.get("title", ""))

    def _check_open(self) -> None:
        if self._closed:
            raise EnvironmentClosedError("BrowserEnv is closed")


_FOCUSED_PASSWORD_JS = """(needFocus) => {
  if (needFocus && !document.hasFocus()) return false;
  let el = document.activeElement;
  for (;;) {
    let inner = el?.shadowRoot?.activeElement ?? null;
    if (!inner) { try { inner = el?.contentDocument?.activeElement ?? null; } catch { inner = null; } }
    if (!inner || inner === el) break;
    el = inner;
  }
  return el?.localName === 'input' && String(el.type).toLowerCase() === 'password';
}"""


def _key(key: str) -> str:
    """Playwright key name; letters and digits by their physical key ("KeyQ", "Digit1"), so a held
    Shift turns "q" into "Q" as it would on a keyboard."""
    name = to_playwright(key)
    if len(name) == 1 and name.isascii() and name.isalpha():
        return f"Key{name.upper()}"
    if len(name) == 1 and name.isdigit():
        return f"Digit{name}"
    return name


class _Recorder:
    """Calls a Playwright method through `bound` (a hang bound) and records the call, exactly, in
    `outcome.executed`; `limit_s` overrides the bound's default."""

    def __init__(self, outcome: Outcome, bound: Callable[..., Any]) -> None:
        self.outcome = outcome
        self._bound = bound

    def __call__(self, name: str, fn: Any, *args: Any, limit_s: float | None = None, **kwargs: Any) -> Any:
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        self.outcome.executed.append(f"{name}({', '.join(parts)})")
        if limit_s is not None:
            kwargs["limit_s"] = limit_s
        return self._bound(name, fn, *args, **kwargs)
