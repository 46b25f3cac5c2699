"""One Playwright driver per thread, shared by every BrowserEnv (and the tests) on that thread.

The sync API allows a single `sync_playwright()` per thread, and its objects work only on the
thread that started it; a second one started while the first is alive fails ("using Playwright
Sync API inside the asyncio loop"). `acquire()` starts the calling thread's driver on first use
and counts its users; `release()` stops it when the thread's last one is done. So an agent's
worker thread (`Agent.arun`) gets its own driver next to the main thread's.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kimi_agent.errors import EnvironmentStartError

if TYPE_CHECKING:
    from playwright.sync_api import Playwright, PlaywrightContextManager


class _ThreadDriver(threading.local):
    """The calling thread's driver and its user count."""

    manager: PlaywrightContextManager | None = None
    playwright: Playwright | None = None
    users: int = 0


_local = _ThreadDriver()


def acquire() -> Playwright:
    """This thread's Playwright (started now if needed); pair every call with `release()` on the
    same thread."""
    if _local.users == 0:
        from playwright.sync_api import Error, sync_playwright

        manager = sync_playwright()
        try:
            _local.playwright = manager.start()
        except Error as exc:
            raise EnvironmentStartError(f"cannot start the Playwright driver: {exc}") from exc
        _local.manager = manager
    _local.users += 1
    assert _local.playwright is not None
    return _local.playwright


def release() -> None:
    """Drop one user of this thread's driver; the last one stops it."""
    if _local.users == 0:
        return
    _local.users -= 1
    if _local.users == 0:
        manager, _local.manager, _local.playwright = _local.manager, None, None
        if manager is not None:
            manager.__exit__(None, None, None)
