"""Bound a Playwright call on a page that may never answer (a busy `for(;;){}`, a print preview).

Playwright's input calls (`page.mouse.*`, `page.keyboard.*`) and `page.evaluate` take no timeout:
on a renderer whose main thread never returns they wait forever. `bounded(page, cdp, name, fn)`
runs the sync call with a timer on the thread's own Playwright event loop (the sync API turns
that loop while it waits); when the timer fires, a CDP `Page.crash` (served off the renderer's
main thread) kills the renderer, the pending call fails at once, and `PageHung` is raised. The
caller then replaces the crashed page. Two private Playwright attributes are used, both stable
since 1.8: a sync object's `_loop` and a CDP session's `_impl_obj.send` coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import ActionError

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page


class PageHung(ActionError):
    """A Playwright call on a page did not return within its bound; the page's renderer was crashed."""

    def __init__(self, name: str, timeout_s: float, page: Page) -> None:
        super().__init__(f"{name} did not return within {timeout_s:g} s (the page does not answer)")
        self.name = name
        self.timeout_s = timeout_s
        self.page = page


def bounded(page: Page, cdp: CDPSession, name: str, fn: Callable[..., Any], *args: Any,
            timeout_s: float, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or `PageHung` after `timeout_s` seconds (the page's renderer is then
    crashed through `cdp`, a CDP session attached to `page`, so the call returns)."""
    from playwright.sync_api import Error as PlaywrightError

    loop: asyncio.AbstractEventLoop = page._loop
    fired = False

    def crash() -> None:
        nonlocal fired
        fired = True
        task = loop.create_task(cdp._impl_obj.send("Page.crash", None, None))
        task.add_done_callback(_ignore_result)

    timer = loop.call_later(timeout_s, crash)
    try:
        return fn(*args, **kwargs)
    except PlaywrightError as exc:
        if fired:
            raise PageHung(name, timeout_s, page) from exc
        raise
    finally:
        timer.cancel()


def wake(page: Page) -> None:
    """Wake the event loop `page` runs on (thread-safe): a thread blocked in a Playwright call
    runs Python code again, so an exception posted to it (the step watchdog's) is raised."""
    loop: asyncio.AbstractEventLoop = page._loop
    if not loop.is_closed():
        loop.call_soon_threadsafe(lambda: None)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """The crash request's own answer does not matter (the target is gone before it comes)."""
    if not task.cancelled():
        task.exception()
