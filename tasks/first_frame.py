"""Wait for the first screenshot worth showing: after setup, until the screen has drawn.

Chromium takes a moment after its process starts before its window paints; OSWorld's first
observation comes after the VM's screen is up. `wait_until_drawn` polls a subsampled frame until
it is not a single colour and has stayed the same for `stable_frames` polls, or `cap_s` passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kimi_agent.env.settle import frames_differ

SUBSAMPLE = 8  # every 8th pixel of every 8th row


@dataclass(frozen=True, slots=True)
class FirstFrame:
    waited_s: float
    drawn: bool  # False: the cap passed while the screen was blank or still changing

    def record(self) -> dict[str, float | bool]:
        return {"waited_s": round(self.waited_s, 3), "drawn": self.drawn}


def is_uniform(frame: np.ndarray) -> bool:
    """True when every sampled pixel has the colour of the first one ([H, W, C] or [H, W])."""
    return not bool(np.any(frame != frame[0, 0]))


def wait_until_drawn(grab: Callable[[], np.ndarray], *, cap_s: float = 15.0, interval_s: float = 0.1,
                     stable_frames: int = 3, tolerance: float = 0.0005,
                     sleep: Callable[[float], None] = time.sleep) -> FirstFrame:
    """Poll `grab()` until a non-uniform frame repeats `stable_frames` times, at most `cap_s` seconds."""
    start = time.monotonic()
    previous = grab()
    stable = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= cap_s:
            return FirstFrame(elapsed, drawn=False)
        sleep(interval_s)
        current = grab()
        same = not frames_differ(previous, current, tolerance)
        stable = stable + 1 if same and not is_uniform(current) else 0
        previous = current
        if stable >= stable_frames:
            return FirstFrame(time.monotonic() - start, drawn=True)


def screen_grabber(env: object) -> Callable[[], np.ndarray]:
    """A subsampled RGB frame [H/8, W/8, 3] of an environment's `observe()`."""

    def grab() -> np.ndarray:
        image = env.observe().image  # type: ignore[attr-defined]
        return np.asarray(image)[::SUBSAMPLE, ::SUBSAMPLE]

    return grab
