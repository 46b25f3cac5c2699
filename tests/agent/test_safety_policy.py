"""The confirmation policy against the red-team replies (notes/redteam-replies.md F2, F3, F7): key
chords however spelled, chords spread over key_down calls, save/open/print/devtools chords, file: URLs,
and --allow-url refused where it cannot be enforced."""

from __future__ import annotations

import pytest

from kimi_agent.actions.code_parser import parse_code
from kimi_agent.actions.types import Action, Hotkey, KeyDown, KeyUp, Navigate, Press, TypeText
from kimi_agent.errors import ConfigError
from kimi_agent.options import EnvOptions, check_env
from kimi_agent.safety import SafetyPolicy, SafetySettings, chord_risk


def _run(policy: SafetyPolicy, code: str) -> list[tuple[Action, str | None, bool]]:
    """Check the actions of one reply in order, as the loop does: (action, risk, allowed)."""
    out = []
    for action in parse_code(code)[0]:
        verdict = policy.check(action)
        out.append((action, verdict.risk, verdict.allowed))
    return out


@pytest.mark.parametrize(
    "code",
    [
        # F7: the same chord spelled otherwise, with extra modifiers, or through a sibling shortcut
        "pyautogui.hotkey('ctrl', 'w')", "pyautogui.hotkey('ctrlleft', 'w')", "pyautogui.hotkey('ctrlright', 'W')",
        "pyautogui.hotkey('Control', 'w')", "pyautogui.hotkey('ctrl', 'f4')", "pyautogui.hotkey('ctrl', 'shift', 'w')",
        "pyautogui.hotkey('altleft', 'f4')", "pyautogui.hotkey('alt', 'F4')", "pyautogui.hotkey('cmd', 'q')",
        "pyautogui.hotkey('command', 'w')", "pyautogui.hotkey('super', 'l')", "pyautogui.hotkey('ctrl', 'alt', 'del')",
        "pyautogui.hotkey('ctrl', 'alt', 't')", "pyautogui.hotkey('ctrl', 'alt', 'f2')",
        # F3: save, open, print, downloads, clear data, developer tools, view source, run dialog
        "pyautogui.hotkey('ctrl', 's')", "pyautogui.hotkey('ctrl', 'shift', 's')", "pyautogui.hotkey('ctrl', 'o')",
        "pyautogui.hotkey('ctrl', 'p')", "pyautogui.hotkey('ctrl', 'j')", "pyautogui.hotkey('ctrl', 'shift', 'delete')",
        "pyautogui.hotkey('ctrl', 'shift', 'i')", "pyautogui.hotkey('ctrl', 'shift', 'j')",
        "pyautogui.hotkey('ctrl', 'shift', 'c')", "pyautogui.press('f12')", "pyautogui.press('F12')",
        "pyautogui.hotkey('ctrl', 'u')", "pyautogui.hotkey('cmd', 's')", "pyautogui.hotkey('cmd', 'option', 'i')",
        "pyautogui.hotkey('alt', 'f2')",
    ],
)
def test_risky_chords_need_a_confirmation_however_spelled(code: str) -> None:
    [(_, risk, allowed)] = _run(SafetyPolicy(), code)
    assert risk is not None and risk.startswith("press ") and not allowed


@pytest.mark.parametrize(
    "code",
    ["pyautogui.hotkey('ctrl', 'l')", "pyautogui.hotkey('ctrl', 'a')", "pyautogui.hotkey('ctrl', 'c')",
     "pyautogui.hotkey('ctrl', 'v')", "pyautogui.hotkey('ctrl', 't')", "pyautogui.hotkey('ctrl', 'shift', 't')",
     "pyautogui.hotkey('ctrl', 'f')", "pyautogui.hotkey('alt', 'left')", "pyautogui.hotkey('ctrl', 'tab')",
     "pyautogui.press('enter')", "pyautogui.press('f5')", "pyautogui.hotkey('shift', 'w')", "pyautogui.write('save')",
     "pyautogui.keyDown('shift')\npyautogui.press('s')\npyautogui.keyUp('shift')",
     "pyautogui.write('chrome://settings')", "pyautogui.write('see the profile: /x')"],
)
def test_everyday_keys_and_text_need_nothing(code: str) -> None:
    assert all(allowed and risk is None for _, risk, allowed in _run(SafetyPolicy(), code))


