"""Key names, normalized once.

Canonical names are pyautogui's (lower case: "ctrl", "enter", "pagedown", "f5", "a", "/").
`normalize_key` accepts the aliases models and other tools write ("return", "command", "win",
"arrowleft", "Control", "ESC", ...); `to_playwright` / `from_playwright` translate to and from
Playwright's `KeyboardEvent.key` names ("Control", "Enter", "ArrowLeft", "PageDown");
`chord_key` is the one name to compare chords by (left/right modifiers as their base).
"""

from __future__ import annotations

import string

# Named keys pyautogui understands (a subset of pyautogui.KEYBOARD_KEYS: the ones a GUI agent uses).
NAMED_KEYS: frozenset[str] = frozenset(
    {
        "ctrl", "alt", "shift", "win", "enter", "esc", "tab", "space", "backspace", "delete",
        "insert", "home", "end", "pageup", "pagedown", "up", "down", "left", "right",
        "capslock", "numlock", "scrolllock", "printscreen", "pause", "menu", "apps",
        "volumeup", "volumedown", "volumemute", "playpause", "nexttrack", "prevtrack",
        "ctrlleft", "ctrlright", "altleft", "altright", "shiftleft", "shiftright",
        "winleft", "winright",
        *(f"f{i}" for i in range(1, 25)),
    }
)

_ALIASES: dict[str, str] = {
    "control": "ctrl", "ctl": "ctrl", "lctrl": "ctrlleft", "rctrl": "ctrlright",
    "return": "enter", "ret": "enter", "escape": "esc", "del": "delete", "ins": "insert",
    "cmd": "win", "command": "win", "meta": "win", "super": "win", "windows": "win", "os": "win",
    "option": "alt", "opt": "alt", "altgr": "altright",
    "arrowup": "up", "arrowdown": "down", "arrowleft": "left", "arrowright": "right",
    "arrow_up": "up", "arrow_down": "down", "arrow_left": "left", "arrow_right": "right",
    "uparrow": "up", "downarrow": "down", "leftarrow": "left", "rightarrow": "right",
    "page_up": "pageup", "page_down": "pagedown", "pgup": "pageup", "pgdn": "pagedown",
    "spacebar": "space", "back_space": "backspace", "bksp": "backspace",
    "caps_lock": "capslock", "prtsc": "printscreen", "print": "printscreen", "context_menu": "menu",
}

_PRINTABLE: frozenset[str] = frozenset(string.ascii_lowercase + string.digits + string.punctuation + " ")

# Canonical pyautogui name -> Playwright key name.
_TO_PLAYWRIGHT: dict[str, str] = {
    "ctrl": "Control", "ctrlleft": "Control", "ctrlright": "Control",
    "alt": "Alt", "altleft": "Alt", "altright": "Alt",
    "shift": "Shift", "shiftleft": "Shift", "shiftright": "Shift",
    "win": "Meta", "winleft": "Meta", "winright": "Meta",
    "enter": "Enter", "esc": "Escape", "tab": "Tab", "space": " ", "backspace": "Backspace",
    "delete": "Delete", "insert": "Insert", "home": "Home", "end": "End",
    "pageup": "PageUp", "pagedown": "PageDown",
    "up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight",
    "capslock": "CapsLock", "numlock": "NumLock", "scrolllock": "ScrollLock",
    "printscreen": "PrintScreen", "pause": "Pause", "menu": "ContextMenu", "apps": "ContextMenu",
    "volumeup": "AudioVolumeUp", "volumedown": "AudioVolumeDown", "volumemute": "AudioVolumeMute",
    "playpause": "MediaPlayPause", "nexttrack": "MediaTrackNext", "prevtrack": "MediaTrackPrevious",
    **{f"f{i}": f"F{i}" for i in range(1, 25)},
}
_FROM_PLAYWRIGHT: dict[str, str] = {
    "Control": "ctrl", "Alt": "alt", "Shift": "shift", "Meta": "win", " ": "space",
    **{v: k for k, v in _TO_PLAYWRIGHT.items() if v not in {"Control", "Alt", "Shift", "Meta", " "}},
    "ContextMenu": "menu",
}
MODIFIERS: frozenset[str] = frozenset(
    {"ctrl", "alt", "shift", "win", "ctrlleft", "ctrlright", "altleft", "altright", "shiftleft",
     "shiftright", "winleft", "winright"}
)


def normalize_key(name: str) -> str:
    """Return the canonical pyautogui name of `name`, or raise ValueError naming it.

    Single characters keep their case only for letters typed as upper case ("A" -> "A" would be
    shift+a in pyautogui), so letters are lowered; other characters are kept as they are.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"key name must be a non-empty string, got {name!r}")
    if len(name) == 1:
        lowered = name.lower()
        if lowered in _PRINTABLE:
            return lowered if name.isalpha() else name
        if name == "\n":
            return "enter"
        if name == "\t":
            return "tab"
        raise ValueError(f"unknown key {name!r}")
    key = name.strip().lower().replace(" ", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key in NAMED_KEYS:
        return key
    if key in _FROM_PLAYWRIGHT_LOWER:
        return _FROM_PLAYWRIGHT_LOWER[key]
    raise ValueError(f"unknown key {name!r}")


_FROM_PLAYWRIGHT_LOWER: dict[str, str] = {k.lower(): v for k, v in _FROM_PLAYWRIGHT.items() if len(k) > 1}


#: Left/right modifiers -> the modifier they are, for matching chords (pressing keeps the side).
_SIDED_MODIFIERS: dict[str, str] = {
    "ctrlleft": "ctrl", "ctrlright": "ctrl", "altleft": "alt", "altright": "alt",
    "shiftleft": "shift", "shiftright": "shift", "winleft": "win", "winright": "win",
}


def chord_key(name: str) -> str:
    """The name of `name` for comparing chords: canonical (`normalize_key`: "cmd", "super" and
    "command" are "win"), with a left or right modifier as its base ("ctrlleft" -> "ctrl"), so
    ctrl+w, ctrlleft+w and Control+W compare equal. Raises ValueError for an unknown key."""
    key = normalize_key(name)
    return _SIDED_MODIFIERS.get(key, key)


def held_key(name: str) -> str:
    """The physical key `name` presses, for tracking keys held down: sided modifiers stay apart (X holds
    Control_L and Control_R apart, so releasing one leaves the other down), and an unsided modifier is
    its left key, as pyautogui sends it ("ctrl" -> "ctrlleft", "cmd" -> "winleft"). Raises ValueError
    for an unknown key."""
    key = normalize_key(name)
    return f"{key}left" if f"{key}left" in _SIDED_MODIFIERS else key


def to_playwright(key: str) -> str:
    """Playwright `keyboard.press` name of a canonical (or alias) key name."""
    canonical = normalize_key(key)
    if canonical in _TO_PLAYWRIGHT:
        return _TO_PLAYWRIGHT[canonical]
    return canonical  # single printable character


def from_playwright(name: str) -> str:
    """Canonical pyautogui name of a Playwright key name ("ArrowLeft" -> "left")."""
    if name in _FROM_PLAYWRIGHT:
        return _FROM_PLAYWRIGHT[name]
    return normalize_key(name)


def playwright_chord(keys: list[str] | tuple[str, ...]) -> str:
    """A Playwright chord string for a hotkey: ["ctrl", "shift", "t"] -> "Control+Shift+t"."""
    return "+".join(to_playwright(k) for k in keys)
