"""The policy hook every action passes before it is executed, and redaction of secrets.

- Risky actions need a confirmation; `--yes` skips it. Without anyone to confirm, a risky action
  is declined and the model is told so. They are: typing into a password field (when the
  environment can tell), typing or opening a `file:` URL, and the chords of `RISKY_CHORDS`
  (close, quit, lock, save, open, print, clear data, developer tools, run dialog, any
  ctrl+alt+key). Chords are compared by `chord_key` names (ctrlleft is ctrl, cmd and super are
  win), a chord with extra modifiers still counts, and keys held down by earlier `keyDown` calls
  count too (`keyDown('ctrl')` then `press('w')`, or then `write('w')`).
- Browser URLs are checked against an optional allowlist (`env.url_allowlist`: origins with
  optional path prefixes); the same list is handed to the browser environment, which enforces it
  on every request (redirects, popups, frames, subresources).
- Secrets: `<secret>name</secret>` in typed text is replaced by the secret's value just before
  execution, so the model never sees it; what is recorded about such an action names the secret
  (`<secret:NAME>`) instead of the text typed, and every secret value, in any encoding a record
  can hold it, is redacted from what is written (`Redactor`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict, Field

from kimi_agent.actions.keys import chord_key, held_key
from kimi_agent.actions.types import (
    Action,
    CloseTab,
    Hotkey,
    KeyDown,
    KeyUp,
    Navigate,
    NewTab,
    Press,
    TypeText,
)
from kimi_agent.env.url_allowlist import UrlAllowlist

_SECRET_REF = re.compile(r"<secret>\s*([\w.-]+)\s*</secret>")
#: a file: URL anywhere in typed text (also inside view-source:file:///..., and file:etc/passwd, which
#: Chromium reads as file:///etc/passwd); "file: report.txt" in prose is not one
_FILE_URL = re.compile(r"\bfile:(?=\S)", re.I)

_PRIMARY = ("ctrl", "win")  # the shortcut modifier: ctrl on Linux and Windows, cmd (canonical "win") on macOS


def _chords(what: str, *chords: tuple[str, ...]) -> dict[frozenset[str], str]:
    """Each chord -> `what`; a leading "P" stands for ctrl and for win (cmd)."""
    out: dict[frozenset[str], str] = {}
    for chord in chords:
        for first in (_PRIMARY if chord[0] == "P" else chord[:1]):
            out[frozenset((first, *chord[1:]))] = what
    return out


#: Key sets that close, quit, lock, save, open, print, clear data, open developer tools or run
#: commands, with what they do, by `chord_key` names. A chord is risky when it *contains* one of
#: them (extra modifiers do not make it safe), counting keys held down by earlier key_down actions.
RISKY_CHORDS: dict[frozenset[str], str] = {
    **_chords("close a window or tab", ("alt", "f4"), ("P", "w"), ("P", "f4")),
    **_chords("quit the app", ("P", "q")),
    **_chords("save to a file (a save dialog that writes anywhere on this computer)", ("P", "s")),
    **_chords("open a file (a file dialog that reads anywhere on this computer)", ("P", "o")),
    **_chords("print or save as PDF (a file dialog)", ("P", "p")),
    **_chords("open the downloads page", ("P", "j")),
    **_chords("clear browsing data", ("P", "shift", "delete"), ("P", "shift", "backspace")),
    **_chords("open the developer tools", ("f12",), ("P", "shift", "i"), ("P", "shift", "j"), ("P", "shift", "c"),
              ("P", "alt", "i"), ("P", "alt", "j"), ("P", "alt", "c")),
    **_chords("view the page source", ("P", "u"), ("P", "alt", "u")),
    **_chords("lock the screen", ("win", "l")),
    **_chords("run a command (the desktop's run dialog)", ("alt", "f2"), ("win", "r")),
}
#: Held with ctrl+alt, any other key is a system shortcut (log out, lock, terminal, switch console).
_SYSTEM = frozenset({"ctrl", "alt"})
_MODIFIER_NAMES = frozenset({"ctrl", "alt", "shift", "win"})
#: the most specific description first: ctrl+shift+j is the developer tools, not the downloads page
_BY_SIZE = sorted(RISKY_CHORDS.items(), key=lambda item: -len(item[0]))


def chord_risk(keys: Iterable[str], held: Iterable[str] = ()) -> str | None:
    """What pressing `keys` together, while `held` keys are down, risks doing; None when nothing.

    Key names may be any alias (`chord_key` makes "ctrlleft", "Control" and "ctrl" one key).
    Unknown key names count as themselves.
    """
    chord = frozenset(_chord_key(k) for k in (*held, *keys))
    for risky, what in _BY_SIZE:
        if risky <= chord:
            return what
    if chord >= _SYSTEM and chord - _MODIFIER_NAMES:
        return "a system shortcut (ctrl+alt+key)"
    return None


def _chord_key(name: str) -> str:
    try:
        return chord_key(name)
    except ValueError:
        return name


def _held_key(name: str) -> str:
    try:
        return held_key(name)
    except ValueError:
        return name

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
    """Checks actions before execution; `confirm(question) -> bool` asks a human (None: nobody).

    The policy follows the keys held down: an allowed `key_down` adds its key, a `key_up` removes
    it, so `keyDown('ctrl')` then `press('w')` (in one reply or across replies) is ctrl+w. `reset()`
    forgets them (a new episode on a fresh environment).
    """

    def __init__(self, settings: SafetySettings | None = None, *, confirm: Confirm | None = None) -> None:
        self.settings = settings or SafetySettings()
        self.confirm = confirm
        self.redactor = Redactor(self.settings.secrets)
        self.allowlist = UrlAllowlist(self.settings.allowed_urls) if self.settings.allowed_urls else None
        self.held: set[str] = set()  # chord_key names of keys held down by allowed key_down actions

    def reset(self) -> None:
        """Forget the keys held down (the environment released them)."""
        self.held.clear()

    def check(self, action: Action, *, focused_password: bool | None = None) -> Verdict:
        """Allowed, or refused with a reason written for the model."""
        verdict = self._verdict(action, focused_password=focused_password)
        if isinstance(action, KeyDown) and verdict.allowed:
            self.held.add(_held_key(action.key))
        elif isinstance(action, KeyUp):  # releases that one key: ctrlleft up leaves ctrlright held
            self.held.discard(_held_key(action.key))
        return verdict

    def _verdict(self, action: Action, *, focused_password: bool | None) -> Verdict:
        if isinstance(action, Navigate | NewTab) and action.url and not self.url_allowed(action.url):
            return Verdict(allowed=False, risk="url", reason=f"{action.url} is not on the allowed URL list.")
        risk = self.risk(action, focused_password=focused_password, held={_chord_key(k) for k in self.held})
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
    def risk(action: Action, *, focused_password: bool | None = None, held: Iterable[str] = ()) -> str | None:
        """A short description of why `action` is risky (with `held` keys down), or None."""
        held = sorted(held)
        while_held = f" while {'+'.join(held)} is held" if held else ""
        keys: tuple[str, ...] = ()
        if isinstance(action, Hotkey):
            keys = action.keys
        elif isinstance(action, Press | KeyDown):
            keys = (action.key,)
        if keys:
            what = chord_risk(keys, held)
            return f"press {'+'.join(keys)}{while_held} ({what})" if what else None
        if isinstance(action, CloseTab):
            return "close the tab"
        if isinstance(action, TypeText):
            if focused_password:
                return "type into a password field"
            if _FILE_URL.search(action.text):
                return "type a file: URL (a browser would show a file of this computer)"
            if held:  # keyDown('ctrl') then write('w') is ctrl+w
                for ch in action.text:
                    what = chord_risk((ch,), held)
                    if what:
                        return f"type {ch!r}{while_held} ({what})"
        if isinstance(action, Navigate | NewTab) and action.url and _FILE_URL.search(action.url):
            return "open a file: URL (a file of this computer)"
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
    """Replaces every secret value with `<secret:NAME>` in strings and nested JSON-like data.

    `secrets` is a mapping name -> value (or bare values, then named `secret`). Secrets of any
    length are matched, in every form a record can hold them: the value itself, as Python `repr`
    and JSON escape it (a backslash doubled, quotes and non-ASCII escaped), and percent-encoded as
    a URL or a submitted form carries it (UTF-8 or Latin-1, `%20` or `+`, hex digits in any case).
    A short secret makes records lose every occurrence of its characters: that is the price of
    never writing it.
    """

    def __init__(self, secrets: Mapping[str, str] | Iterable[str] = ()) -> None:
        pairs = secrets.items() if isinstance(secrets, Mapping) else (("secret", v) for v in secrets)
        forms: dict[str, str] = {}
        for name, value in pairs:
            if value:
                for form in _encoded_forms(str(value)):
                    forms.setdefault(form, name)
        self.values = sorted(forms, key=len, reverse=True)  # longest first: a secret inside another
        self._names = forms
        self._pattern = re.compile("|".join(_form_regex(f) for f in self.values)) if self.values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"<secret:{self._name(m.group(0))}>", text)

    def _name(self, found: str) -> str:
        if found in self._names:
            return self._names[found]
        upper = {k.upper(): v for k, v in self._names.items()}
        return upper.get(found.upper(), "secret")

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


#: a secret in a record: the model's reference `<secret>NAME</secret>` or the redacted `<secret:NAME>`
_RECORDED_SECRET = re.compile(_SECRET_REF.pattern + r"|<secret:([\w.-]+)>")


def fill_recorded_secrets(text: str, secrets: Mapping[str, str]) -> str:
    """`text` from a record with each secret it names (either form) replaced by its value from
    `secrets`; KeyError(name) for the first one `secrets` lacks (a replay types them again)."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in secrets:
            raise KeyError(name)
        return secrets[name]

    return _RECORDED_SECRET.sub(sub, text)


def secret_placeholders(text: str) -> str:
    """`text` with each `<secret>NAME</secret>` reference written as `<secret:NAME>`."""
    return _SECRET_REF.sub(lambda m: f"<secret:{m.group(1)}>", text)


def _encoded_forms(value: str) -> set[str]:
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             value.replace("\\", "\\\\")}
    for quote_char in ("'", '"'):  # repr picks its quote; a call string may use either
        forms.add(value.replace("\\", "\\\\").replace(quote_char, "\\" + quote_char))
    for encoding in ("utf-8", "latin-1"):
        try:
            value.encode(encoding)
        except UnicodeEncodeError:
            continue
        for safe in ("", "/", "*-._~", "*-._"):
            forms.add(quote(value, safe=safe, encoding=encoding))
            forms.add(quote_plus(value, safe=safe, encoding=encoding))
    return {f for f in forms if f}


def _form_regex(form: str) -> str:
    """A regex for `form`; the hex digits of percent escapes match in either case."""
    parts = re.split(r"(%[0-9A-Fa-f]{2})", form)
    return "".join(f"%(?i:{p[1:]})" if p.startswith("%") else re.escape(p) for p in parts)
