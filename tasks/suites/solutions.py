"""Scripted solutions for the built-in suite and the real Do Not Track task: test doubles, not a model.

`apply_solution(task_id, host)` puts the browser into the solved state directly over CDP
(`chrome.settingsPrivate.setPref`, the settings pages' own WebUI messages, `chrome.bookmarks`),
which is how the evaluator tests check "completing it scores 1" quickly.

`solution_backend(spec, host)` is a `ScriptedBackend` whose replies are computed live from the
browser's state: Do Not Track and the local web tasks are solved with real clicks and typing at
screen coordinates read from the page (CDP bounding boxes + the window's offsets), the other
settings tasks with the direct state change followed by `computer.terminate`. Infeasible tasks
answer `computer.terminate(status='failure')`; unknown tasks do the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import TaskError
from kimi_agent.model_runtime.backends.scripted import ScriptCall, ScriptedBackend
from kimi_agent.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

    from kimi_agent.tasks.host import LocalHost

DNT_URL = "chrome://settings/cookies"
REAL_DNT_ID = "030eeff7-b492-4218-b312-701ec99ee0cc"
#: How long a solution waits for a settings page to load: a bound for a hang, not a speed check (a slow
#: machine, e.g. the one-CPU User-Mode Linux guest of tests/tasks/test_cgroups_v2_kernel.py, takes over 30 s).
PAGE_BOUND_MS = 120_000


def reply(thought: str, action: str, code: str) -> str:
    """A reply in Kimi-VL's agent format."""
    return f"## Thought\n{thought}\n\n## Action:\n{action}\n\n## Code:\n```python\n{code}\n```\n"


def terminate(status: str = "success") -> str:
    return reply("The task is finished." if status == "success" else "This cannot be done.",
                 f"Report {status}.", f"computer.terminate(status={status!r})")


def navigate(url: str) -> str:
    return reply(f"I need to open {url}.", f"Open {url} from the address bar.",
                 f"pyautogui.hotkey('ctrl', 'l')\npyautogui.write({url!r})\npyautogui.press('enter')")


# -- reading the live browser ---------------------------------------------------------------------

def _pages(host: LocalHost) -> list[Page]:
    return [p for ctx in host.with_cdp().contexts for p in ctx.pages]


def _live_url(page: Page) -> str:
    """The page's current URL read from the page itself (Playwright's `page.url` is only updated
    while Playwright pumps events, so it can lag behind navigations made with the keyboard).

    A page that is navigating has no execution context for a moment; then wait for the load and
    ask again, and fall back to Playwright's last known URL.
    """
    from playwright.sync_api import Error as PlaywrightError

    for _ in range(3):
        try:
            url: str = page.evaluate("() => location.href")
            return url
        except PlaywrightError as e:
            if "context was destroyed" not in e.message and "navigat" not in e.message:
                raise
            page.wait_for_timeout(200)
    return page.url


def page_with_url(host: LocalHost, prefix: str) -> Page | None:
    return next((p for p in _pages(host) if _live_url(p).startswith(prefix)), None)


def _settings_page(host: LocalHost, url: str) -> Page:
    """A tab on a chrome://settings page (opened over CDP in the browser's default context)."""
    pages = _pages(host)
    page = pages[0] if pages else host.with_cdp().contexts[0].new_page()
    page.goto(url, timeout=PAGE_BOUND_MS)
    page.wait_for_load_state(timeout=PAGE_BOUND_MS)
    return page


def screen_point(page: Page, target: Locator, screen: tuple[int, int]) -> tuple[float, float]:
    """The centre of `target` as fractions of the screen (CSS box + the window's chrome offsets)."""
    box = target.bounding_box()
    if box is None:
        raise TaskError("the element to click is not visible")
    dx, dy, dpr = page.evaluate("() => [window.screenX + window.outerWidth - window.innerWidth,"
                                " window.screenY + window.outerHeight - window.innerHeight, window.devicePixelRatio]")
    x = (dx + box["x"] + box["width"] / 2) * dpr
    y = (dy + box["y"] + box["height"] / 2) * dpr
    return round(x / screen[0], 4), round(y / screen[1], 4)


