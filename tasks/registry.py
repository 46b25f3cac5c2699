"""Name -> implementation registries for setup steps, getters and metrics.

Implementations register themselves with a decorator (`@getter("bookmarks")`, `@metric("exact_match")`,
`@setup_step("launch", params=LaunchParams)`); the loader resolves every name a task uses when the
file is loaded, so an unknown name is reported then (never as an AttributeError mid-episode).
Setup steps declare a pydantic model of their parameters; setup steps and getters optionally a
`check` that says, without running anything, why the step or getter cannot run on this machine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from kimi_agent.errors import TaskUnsupportedError

F = TypeVar("F", bound=Callable[..., Any])

# A check returns human-readable reasons why a step cannot run here (empty: it can).
StepCheck = Callable[[Any], list[str]]


@dataclass(frozen=True, slots=True)
class Entry(Generic[F]):
    name: str
    fn: F
    params: type[BaseModel] | None = None
    check: StepCheck | None = None


class Registry(Generic[F]):
    """A dict of named implementations of one kind ("setup step", "getter", "metric")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, *, params: type[BaseModel] | None = None,
                 check: StepCheck | None = None) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, fn, params, check)
            return fn
        return deco

    def entry(self, name: str) -> Entry[F]:
        _load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise TaskUnsupportedError(f"unsupported {self.kind} {name!r}",
                                       names=[f"{self.kind} {name!r}"]) from None

    def get(self, name: str) -> F:
        return self.entry(name).fn

    def __contains__(self, name: object) -> bool:
        _load_builtins()
        return name in self._entries

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._entries)


SETUP_STEPS: Registry[Callable[..., None]] = Registry("setup step")
GETTERS: Registry[Callable[..., Any]] = Registry("getter")
METRICS: Registry[Callable[..., float]] = Registry("metric")

setup_step = SETUP_STEPS.register
getter = GETTERS.register
metric = METRICS.register

_BUILTIN_MODULES = ("kimi_agent.tasks.setup_steps", "kimi_agent.tasks.getters", "kimi_agent.tasks.getters_os",
                    "kimi_agent.tasks.getters_url", "kimi_agent.tasks.getters_page", "kimi_agent.tasks.metrics",
                    "kimi_agent.tasks.metrics_os", "kimi_agent.tasks.metrics_pdf")
_loaded = False


def _load_builtins() -> None:
    """Import the modules whose decorators fill the registries (once; cheap, no browser)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
