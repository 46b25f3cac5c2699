"""Getters that load a page of their own in the worker's browser (OSWorld's `getters/chrome.py`,
same names and config keys): `page_info`, `pdf_from_url`, `chrome_appearance_mode_ui` and
`gotoRecreationPage_and_get_html_content`.

Each opens a background tab (CDP `Target.createTarget` with `background: true`) and closes it
when done, so the tab the agent left active stays active for the getters after it (OSWorld opens a
foreground tab; closing it activates a neighbour). Every wait is bounded; a page that cannot be
loaded raises `EvaluationError` (the task is then an `error`, not a wrong answer), where OSWorld
returns placeholder values that score 0. Tasks whose getter needs an internet URL load as
`unsupported` ("network: ...") unless the run allows the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import EvaluationError, SetupStepError
from kimi_agent.tasks.context import EvalContext
from kimi_agent.tasks.getters import cache_path, preferences
from kimi_agent.tasks.registry import getter
from kimi_agent.tasks.setup_steps import _network_reasons
from kimi_agent.tasks.spec import GetterConfig, TaskFieldError

if TYPE_CHECKING:
    from playwright.sync_api import Page

log = logging.getLogger("kimi_agent.tasks")

NAVIGATION_TIMEOUT_MS = 60_000  # OSWorld's timeout for each navigation
SETTLE_TIMEOUT_MS = 10_000  # then at most this long for the network to go idle (pages that poll never do)
ELEMENT_TIMEOUT_MS = 30_000  # an element a scripted step needs
OPTIONAL_CLICK_TIMEOUT_MS = 10_000  # an element a step clicks only when it is there
NEW_TAB_TIMEOUT_MS = 10_000

RECREATION_URL = "https://www.recreation.gov/"
RECREATION_QUERY = "Diamond"  # task b4f95342: "Find the Next Available dates for Diamond."
EVALUATION_FAILED = "__EVALUATION_FAILED__"  # check_direct_json_object scores an expected value like this 0

# browser.theme.color_scheme(2): 0 follows the device, 1 light, 2 dark (Chromium's pref values).
_COLOR_SCHEMES = {0: "system", 1: "light", 2: "dark"}


@contextmanager
def background_tab(ctx: EvalContext) -> Iterator[Page]:
    """A new tab of the worker's browser that does not take the focus; closed on exit. Starts the
    browser on the worker's profile when the agent closed it (as OSWorld does)."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        if not ctx.host.browser_running():
            ctx.host.start_browser([])
        browser = ctx.host.with_cdp()
        if not browser.contexts:
            raise EvaluationError("the browser has no default context to open a tab in")
        session = browser.new_browser_cdp_session()
        try:
            with browser.contexts[0].expect_page(timeout=NEW_TAB_TIMEOUT_MS) as info:
                session.send("Target.createTarget", {"url": "about:blank", "background": True})
            page = info.value
        finally:
            session.detach()
    except (PlaywrightError, SetupStepError) as e:
        raise EvaluationError(f"cannot open a tab in the worker's browser: {e}") from e
    try:
        yield page
    finally:
        if not page.is_closed():
            try:
                page.close()
            except PlaywrightError as e:  # the browser went away meanwhile: nothing left to close
                log.debug("closing the getter's tab: %s", e)


def _load(page: Page, url: str) -> None:
    """Go to `url` and wait for its load event, then (bounded) for the network to go idle."""
    page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    _settle(page)


def _settle(page: Page) -> None:
    """Wait (at most SETTLE_TIMEOUT_MS) for the page's network to go idle."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_load_state("networkidle", timeout=SETTLE_TIMEOUT_MS)
    except PlaywrightTimeout:
        log.debug("%s: network not idle after %d ms; reading it as it is", page.url, SETTLE_TIMEOUT_MS)


def _url_reasons(name: str, key: str, default: str | None = None) -> Callable[[GetterConfig], list[str]]:
    """A load-time check: "network: ..." when the getter's URL (config `key`) is on the internet."""
    def check(config: GetterConfig) -> list[str]:
        url = config.params.get(key, default)
        if not isinstance(url, str) or not url.strip() or "\0" in url:
            kind = "null" if url is None else "an empty string" if url == "" else type(url).__name__
            raise TaskFieldError(key, f"must be a URL (a non-empty string without NUL bytes), not {kind}")
        return _network_reasons(f"getter {name!r}", [url])
    return check


# ---------------------------------------------------------------- page_info

@getter("page_info", check=_url_reasons("page_info", "url"))
def get_page_info(ctx: EvalContext, config: GetterConfig) -> dict[str, str]:
    """`{title, url, content}` of `url` loaded in a new tab of the worker's browser (its cookies
    and session: the Steam cart task reads the agent's cart this way). `url` is the final URL
    after redirects; content is the page's HTML."""
    from playwright.sync_api import Error as PlaywrightError

    url = str(config.params["url"])
    with background_tab(ctx) as page:
        try:
            _load(page, url)
            return {"title": page.title(), "url": page.url, "content": page.content()}
        except PlaywrightError as e:
            raise EvaluationError(f"page_info: cannot load {url}: {e}") from e


# ---------------------------------------------------------------- pdf_from_url

@getter("pdf_from_url", check=_url_reasons("pdf_from_url", "path"))
def get_pdf_from_url(ctx: EvalContext, config: GetterConfig) -> str:
    """The page at `path` printed to PDF by the worker's browser (Playwright's `page.pdf()`
    defaults, as OSWorld) into the evaluation cache as `dest`; returns the PDF's local path."""
    from playwright.sync_api import Error as PlaywrightError

    url = str(config.params["path"])
    out = cache_path(ctx, str(config.params["dest"]))
    with background_tab(ctx) as page:
        try:
            _load(page, url)
            page.pdf(path=out)
        except PlaywrightError as e:
            raise EvaluationError(f"pdf_from_url: cannot print {url} to PDF: {e}") from e
    return str(out)


