"""kimi-agent: a GUI-agent runtime for the Kimi-VL vision-language model.

Public names are imported lazily so that `import kimi_agent.actions` (or the parser) never pulls in
torch, Playwright or an X display:

- `Agent`, `AgentSettings`: run episodes against an environment (`Agent(backend, env).run(...)`,
  or `await agent.arun(...)` from asyncio code).
- `EpisodeResult`, `EpisodeStep`: how an episode ended, and each step (thought, action, points,
  timings, frame paths); `EpisodeInterrupted`: the `KeyboardInterrupt` raised after Ctrl-C, with
  the episode's result.
- `Listener`: the callbacks an episode makes as it runs (subclass it for your own progress view).
- `ScriptedBackend`: a test double that replays given replies instead of running a model.
- `parse_reply`, `Step`: turn a Kimi-format reply into typed actions.
- `AgentError`, `ReplyError`: the base of every error raised on purpose, and a rejected reply.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger("kimi_agent").addHandler(logging.NullHandler())  # library code never prints (see logs.py)

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Agent": "kimi_agent.loop",
    "AgentSettings": "kimi_agent.loop",
    "EpisodeInterrupted": "kimi_agent.result",
    "EpisodeResult": "kimi_agent.result",
    "EpisodeStep": "kimi_agent.result",
    "Listener": "kimi_agent.listener",
    "ScriptedBackend": "kimi_agent.model_runtime.backends.scripted",
    "parse_reply": "kimi_agent.reply",
    "Step": "kimi_agent.reply",
    "ReplyError": "kimi_agent.errors",
    "AgentError": "kimi_agent.errors",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kimi_agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