@pytest.mark.parametrize(
    "code",
    ["pyautogui.keyDown('ctrl')\npyautogui.press('w')",
     "pyautogui.keyDown('ctrlleft')\npyautogui.keyDown('w')",
     "pyautogui.keyDown('ctrl')\npyautogui.write('now')",  # ctrl+n, ctrl+o: the o opens a file dialog
     "pyautogui.keyDown('ctrl')\npyautogui.keyDown('alt')\npyautogui.press('delete')",
     "pyautogui.keyDown('cmd')\npyautogui.hotkey('shift', 'w')"],
)
def test_keys_held_by_key_down_make_a_chord_with_later_keys(code: str) -> None:
    checks = _run(SafetyPolicy(), code)
    assert [risk is not None for _, risk, _ in checks] == [False] * (len(checks) - 1) + [True]
    assert "while" in (checks[-1][1] or "") and not checks[-1][2]


def test_held_keys_last_across_replies_until_key_up() -> None:
    policy = SafetyPolicy()
    assert policy.check(KeyDown(key="ctrl")).allowed
    assert not policy.check(Press(key="w")).allowed  # the next reply: ctrl is still down
    assert policy.check(KeyUp(key="ctrlleft")).allowed  # released, whatever side was named
    assert policy.check(Press(key="w")).allowed and policy.held == set()
    refused = SafetyPolicy()
    refused.check(KeyDown(key="ctrl"))
    assert not refused.check(KeyDown(key="w")).allowed and refused.held == {"ctrlleft"}  # a refused key_down holds nothing
    refused.reset()
    assert refused.check(Press(key="w")).allowed


@pytest.mark.parametrize(("down", "up"), [("ctrlright", "ctrlleft"), ("ctrl", "ctrlright"), ("winright", "cmd")])
def test_releasing_the_other_side_leaves_the_held_key_down(down: str, up: str) -> None:
    """X holds Control_L and Control_R apart: keyDown('ctrlright'), keyUp('ctrlleft'), press('w') is
    still ctrl+w (it closed the desktop Chromium unasked, re-test N1)."""
    policy = SafetyPolicy()
    assert policy.check(KeyDown(key=down)).allowed and policy.check(KeyUp(key=up)).allowed
    verdict = policy.check(Press(key="w"))
    assert not verdict.allowed and "while" in (verdict.risk or ""), verdict
    assert policy.check(KeyUp(key=down)).allowed and policy.check(Press(key="w")).allowed


@pytest.mark.parametrize(("text", "risky"), [("file:etc/passwd", True), ("FILE:/etc/passwd", True),
                                             ("view-source:file:///etc/passwd", True),
                                             ("Save the file: report.txt", False), ("profile:x", False)])
def test_file_urls_without_slashes_are_file_urls_too(text: str, risky: bool) -> None:
    risk = SafetyPolicy.risk(TypeText(text=text))
    assert (risk is not None) is risky and (not risky or "file: URL" in risk), (text, risk)


def test_confirmation_names_the_chord_and_what_it_does() -> None:
    asked: list[str] = []
    policy = SafetyPolicy(confirm=lambda q: asked.append(q) is None)
    verdict = policy.check(Hotkey(keys=("ctrlleft", "s")))
    assert verdict.allowed and verdict.confirmed
    assert asked == ["The agent wants to: press ctrlleft+s (save to a file (a save dialog that writes anywhere on "
                     "this computer)). Allow it?"]
    assert SafetyPolicy(SafetySettings(confirm_risky=False)).check(Hotkey(keys=("ctrl", "s"))).allowed


def test_chord_risk_is_a_subset_match_on_canonical_names() -> None:
    assert chord_risk(["ctrl", "shift", "j"]) == "open the developer tools"  # the most specific, not ctrl+j
    assert chord_risk(["j"], held=["ctrlright"]) == "open the downloads page"
    assert chord_risk(["ctrl", "alt"]) is None  # modifiers alone do nothing
    assert chord_risk(["ctrl", "alt", "f1"]) == "a system shortcut (ctrl+alt+key)"


@pytest.mark.parametrize(
    "action",
    [TypeText(text="file:///etc/passwd"), TypeText(text="FILE:/root/.ssh/id_rsa"),
     TypeText(text="view-source:file:///etc/shadow"), Navigate(url="file:///etc/passwd")],
)
def test_file_urls_typed_or_opened_need_a_confirmation(action: Action) -> None:
    verdict = SafetyPolicy().check(action)
    assert not verdict.allowed and verdict.risk is not None and "file: URL" in verdict.risk


def test_allow_url_is_refused_for_the_desktop_environment() -> None:
    with pytest.raises(ConfigError) as info:
        check_env(EnvOptions(env="desktop", url="http://127.0.0.1:8765/", allowed_urls=["http://127.0.0.1:8765"]))
    assert "--allow-url works only with --env browser" in str(info.value)
    check_env(EnvOptions(env="browser", url="http://127.0.0.1:8765/", allowed_urls=["http://127.0.0.1:8765"],
                         headless=True))