def click(page: Page, target: Locator, screen: tuple[int, int], what: str) -> str:
    x, y = screen_point(page, target, screen)
    return reply(f"I can see {what}.", f"Click {what}.", f"pyautogui.click(x={x}, y={y})")


def get_pref(page: Page, name: str) -> Any:
    return page.evaluate("n => new Promise(r => chrome.settingsPrivate.getPref(n, p => r(p.value)))", name)


def set_pref(page: Page, name: str, value: Any) -> None:
    ok = page.evaluate("([n, v]) => new Promise(r => chrome.settingsPrivate.setPref(n, v, '', r))", [name, value])
    if ok is not True:
        raise TaskError(f"chrome.settingsPrivate.setPref({name!r}) was refused")


# -- direct solutions (CDP) -------------------------------------------------------------------------

def _pref(name: str, value: Any, url: str = "chrome://settings") -> Callable[[LocalHost, str], None]:
    def solve(host: LocalHost, base: str) -> None:
        set_pref(_settings_page(host, url), name, value)
    return solve


def _bing(host: LocalHost, base: str) -> None:
    page = _settings_page(host, "chrome://settings/searchEngines")
    entry = page.locator("settings-search-engine-entry", has_text="Bing").first
    entry.locator("#makeDefault").evaluate("e => e.click()")
    page.wait_for_timeout(200)


def _profile_name(name: str) -> Callable[[LocalHost, str], None]:
    def solve(host: LocalHost, base: str) -> None:
        page = _settings_page(host, "chrome://settings/manageProfile")
        page.evaluate("n => chrome.send('setProfileName', [n])", name)
        page.wait_for_timeout(200)
    return solve


def _bookmark(host: LocalHost, base: str) -> None:
    page = _settings_page(host, "chrome://bookmarks")
    page.evaluate("([t, u]) => new Promise(r => chrome.bookmarks.create({parentId: '1', title: t, url: u}, r))",
                  ["Rotary embeddings, explained", f"{base}/article.html"])


def _web_form(host: LocalHost, base: str) -> None:
    page = page_with_url(host, f"{base}/form.html")
    if page is None:
        raise TaskError("the form page is not open")
    page.fill("#name", "Ada Lovelace")
    page.fill("#email", "ada@example.org")
    page.click("#submit")
    page.wait_for_url("**/thanks.html*")


def _web_navigation(host: LocalHost, base: str) -> None:
    page = page_with_url(host, f"{base}/index.html")
    if page is None:
        raise TaskError("the shop's home page is not open")
    page.click("#pricing")
    page.wait_for_url("**/pricing.html")


DIRECT: dict[str, Callable[[LocalHost, str], None]] = {
    "suite-do-not-track": _pref("enable_do_not_track", True, DNT_URL),
    REAL_DNT_ID: _pref("enable_do_not_track", True, DNT_URL),
    "suite-safe-browsing": _pref("safebrowsing.enabled", True, "chrome://settings/security"),
    "suite-startup-page": _pref("session.restore_on_startup", 5, "chrome://settings/onStartup"),
    "suite-search-engine": _bing,
    "suite-font-size": _pref("webkit.webprefs.default_font_size", 24, "chrome://settings/fonts"),
    "suite-profile-name": _profile_name("Kimi"),
    "2ae9ba84-3a0d-4d4c-8338-3a1478dc5fe3": _profile_name("Thomas"),
    "suite-bookmark": _bookmark,
    "3299584d-8f11-4457-bf4c-ce98f7600250": _pref("session.restore_on_startup", 5, "chrome://settings/onStartup"),
    "9656a811-9b5b-4ddf-99c7-5117bcef0626": _pref("safebrowsing.enabled", True, "chrome://settings/security"),
    "af630914-714e-4a24-a7bb-f9af687d3b91": _pref("webkit.webprefs.default_font_size", 24, "chrome://settings/fonts"),
    "bb5e4c0d-f964-439c-97b6-bdb9747de3f4": _bing,
    "suite-web-form": _web_form,
    "suite-web-navigation": _web_navigation,
}


