"""`ScriptedBackend`: a test double that replays given replies instead of running a model.

It answers from a list of strings, a JSONL file (one JSON string, or an object with a `text` field
and optionally `stream_s`, the seconds its text takes to stream, to show a model's pace in demos), or a callable that receives a `ScriptCall` (the messages, the images, whose last one is
the current screenshot, the sampling and the call index) and returns the reply text. Tests and
demos use it to drive real environments through the real parser and executor without weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kimi_agent.errors import BackendError, ConfigError
from kimi_agent.model_runtime.backends.base import Message, Reply, Sampling

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """What a scripted reply function sees for one generation."""

    index: int  # 0-based number of this generate() call
    messages: list[Message]
    images: list[Image.Image]
    sampling: Sampling

    @property
    def screenshot(self) -> Image.Image:
        """The current observation's screenshot (the last image of the request)."""
        return self.images[-1]


ReplyFn = Callable[[ScriptCall], str]


def load_replies(path: str | Path) -> list[str]:
    """Replies from a JSONL file: each line a JSON string or an object with a `text` field."""
    return [text for text, _ in load_script(path)]


def load_script(path: str | Path) -> list[tuple[str, float]]:
    """(reply, stream seconds) pairs from a JSONL file: each line a JSON string or an object
    `{"text": ..., "stream_s": ...}` (`stream_s`: 0 to 60 s over which the text streams, default 0)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read replies file {p}: {e.strerror}") from None
    out: list[tuple[str, float]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
        out.append(script_item(item, f"{p}:{n}"))
    if not out:
        raise ConfigError(f"replies file {p} holds no replies (one JSON string or {{\"text\": ...}} object a line)")
    return out


def script_item(item: object, where: str) -> tuple[str, float]:
    """(reply, stream seconds) of one reply: a string, or a mapping `{"text": str, "stream_s": 0..60}`;
    `ConfigError` naming `where` otherwise."""
    text = item.get("text") if isinstance(item, dict) else item
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string or an object with a 'text' string, got "
                          f"{type(item).__name__}")
    stream_s = item.get("stream_s", 0.0) if isinstance(item, dict) else 0.0
    if isinstance(stream_s, bool) or not isinstance(stream_s, int | float) or not 0 <= stream_s <= 60:
        raise ConfigError(f"{where}: stream_s must be a number of seconds from 0 to 60")
    return text, float(stream_s)


class ScriptedBackend:
    """Replays replies in order (a test double; no model is involved)."""

    name = "scripted"

    def __init__(self, replies: Sequence[str | dict[str, object]] | ReplyFn | str | Path, *,
                 chunk_chars: int = 64, name: str = "scripted") -> None:
        """replies: a list of reply strings (or `{"text": ..., "stream_s": ...}` objects, as the JSONL
        file's lines), the path of a JSONL file, or a function of the `ScriptCall`; `ConfigError`
        naming the item otherwise. name: what runs record as the backend (a test double that is not
        a replay, such as the suite's scripted solutions, says so)."""
        self.name = name
        self._fn: ReplyFn | None = None
        if isinstance(replies, str | Path):
            script = load_script(replies)
        elif callable(replies):
            self._fn, script = replies, []
        elif isinstance(replies, Sequence):
            script = [script_item(r, f"replies[{i}]") for i, r in enumerate(replies)]
        else:
            raise ConfigError(f"replies must be a list of reply strings, a JSONL path or a function, got "
                              f"{type(replies).__name__}")
        self._replies: list[str] = [t for t, _ in script]
        self._stream_s: list[float] = [s for _, s in script]
        self._chunk = max(1, chunk_chars)
        self.calls: list[ScriptCall] = []

    def generate(self, messages: list[Message], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        """The next reply (or the reply function's answer), streamed to `on_text` in pieces;
        `BackendError` when the replies have run out."""
        call = ScriptCall(len(self.calls), messages, images, sampling)
        self.calls.append(call)
        if self._fn is not None:
            text = self._fn(call)
            if not isinstance(text, str):
                raise BackendError(f"the scripted reply function returned {type(text).__name__}, not the reply text")
        elif call.index < len(self._replies):
            text = self._replies[call.index]
        else:
            raise BackendError(f"the scripted backend ran out of replies after {len(self._replies)}")
        stream_s = self._stream_s[call.index] if call.index < len(self._stream_s) else 0.0
        chunk = max(1, min(self._chunk, 8)) if stream_s else self._chunk
        pieces = [text[i: i + chunk] for i in range(0, len(text), chunk)]
        for piece in pieces:
            if stream_s:
                time.sleep(stream_s / len(pieces))
            if on_text is not None:
                on_text(piece)
        return Reply(text=text, finish_reason="stop", latency_ms=0.0)
