"""Stop strings matched across streamed text pieces.

A piece may end with the start of a stop string ("...<|" of "<|done|>"): that tail is held back
until the next piece shows whether the stop string follows, so no streamed text is ever retracted.
"""

from __future__ import annotations


class StopMatcher:
    """`push(piece)` -> the text safe to emit now; `stopped` once a stop string was seen (the stop
    string and everything after it are dropped); `flush()` -> the held-back tail at the end."""

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._held = ""
        self._hold = max((len(s) - 1 for s in self.stops), default=0)

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[: min(hits)]
        keep = 0  # the longest tail of `text` that begins some stop string
        for n in range(min(self._hold, len(text)), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stops):
                keep = n
                break
        self._held = text[len(text) - keep:]
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
