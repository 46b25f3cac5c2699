"""The environment protocol every live environment implements, and the data it returns.

`observe()` returns an `Observation` (the screenshot as a PIL RGB image, never PNG-encoded here,
plus the geometry needed to map the model's normalized points); `execute(action)` acts and returns
an `Outcome` that records the exact calls made, or the typed `ActionError` that refused the action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from kimi_agent.actions.geometry import Geometry
from kimi_agent.actions.types import Action
from kimi_agent.errors import ActionError

if TYPE_CHECKING:
    from PIL import Image

EnvKind = Literal["desktop", "browser", "osworld_vm"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One screenshot and what is needed to act on it.

    `image` is RGB, `geometry.shot_width x geometry.shot_height` pixels. `pointer` is in executor
    pixels. `url`/`title` are set by browser environments (and by the desktop env when it can read
    them from an attached Chromium).
    """

    image: Image.Image
    geometry: Geometry
    pointer: tuple[int, int] | None = None
    url: str | None = None
    title: str | None = None
    timestamp: float = field(default_factory=time.time)
    grab_ms: float = 0.0  # time spent capturing and converting the frame

    def record(self) -> dict[str, Any]:
        """JSON-ready metadata (no pixels) for the trajectory."""
        return {"geometry": self.geometry.model_dump(), "pointer": self.pointer, "url": self.url,
                "title": self.title, "timestamp": self.timestamp, "grab_ms": round(self.grab_ms, 3)}


@dataclass(slots=True)
class Outcome:
    """What executing one action did.

    `executed` lists the exact backend calls made, as readable strings (for example
    `pyautogui.click(960, 540, clicks=1, button='left')` or `page.mouse.click(640.0, 400.0)`).
    `exec_points` are the executor pixel coordinates the action's points were mapped to.
    `error` is set (and `ok` False) when the action was refused or failed.
    """

    action: Action
    ok: bool = True
    executed: list[str] = field(default_factory=list)
    exec_points: list[tuple[float, float]] = field(default_factory=list)
    error: ActionError | None = None
    exec_ms: float = 0.0
    settle_ms: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"action": self.action.model_dump(), "ok": self.ok, "executed": self.executed,
                "exec_points": self.exec_points, "error": None if self.error is None else str(self.error),
                "error_type": None if self.error is None else type(self.error).__name__,
                "exec_ms": round(self.exec_ms, 3), "settle_ms": round(self.settle_ms, 3)}


@runtime_checkable
class Environment(Protocol):
    """A live surface the agent sees and acts on. Usable as a context manager."""

    kind: EnvKind

    def reset(self) -> Observation:
        """Bring the environment to its start state and return the first observation."""
        ...

    def observe(self) -> Observation:
        """Capture the current screen."""
        ...

    def execute(self, action: Action, *, geometry: Geometry | None = None, settle: bool = True,
                on_settle: Callable[[], None] | None = None) -> Outcome:
        """Execute `action`, whose points are in the frame of `geometry` (default: the last
        observation's). With `settle`, wait until the screen stops changing (time in `settle_ms`),
        calling `on_settle()` just before that wait begins (the agent loop's "settling" phase)."""
        ...

    def focused_is_password(self) -> bool | None:
        """Whether keyboard focus is in a password field (the safety policy asks before typing
        there); None when this environment cannot tell."""
        ...

    def close(self) -> None:
        """Release every resource (processes, displays, browsers). Idempotent."""
        ...

    def __enter__(self) -> Environment: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...
