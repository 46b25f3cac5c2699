import pytest

from kimi_agent.actions.keys import from_playwright, normalize_key, playwright_chord, to_playwright


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("return", "enter"), ("Return", "enter"), ("command", "win"), ("cmd", "win"), ("win", "win"),
     ("arrowleft", "left"), ("ArrowLeft", "left"), ("arrow_up", "up"), ("Control", "ctrl"), ("ESC", "esc"),
     ("escape", "esc"), ("PageDown", "pagedown"), ("page_up", "pageup"), ("del", "delete"), ("F5", "f5"),
     ("A", "a"), ("/", "/"), (" ", " "), ("\n", "enter"), ("option", "alt"), ("super", "win")],
)
def test_aliases_normalize_to_pyautogui_names(alias: str, canonical: str) -> None:
    assert normalize_key(alias) == canonical


@pytest.mark.parametrize("bad", ["", "hyperdrive", "ctrl+c", "é", "f99"])
def test_unknown_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_key(bad)


@pytest.mark.parametrize(
    ("key", "pw"),
    [("ctrl", "Control"), ("enter", "Enter"), ("left", "ArrowLeft"), ("win", "Meta"), ("esc", "Escape"),
     ("pagedown", "PageDown"), ("f12", "F12"), ("a", "a"), ("backspace", "Backspace"), ("space", " ")],
)
def test_playwright_names_round_trip(key: str, pw: str) -> None:
    assert to_playwright(key) == pw
    assert from_playwright(pw) == key


def test_chord() -> None:
    assert playwright_chord(["ctrl", "shift", "T"]) == "Control+Shift+t"
    assert playwright_chord(["command", "l"]) == "Meta+l"


@pytest.mark.parametrize(
    ("name", "key"),
    [("ctrl", "ctrl"), ("ctrlleft", "ctrl"), ("ctrlright", "ctrl"), ("lctrl", "ctrl"), ("Control", "ctrl"),
     ("altleft", "alt"), ("altgr", "alt"), ("option", "alt"), ("shiftright", "shift"), ("cmd", "win"),
     ("command", "win"), ("super", "win"), ("winleft", "win"), ("meta", "win"), ("W", "w"), ("F4", "f4")],
)
def test_chord_key_compares_sided_modifiers_and_aliases_as_one_key(name: str, key: str) -> None:
    from kimi_agent.actions.keys import chord_key

    assert chord_key(name) == key
