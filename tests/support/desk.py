"""A worker's local world for tests: a real DesktopEnv (Xvfb, openbox, Chromium when a task starts
it) and the LocalHost that runs task steps and getters against it, with its home under `home`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def local_desk(home: Path) -> Iterator[tuple[Any, Any]]:
    """(DesktopEnv, LocalHost), both closed on exit."""
    from kimi_agent.env.desktop import DesktopEnv
    from kimi_agent.tasks.host import LocalHost

    with DesktopEnv() as env:
        host = LocalHost(env, home)
        try:
            yield env, host
        finally:
            host.close()