# ---------------------------------------------------------------- chrome_appearance_mode_ui

def color_scheme_name(value: Any) -> str | None:
    """"system" / "light" / "dark" for a color_scheme pref value (number or name), else None."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("system", "default", "device", "0"):
            return "system"
        return {"light": "light", "1": "light", "dark": "dark", "2": "dark"}.get(v)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _COLOR_SCHEMES.get(int(value))
    return None


def mode_from_preferences(prefs: dict[str, Any]) -> str:
    """The appearance mode saved in Preferences: `browser.theme.color_scheme2` (current Chrome),
    else `color_scheme` (older), else "system" (the default). Unlike OSWorld, the GTK/classic theme
    flag `extensions.theme.system_theme` does not count: it says nothing about light or dark."""
    theme = prefs.get("browser", {}).get("theme", {})
    theme = theme if isinstance(theme, dict) else {}
    for key in ("color_scheme2", "color_scheme"):
        if key in theme:
            return color_scheme_name(theme[key]) or "system"
    return "system"


@getter("chrome_appearance_mode_ui")
def get_chrome_appearance_mode_ui(ctx: EvalContext, config: GetterConfig) -> str:
    """"light", "dark" or "system": the Mode chosen on chrome://settings/appearance (the value of
    its `#colorSchemeModeSelect`, read live from the settings page); from Default/Preferences when
    the browser is not running (as OSWorld falls back to the file)."""
    from playwright.sync_api import Error as PlaywrightError

    if not ctx.host.browser_running():
        return mode_from_preferences(preferences(ctx))
    with background_tab(ctx) as page:
        try:
            page.goto("chrome://settings/appearance", wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
            select = page.locator("#colorSchemeModeSelect")  # CSS locators pierce the settings' shadow DOM
            select.wait_for(state="attached", timeout=ELEMENT_TIMEOUT_MS)
            value = select.input_value(timeout=ELEMENT_TIMEOUT_MS)
        except PlaywrightError as e:
            raise EvaluationError(f"chrome_appearance_mode_ui: cannot read the Mode on the settings page: {e}") from e
    mode = color_scheme_name(value)
    if mode is None:
        raise EvaluationError(f"chrome_appearance_mode_ui: unknown Mode value {value!r} on the settings page")
    return mode


# ---------------------------------------------------------------- gotoRecreationPage_and_get_html_content

def _class_text(page: Page, class_name: str, order: int | None) -> str:
    """Text of the `order`-th element of class `class_name` (the first without `order`), stripped;
    `EVALUATION_FAILED` when there is no such element."""
    texts = page.locator("." + class_name).all_text_contents()
    index = 0 if order is None else order
    return texts[index].strip() if 0 <= index < len(texts) else EVALUATION_FAILED


def _click_if_present(page: Page, selector: str) -> bool:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(selector).first.click(timeout=OPTIONAL_CLICK_TIMEOUT_MS)
    except PlaywrightTimeout:
        return False
    return True


@getter("gotoRecreationPage_and_get_html_content",
        check=_url_reasons("gotoRecreationPage_and_get_html_content", "url", RECREATION_URL))
def get_goto_recreation_page_and_get_html_content(ctx: EvalContext, config: GetterConfig) -> dict[str, Any]:
    """Replays the gold path on recreation.gov and reads the answer there: search "Diamond", open
    the first result (a new tab), press "Next Available" when the page offers it, then return
    `{"expected": {class: text}}` with the text of the `order`-th element of class `class`
    (selector "class"). `url` (not in OSWorld's files) replaces the site's address, for tests."""
    from playwright.sync_api import Error as PlaywrightError

    p = config.params
    if p.get("selector") != "class":
        raise EvaluationError(f"gotoRecreationPage_and_get_html_content: selector {p.get('selector')!r} "
                              "is not supported (only 'class')")
    class_name = str(p["class"])
    order = int(p["order"]) if "order" in p else None
    url = str(p.get("url", RECREATION_URL))
    with background_tab(ctx) as page:
        try:
            _load(page, url)
            page.fill("input#hero-search-input", RECREATION_QUERY, timeout=ELEMENT_TIMEOUT_MS)
            page.click("button.nav-search-button", timeout=ELEMENT_TIMEOUT_MS)
            result = page.locator(".search-result-highlight--success").first
            result.wait_for(state="visible", timeout=NAVIGATION_TIMEOUT_MS)
            with page.expect_popup(timeout=NAVIGATION_TIMEOUT_MS) as popup:
                result.click(timeout=ELEMENT_TIMEOUT_MS)
            place = popup.value
            try:
                place.set_default_timeout(NAVIGATION_TIMEOUT_MS)
                place.wait_for_load_state("load", timeout=NAVIGATION_TIMEOUT_MS)
                _settle(place)
                if _click_if_present(place, "button.next-available"):
                    _settle(place)
                else:
                    log.info("recreation page %s has no Next Available button; reading it as it is", place.url)
                place.locator("." + class_name).first.wait_for(state="attached", timeout=ELEMENT_TIMEOUT_MS)
                text = _class_text(place, class_name, order)
            finally:
                place.close()
        except PlaywrightError as e:
            raise EvaluationError(f"gotoRecreationPage_and_get_html_content: {url}: {e}") from e
    return {"expected": {class_name: text}}