def apply_solution(task_id: str, host: LocalHost, *, local_server: str = "") -> None:
    """Put the browser into the solved state of `task_id` directly (raises TaskError if unknown)."""
    try:
        solve = DIRECT[task_id]
    except KeyError:
        raise TaskError(f"no scripted solution for task {task_id!r}") from None
    solve(host, local_server)


# -- GUI episodes ---------------------------------------------------------------------------------

def _dnt_step(host: LocalHost, call: ScriptCall) -> str:
    screen = call.screenshot.size
    page = page_with_url(host, DNT_URL)
    if page is None:
        return navigate(DNT_URL)
    page.wait_for_load_state()
    confirm = page.get_by_role("button", name="Confirm")
    if confirm.count() and confirm.first.is_visible():
        return click(page, confirm.first, screen, "the Confirm button of the Do Not Track dialog")
    if get_pref(page, "enable_do_not_track") is True:
        return terminate("success")
    toggle = page.locator("#doNotTrack").first
    toggle.scroll_into_view_if_needed()
    return click(page, toggle, screen, 'the "Send a Do Not Track request" toggle')


def _navigation_step(host: LocalHost, call: ScriptCall, base: str) -> str:
    if page_with_url(host, f"{base}/pricing.html") is not None:
        return terminate("success")
    page = page_with_url(host, f"{base}/index.html")
    if page is None:
        return navigate(f"{base}/index.html")
    return click(page, page.locator("#pricing"), call.screenshot.size, "the Pricing link")


def _form_step(host: LocalHost, call: ScriptCall, base: str) -> str:
    if page_with_url(host, f"{base}/thanks.html") is not None:
        return terminate("success")
    page = page_with_url(host, f"{base}/form.html")
    if page is None:
        return navigate(f"{base}/form.html")
    screen = call.screenshot.size
    for selector, value in (("#name", "Ada Lovelace"), ("#email", "ada@example.org")):
        field = page.locator(selector)
        if field.input_value() != value:
            x, y = screen_point(page, field, screen)
            return reply(f"The {selector[1:]} field is not filled in yet.", f"Fill in the {selector[1:]} field.",
                         f"pyautogui.click(x={x}, y={y})\npyautogui.hotkey('ctrl', 'a')\n"
                         f"pyautogui.write({json.dumps(value)})")
    return click(page, page.locator("#submit"), screen, "the Sign up button")


def solution_backend(spec: TaskSpec, host: LocalHost, local_server: str = "") -> ScriptedBackend:
    """A scripted backend that solves `spec` live (see the module docstring)."""
    task_id = spec.id

    def step(call: ScriptCall) -> str:
        if spec.evaluator.infeasible or (task_id not in DIRECT):
            return terminate("failure")
        if task_id in ("suite-do-not-track", REAL_DNT_ID):
            return _dnt_step(host, call)
        if task_id == "suite-web-navigation":
            return _navigation_step(host, call, local_server)
        if task_id == "suite-web-form":
            return _form_step(host, call, local_server)
        if call.index == 0:
            apply_solution(task_id, host, local_server=local_server)
        return terminate("success")

    return ScriptedBackend(step, name="solutions")


def do_nothing_backend(spec: TaskSpec, host: LocalHost, local_server: str = "") -> ScriptedBackend:
    """Ends every episode at once with a success report (the "do nothing" baseline)."""
    return ScriptedBackend(lambda call: terminate("success"), name="do-nothing")


def give_up_backend(spec: TaskSpec, host: LocalHost, local_server: str = "") -> ScriptedBackend:
    """Ends every episode at once with a failure report."""
    return ScriptedBackend(lambda call: terminate("failure"), name="give-up")


class CrashingBackend:
    """Test double: SIGKILLs the worker's browser during the episodes of `crash_ids` (to exercise
    the runner's crash handling) and solves every other task like `solution_backend`."""

    def __init__(self, crash_ids: tuple[str, ...]) -> None:
        self.crash_ids = crash_ids

    def __call__(self, spec: TaskSpec, host: LocalHost, local_server: str = "") -> ScriptedBackend:
        if spec.id not in self.crash_ids:
            return solution_backend(spec, host, local_server)

        def step(call: ScriptCall) -> str:
            host.crash_browser()
            return terminate("success")

        return ScriptedBackend(step)
