"""Parse a Kimi-format reply (`## Thought` / `## Action` / `## Code`) into a `Step`.

`parse_reply` is a pure function that returns a `Step` or a `ReplyError` (as a value, never raised
out of it). Thinking models put `◁think▷ ... ◁/think▷` before `## Action`; the thinking is kept
apart from the thought so the history can drop it. Of several code fences the last one counts.
A reply holding a lone surrogate (an endpoint's JSON "\\ud800") is refused as `bad_text`: no record or
terminal could hold it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from kimi_agent.actions.code_parser import CoordinateMode, ParseLimits, parse_code
from kimi_agent.actions.types import Action
from kimi_agent.errors import ReplyError

THINK_OPEN = "◁think▷"
THINK_CLOSE = "◁/think▷"
MAX_REPLY_CHARS = 100_000

_CODE_LANGS = {"", "python", "python3", "py", "code", "pyautogui"}
_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.S)
_INLINE_FENCE = re.compile(r"```([^`\n]+)```")
_OPEN_FENCE = re.compile(r"```([^\n`]*)\n(.*)\Z", re.S)
_HEADING = re.compile(r"^[ \t]*#{1,4}[ \t]*(Thought|Action|Code|Observation|Reflection)\b[ \t]*:?[ \t]*(.*)$",
                      re.I | re.M)
_ANY_HEADING = re.compile(r"^[ \t]*#{1,4}[ \t]*\S", re.M)
_CORNER = re.compile(r"\b(corner|top[- ]left|upper[- ]left|origin)\b", re.I)


class Step(BaseModel):
    """One parsed reply: what the model thought, said it would do, and the actions that does."""

    model_config = ConfigDict(frozen=True)

    thought: str
    action_text: str
    code: str
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()
    thinking: str | None = None  # the ◁think▷ part of Thinking models, never replayed in history


def split_thinking(text: str) -> tuple[str | None, str]:
    """Split `◁think▷ reasoning ◁/think▷ answer` into (reasoning, answer).

    Text with no markers is all answer. A closing marker without an opening one (the opening token
    was part of the prompt) still splits. Raises `ReplyError` if thinking never ends.
    """
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        open_ = text.find(THINK_OPEN)
        start = open_ + len(THINK_OPEN) if 0 <= open_ < close else 0
        return text[start:close].strip(), text[close + len(THINK_CLOSE):]
    if THINK_OPEN in text:
        raise ReplyError("Your reasoning was cut off before ◁/think▷; finish thinking, then give "
                         "## Action and ## Code.", kind="truncated")
    return None, text


def extract_code(text: str) -> tuple[str | None, list[str]]:
    """The last pyautogui code fence of `text` (or the `## Code` section without a fence)."""
    warnings: list[str] = []
    blocks: list[tuple[int, str]] = []
    for m in _FENCE.finditer(text):
        info, body = m.group(1).strip(), m.group(2)
        if info.lower() in _CODE_LANGS:
            blocks.append((m.start(), body))
        elif "(" in info:  # ```pyautogui.click(...)\n...```: code starts on the fence line
            blocks.append((m.start(), info + "\n" + body))
    for m in _INLINE_FENCE.finditer(text):
        if "(" in m.group(1):
            blocks.append((m.start(), m.group(1)))
    if blocks:
        return max(blocks)[1].strip(), warnings
    tail = _OPEN_FENCE.search(text)
    if tail and tail.group(1).strip().lower() in _CODE_LANGS and "```" not in tail.group(2):
        warnings.append("the code fence was not closed")
        return tail.group(2).strip(), warnings
    section = _sections(text).get("code")
    if section:
        warnings.append("the code was not in a ``` fence")
        return section.strip(), warnings
    return None, warnings


def _sections(text: str) -> dict[str, str]:
    """Heading name (lower case) -> text up to the next heading; code fences are left out."""
    plain = _FENCE.sub("", text)
    out: dict[str, str] = {}
    for m in _HEADING.finditer(plain):
        nxt = _ANY_HEADING.search(plain, m.end())
        body = m.group(2) + plain[m.end(): nxt.start() if nxt else len(plain)]
        out.setdefault(m.group(1).lower(), body.strip())
    return out


def parse_reply(
    text: str,
    *,
    coordinate_mode: CoordinateMode = "relative",
    screenshot_size: tuple[int, int] | None = None,
    limits: ParseLimits | None = None,
) -> Step | ReplyError:
    """Parse a model reply into a `Step`, or return the `ReplyError` to show back to the model."""
    try:
        return _parse(text, coordinate_mode, screenshot_size, limits)
    except ReplyError as e:
        return e


def _parse(text: str, mode: CoordinateMode, shot: tuple[int, int] | None, limits: ParseLimits | None) -> Step:
    if not isinstance(text, str) or not text.strip():
        raise ReplyError("The reply is empty. Answer with ## Thought, ## Action and a ## Code block.", kind="empty")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyError(f"The reply is too long ({len(text)} characters).", kind="too_long")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # e.g. an endpoint's JSON "\ud800": nothing downstream could write it
        raise ReplyError(f"The reply holds U+{ord(text[e.start]):04X} at position {e.start}, a lone surrogate, "
                         "which is not a character; answer again.", kind="bad_text") from None
    thinking, body = split_thinking(text)
    code, warnings = extract_code(body)
    if code is None:
        raise ReplyError(
            "The reply has no code block. End it with a ```python block holding the pyautogui call, "
            "or computer.wait() / computer.terminate(status='success' or 'failure').", kind="no_code")
    sections = _sections(body)
    thought = sections.get("thought", "") or (thinking or "")
    action_text = sections.get("action", "")
    allow_corner = bool(_CORNER.search(action_text) or _CORNER.search(thought))
    actions, code_warnings = parse_code(code, coordinate_mode=mode, screenshot_size=shot,
                                        allow_corner=allow_corner, limits=limits)
    return Step(thought=thought, action_text=action_text, code=code, actions=tuple(actions),
                warnings=(*warnings, *code_warnings), thinking=thinking)
