"""Bound a Playwright call on a page that may never answer (a busy `for(;;){}`, a print preview).

Playwright's input calls (`page.mouse.*`, `page.keyboard.*`) and `page.evaluate` take no timeout:
on a renderer whose main thread never returns they wait forever. `bounded(page, cdp, name, fn)`
runs the sync call with a timer on the thread's own Playwright event loop (the sync API turns
that loop while it waits). When the timer fires, CDP `Runtime.terminateExecution` stops the page's
script; if the call is still waiting `CRASH_AFTER_S` later, `Page.crash` (served off the renderer's
main thread) kills the renderer. Either way `PageHung` is raised and the caller replaces the page.
Stopping the script first matters: a crashed renderer took the whole headless browser down with it
in about one run of four. Two private Playwright attributes are used, both stable since 1.8: a sync
object's `_loop` and a CDP session's `_impl_obj.send` coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import ActionError

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page


#: After a call's bound, the page's script is stopped (CDP `Runtime.terminateExecution`); if the call
#: still has not returned this much later, the renderer is crashed (`Page.crash`).
CRASH_AFTER_S = 2.0


class PageHung(ActionError):
    """A Playwright call on a page did not return within its bound; the page's script was stopped (or
    its renderer crashed): the page is to be replaced."""

    def __init__(self, name: str, timeout_s: float, page: Page) -> None:
        super().__init__(f"{name} did not return within {timeout_s:g} s (the page does not answer)")
        self.name = name
        self.timeout_s = timeout_s
        self.page = page


def bounded(page: Page, cdp: CDPSession, name: str, fn: Callable[..., Any], *args: Any,
            timeout_s: float, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or `PageHung` after `timeout_s` seconds (the page's script is then stopped
    through `cdp`, a CDP session attached to `page`, and its renderer crashed if the call still waits
    `CRASH_AFTER_S` later, so the call returns)."""
    from playwright.sync_api import Error as PlaywrightError

    loop: asyncio.AbstractEventLoop = page._loop
    fired = False
    kill: asyncio.TimerHandle | None = None

    def send(method: str) -> None:
        task = loop.create_task(cdp._impl_obj.send(method, None, None))
        task.add_done_callback(_ignore_result)

    def crash() -> None:
        nonlocal kill
        send("Page.crash")
        kill = None

    def stop() -> None:
        nonlocal fired, kill
        fired = True
        send("Runtime.terminateExecution")  # ends a script that never returns; the renderer lives on
        kill = loop.call_later(CRASH_AFTER_S, crash)  # a renderer stuck outside script (a print dialog)

    timer = loop.call_later(timeout_s, stop)
    try:
        result = fn(*args, **kwargs)
    except PlaywrightError as exc:
        if fired:
            raise PageHung(name, timeout_s, page) from exc
        raise
    finally:
        timer.cancel()
        if kill is not None:
            kill.cancel()
    if fired:  # it returned only because its page's script was stopped: the page is not to be trusted
        raise PageHung(name, timeout_s, page)
    return result


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
