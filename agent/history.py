"""Build the chat messages of one turn: system prompt, folded history, recent screenshots, instruction.

Policy (AGENT_PROTOCOL.md §1.3/§6.3): the model sees at most K screenshots, the K-1 most recent past
steps with their screenshot plus the current one. Older steps are folded into one assistant message
of `# Step i:` texts. Past steps replay only the thought and the action sentence: never the code,
never coordinates, never the ◁think▷ reasoning of Thinking models.

`history_policy`:
- "exact" (default): exactly min(K, steps) screenshots every step. Once the window slides, the fold
  right after the system prompt changes every step, so nearly the whole prompt is prefilled again.
- "chunked": steps are folded K at a time, so the model sees between K and 2K-1 screenshots and the
  prompt only grows (a runtime with prefix reuse prefills just the new step) except once every K steps.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from kimi_agent.model_runtime.backends.base import Message
from kimi_agent.prompts import STEP_HEADER, Prompt
from kimi_agent.reply import THINK_CLOSE, THINK_OPEN

_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + r".*?" + re.escape(THINK_CLOSE), re.S)
_FENCE = re.compile(r"```.*?(```|\Z)", re.S)
_CALL = re.compile(r"\b(?:pyautogui|computer)\.\w+\([^)]*\)")
_POINT = re.compile(r"\(\s*[xX]?\s*=?\s*-?\d+(?:\.\d+)?\s*,\s*[yY]?\s*=?\s*-?\d+(?:\.\d+)?\s*\)")
_XY = re.compile(r"\b[xy]\s*=\s*-?\d+(?:\.\d+)?", re.I)


@dataclass(frozen=True, slots=True)
class PastStep:
    """What the history keeps of one executed step."""

    index: int  # 1-based step number
    thought: str
    action_text: str
    image: Image.Image  # the screenshot the model saw at that step


def scrub(text: str) -> str:
    """Text safe to replay: no think blocks, code fences, pyautogui calls or coordinate pairs."""
    text = _THINK_BLOCK.sub("", text).replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
    text = _FENCE.sub("", text)
    text = _CALL.sub("", text)
    text = _POINT.sub("", text)
    text = _XY.sub("", text)
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def step_text(step: PastStep, prompt: Prompt) -> str:
    """`# Step i:` + the history template filled with the scrubbed thought and action."""
    body = prompt.history_template.format(thought=scrub(step.thought), action=scrub(step.action_text))
    return STEP_HEADER.format(index=step.index) + body


HistoryPolicy = Literal["exact", "chunked"]
HISTORY_POLICIES: tuple[str, ...] = ("exact", "chunked")


def folded_steps(n_past: int, history_images: int, policy: HistoryPolicy = "exact") -> int:
    """How many of `n_past` past steps are folded into text (the rest keep their screenshot)."""
    k = history_images
    if policy == "exact":
        return max(0, n_past - (k - 1))
    if policy == "chunked":  # keep n_past - folded + 1 screenshots in [K, 2K-1]; fold K at a time
        return k * max(0, math.ceil((n_past + 2 - 2 * k) / k))
    raise ValueError(f"history policy {policy!r}; use one of {', '.join(HISTORY_POLICIES)}")


def build_messages(prompt: Prompt, instruction: str, past: list[PastStep], current: Image.Image, *,
                   history_images: int = 3, note: str | None = None,
                   history_policy: HistoryPolicy = "exact") -> tuple[list[Message], list[Image.Image]]:
    """Messages and images (in order of their image parts) for the next generation.

    `history_images` is K, the number of screenshots the model sees (>= 1; up to 2K-1 with the
    "chunked" policy). `note` (feedback about a rejected reply, or the user's answer) is appended to
    the instruction turn.
    """
    if history_images < 1:
        raise ValueError("history_images must be at least 1")
    n_folded = folded_steps(len(past), history_images, history_policy)
    older, recent = past[:n_folded], past[n_folded:]
    messages: list[Message] = [{"role": "system", "content": prompt.system}]
    images: list[Image.Image] = []
    if older:
        messages.append({"role": "assistant", "content": "\n".join(step_text(s, prompt) for s in older)})
    for s in recent:
        messages.append({"role": "user", "content": [{"type": "image"}]})
        images.append(s.image)
        messages.append({"role": "assistant", "content": step_text(s, prompt)})
    text = prompt.instruction(instruction) + (note or "")
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    images.append(current)
    return messages, images
