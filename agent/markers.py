"""Where each pointer action of a recorded step went, as plain data both renderers draw.

`step_marks(step, last_point)` reads a steps.jsonl record and returns one `Mark` per pointer
action: a click (one point), a drag (its path, start to end) or a scroll (where, and which way).
Points are fractions of the step's screenshot (0..1), so the HTML report draws them as SVG over a
scaled image and the recording draws them with Pillow on frames of any size. An action without a
point of its own (a click or scroll "where the pointer is", a drag from the pointer) is drawn at
the last point the episode acted on, else at the screen's centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MarkKind = Literal["click", "drag", "scroll"]
CENTRE = (0.5, 0.5)
#: Scroll arrows point this way, as a unit vector in screen axes (y grows downwards).
SCROLL_VECTORS = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
_CLICKS = {"click", "move", "mouse_down", "mouse_up"}


@dataclass(frozen=True, slots=True)
class Mark:
    """One pointer action to draw. `points`: fractions of the screenshot, [(x, y), ...] (two or
    more for a drag path); `direction`: a scroll's unit vector; `ok`: False when it was refused."""

    kind: MarkKind
    points: tuple[tuple[float, float], ...]
    ok: bool = True
    label: str = ""
    direction: tuple[float, float] | None = None


def step_marks(step: dict[str, Any], last_point: tuple[float, float] | None = None) -> list[Mark]:
    """The marks of one steps.jsonl record, in execution order (see the module docstring)."""
    marks: list[Mark] = []
    here = last_point or CENTRE
    for record in step.get("actions") or []:
        action = record.get("action") or {}
        kind = action.get("type")
        pts = [(float(p[0]), float(p[1])) for p in record.get("norm_xy") or [] if len(p) == 2]
        ok = bool(record.get("ok", True))
        if kind == "drag":
            path = pts if action.get("start") is not None else [here, *pts]
            if len(path) >= 2:
                marks.append(Mark("drag", tuple(path), ok, "drag"))
        elif kind == "scroll":
            where = pts[0] if pts else here
            direction = SCROLL_VECTORS.get(str(action.get("direction")), (0.0, 1.0))
            marks.append(Mark("scroll", (where,), ok, f"scroll {action.get('direction')} {action.get('amount', '')}".strip(),
                              direction))
        elif kind in _CLICKS or pts:
            where = pts[0] if pts else here
            label = _click_label(action)
            marks.append(Mark("click", (where,), ok, label))
        else:
            continue
        here = marks[-1].points[-1]
    return marks


def _click_label(action: dict[str, Any]) -> str:
    if action.get("type") != "click":
        return str(action.get("type") or "point")
    clicks = {2: "double ", 3: "triple "}.get(int(action.get("clicks") or 1), "")
    button = "" if action.get("button", "left") == "left" else f"{action.get('button')} "
    return f"{clicks}{button}click"


def run_marks(steps: list[dict[str, Any]]) -> list[list[Mark]]:
    """`step_marks` for every step of a run, carrying the pointer position from step to step."""
    out: list[list[Mark]] = []
    last: tuple[float, float] | None = None
    for step in steps:
        marks = step_marks(step, last)
        if marks:
            last = marks[-1].points[-1]
        out.append(marks)
    return out
