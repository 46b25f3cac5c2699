"""The policy hook every action passes before it is executed, and redaction of secrets.

- Risky actions (typing into a password field when the environment can tell, chords such as
  ctrl+alt+del, closing windows or tabs, quitting apps) need a confirmation; `--yes` skips it.
  Without anyone to confirm, a risky action is declined and the model is told so.
- Browser URLs are checked against an optional allowlist (`env.url_allowlist`: origins with
  optional path prefixes); the same list is handed to the browser environment, which enforces it
  on every request (redirects, popups, frames, subresources).
- Secrets: `<secret>name</secret>` in typed text is replaced by the secret's value just before
  execution, so the model never sees it, and every secret value is redacted from what is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kimi_agent.actions.types import Action, CloseTab, Hotkey, Navigate, NewTab, TypeText
from kimi_agent.env.url_allowlist import UrlAllowlist

REDACTED = "[REDACTED]"
_SECRET_REF = re.compile(r"<secret>\s*([\w.-]+)\s*</secret>")

#: Chords that close, quit or lock something; compared as sorted key sets.
RISKY_CHORDS: tuple[frozenset[str], ...] = tuple(frozenset(c) for c in (
    ("ctrl", "alt", "delete"), ("ctrl", "alt", "backspace"), ("alt", "f4"), ("ctrl", "w"), ("ctrl", "q"),
    ("ctrl", "shift", "w"), ("ctrl", "shift", "q"), ("cmd", "q"), ("cmd", "w"), ("win", "l"), ("ctrl", "alt", "l"),
))

Confirm = Callable[[str], bool]


class SafetySettings(BaseModel):
    """What the policy checks. Secrets are name -> value."""

    model_config = ConfigDict(extra="forbid")

    confirm_risky: bool = True
    allowed_urls: list[str] = Field(default_factory=list, description="empty: every URL is allowed")
    secrets: dict[str, str] = Field(default_factory=dict)


class Verdict(BaseModel):
    """The policy's answer for one action."""

    allowed: bool
    risk: str | None = None
    confirmed: bool | None = None
    reason: str | None = None


class SafetyPolicy:
    """Checks actions before execution; `confirm(question) -> bool` asks a human (None: nobody)."""

    def __init__(self, settings: SafetySettings | None = None, *, confirm: Confirm | None = None) -> None:
        self.settings = settings or SafetySettings()
        self.confirm = confirm
        self.redactor = Redactor(self.settings.secrets.values())
        self.allowlist = UrlAllowlist(self.settings.allowed_urls) if self.settings.allowed_urls else None

    def check(self, action: Action, *, focused_password: bool | None = None) -> Verdict:
        """Allowed, or refused with a reason written for the model."""
        if isinstance(action, Navigate | NewTab) and action.url and not self.url_allowed(action.url):
            return Verdict(allowed=False, risk="url", reason=f"{action.url} is not on the allowed URL list.")
        risk = self.risk(action, focused_password=focused_password)
        if risk is None:
            return Verdict(allowed=True)
        if not self.settings.confirm_risky:
            return Verdict(allowed=True, risk=risk, confirmed=None)
        if self.confirm is None:
            return Verdict(allowed=False, risk=risk, confirmed=False,
                           reason=f"{risk} needs a confirmation and nobody can give it; choose another way.")
        ok = self.confirm(self.redactor(f"The agent wants to: {risk}. Allow it?"))
        return Verdict(allowed=ok, risk=risk, confirmed=ok, reason=None if ok else f"The user declined: {risk}.")

    @staticmethod
    def risk(action: Action, *, focused_password: bool | None = None) -> str | None:
        """A short description of why `action` is risky, or None."""
        if isinstance(action, Hotkey) and frozenset(action.keys) in RISKY_CHORDS:
            return f"press {'+'.join(action.keys)}"
        if isinstance(action, CloseTab):
            return "close the tab"
        if isinstance(action, TypeText) and focused_password:
            return "type into a password field"
        return None

    def url_allowed(self, url: str) -> bool:
        """Whether a typed URL passes the allowlist (an origin check; every URL passes without one)."""
        return self.allowlist is None or self.allowlist.allows(url)

    def resolve_secrets(self, action: Action) -> Action:
        """`action` with `<secret>name</secret>` references replaced by their values (typed text only)."""
        if not isinstance(action, TypeText) or "<secret>" not in action.text:
            return action

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.settings.secrets:
                raise KeyError(name)
            return self.settings.secrets[name]

        return action.model_copy(update={"text": _SECRET_REF.sub(sub, action.text)})


class Redactor:
    """Replaces every secret value with `[REDACTED]` in strings and nested JSON-like data."""

    def __init__(self, secrets: Any = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.values = sorted({str(s) for s in secrets if s and len(str(s)) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self.values:
            text = text.replace(v, REDACTED)
        return text

    def data(self, obj: Any) -> Any:
        if not self.values:
            return obj
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj
