"""Fixtures of the agent tests: a fake in-memory environment (the model side is the scripted backend)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest
from PIL import Image

from kimi_agent.actions.geometry import Geometry, norm_to_exec_pixel
from kimi_agent.actions.types import Action, action_points
from kimi_agent.env.base import EnvKind, Observation, Outcome
from kimi_agent.errors import ActionError


class FakeEnv:
    """A 1920x1080 'screen' whose colour changes with every executed action."""

    kind: EnvKind = "desktop"

    def __init__(self, width: int = 1920, height: int = 1080, *, fail_types: tuple[str, ...] = ()) -> None:
        self.geometry = Geometry.identity(width, height)
        self.executed: list[Action] = []
        self.fail_types = fail_types
        self.observations = 0
        self.password_focused = False

    def reset(self) -> Observation:
        return self.observe()

    def observe(self) -> Observation:
        t = time.perf_counter()
        self.observations += 1
        shade = (len(self.executed) * 40) % 256
        img = Image.new("RGB", (self.geometry.shot_width, self.geometry.shot_height), (shade, 80, 120))
        return Observation(image=img, geometry=self.geometry, grab_ms=(time.perf_counter() - t) * 1000)

    def execute(self, action: Action, *, geometry: Geometry | None = None, settle: bool = True,
                on_settle: Callable[[], None] | None = None) -> Outcome:
        if action.type in self.fail_types:
            raise ActionError(f"{action.type} is not supported here")
        g = geometry or self.geometry
        pts = [norm_to_exec_pixel(p, g) for p in action_points(action)]
        self.executed.append(action)
        if settle and on_settle is not None and action.type not in ("wait", "done", "ask_user"):
            on_settle()
        return Outcome(action=action, executed=[f"fake.{action.type}{tuple(pts)}"],
                       exec_points=[(float(x), float(y)) for x, y in pts], exec_ms=0.1, settle_ms=0.0)

    def focused_is_password(self) -> bool:
        return self.password_focused

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeEnv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def kimi(thought: str, action: str, code: str) -> str:
    """A reply in the exact Kimi format."""
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


@pytest.fixture
def fake_env() -> FakeEnv:
    return FakeEnv()


@pytest.fixture
def kimi_reply() -> Any:
    return kimi
