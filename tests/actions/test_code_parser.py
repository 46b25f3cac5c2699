import pytest

from kimi_agent.actions.code_parser import ParseLimits, parse_code
from kimi_agent.actions.types import (
    AskUser,
    Click,
    Done,
    Drag,
    Hotkey,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseUp,
    Move,
    NormPoint,
    Press,
    Scroll,
    TypeText,
    Wait,
)
from kimi_agent.errors import ReplyError

P = NormPoint


def one(code: str, **kw: object) -> object:
    actions, _ = parse_code(code, **kw)  # type: ignore[arg-type]
    assert len(actions) == 1
    return actions[0]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("pyautogui.click(0.5, 0.25)", Click(point=P(x=0.5, y=0.25))),
        ("pyautogui.click(x=0.5, y=0.25, button='right')", Click(point=P(x=0.5, y=0.25), button="right")),
        ("pyautogui.click((0.5, 0.25))", Click(point=P(x=0.5, y=0.25))),
        ("pyautogui.click()", Click()),
        ("pyautogui.click(0.5, 0.5, clicks=2, interval=0.1)", Click(point=P(x=0.5, y=0.5), clicks=2)),
        ("pyautogui.doubleClick(0.1, 0.2)", Click(point=P(x=0.1, y=0.2), clicks=2)),
        ("pyautogui.tripleClick(x=0.1, y=0.2)", Click(point=P(x=0.1, y=0.2), clicks=3)),
        ("computer.triple_click(0.1, 0.2)", Click(point=P(x=0.1, y=0.2), clicks=3)),
        ("pyautogui.rightClick(0.1, 0.2)", Click(point=P(x=0.1, y=0.2), button="right")),
        ("pyautogui.middleClick(0.1, 0.2)", Click(point=P(x=0.1, y=0.2), button="middle")),
        ("pyautogui.moveTo(0.3, 0.4, duration=0.5)", Move(point=P(x=0.3, y=0.4))),
        ("pyautogui.dragTo(0.3, 0.4, button='left')", Drag(start=None, end=P(x=0.3, y=0.4))),
        ("pyautogui.mouseDown(0.3, 0.4)", MouseDown(point=P(x=0.3, y=0.4))),
        ("pyautogui.mouseUp(button='right')", MouseUp(button="right")),
        ("pyautogui.scroll(-5)", Scroll(direction="down", amount=5)),
        ("pyautogui.scroll(3, x=0.5, y=0.5)", Scroll(point=P(x=0.5, y=0.5), direction="up", amount=3)),
        ("pyautogui.vscroll(-2)", Scroll(direction="down", amount=2)),
        ("pyautogui.hscroll(4)", Scroll(direction="right", amount=4)),
        ("pyautogui.hscroll(-4)", Scroll(direction="left", amount=4)),
        ("pyautogui.write('hello <world>')", TypeText(text="hello <world>")),
        ("pyautogui.typewrite(message='héllo 中文')", TypeText(text="héllo 中文")),
        ("pyautogui.press('return')", Press(key="enter")),
        ("pyautogui.press('tab', presses=3)", Press(key="tab", presses=3)),
        ("pyautogui.hotkey('ctrl', 'l')", Hotkey(keys=("ctrl", "l"))),
        ("pyautogui.hotkey(['command', 'shift', 't'])", Hotkey(keys=("win", "shift", "t"))),
        ("pyautogui.keyDown('shift')", KeyDown(key="shift")),
        ("pyautogui.keyUp('shift')", KeyUp(key="shift")),
        ("time.sleep(2)", Wait(seconds=2)),
        ("computer.wait()", Wait(seconds=5)),
        ("computer.terminate(status='success')", Done(status="success")),
        ("computer.terminate(status='failure', answer='not possible')", Done(status="failure", answer="not possible")),
        ("computer.terminate(status='fail')", Done(status="failure")),
        ("computer.call_user(question='Which account?')", AskUser(question="Which account?")),
    ],
)
def test_accepted_calls(code: str, expected: object) -> None:
    assert one(code) == expected


def test_several_calls_in_order_and_move_then_drag_is_one_drag() -> None:
    code = """import pyautogui
pyautogui.click(0.2, 0.3)
pyautogui.write('abc')
pyautogui.press(['enter', 'tab'])
pyautogui.moveTo(0.1, 0.1)
pyautogui.dragTo(0.9, 0.9, duration=1.0)
"""
    actions, warnings = parse_code(code)
    assert actions == [
        Click(point=P(x=0.2, y=0.3)), TypeText(text="abc"), Press(key="enter"), Press(key="tab"),
        Drag(start=P(x=0.1, y=0.1), end=P(x=0.9, y=0.9), duration_s=1.0),
    ]
    assert warnings == []


def test_coordinate_modes() -> None:
    assert one("pyautogui.click(960, 540)", coordinate_mode="absolute", screenshot_size=(1920, 1080)) == Click(
        point=P(x=0.5, y=0.5))
    assert one("pyautogui.click(500, 250)", coordinate_mode="relative1000") == Click(point=P(x=0.5, y=0.25))
    actions, warnings = parse_code("pyautogui.click(960, 540)", screenshot_size=(1920, 1080))
    assert actions == [Click(point=P(x=0.5, y=0.5))] and "screenshot pixels" in warnings[0]


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("pyautogui.click(1.5, 0.5)", "off_screen"),
        ("pyautogui.click(-0.1, 0.5)", "off_screen"),
        ("pyautogui.click(0, 0)", "degenerate"),
        ("pyautogui.click(0.000, 0.001)", "degenerate"),
        ("pyautogui.click(1e999, 0.5)", "not_finite"),
        ("pyautogui.click(x, y)", "non_literal"),
        ("pyautogui.click(pos[0], 0.5)", "non_literal"),
        ("pyautogui.write(f'{secret}')", "non_literal"),
        ("pyautogui.write(open('/etc/passwd').read())", "non_literal"),
        ("pyautogui.write(''.join(c for c in 'ab'))", "non_literal"),
        ("pyautogui.write(os.environ)", "non_literal"),
        ("pyautogui.click(0.5 + 0.1, 0.5)", "non_literal"),
        ("os.system('rm -rf /')", "unknown_function"),
        ("eval('1')", "unknown_function"),
        ("pyautogui.screenshot()", "unknown_function"),
        ("__import__('os').system('x')", "unknown_function"),
        ("import subprocess", "import"),
        ("x = 1", "not_a_call"),
        ("for i in range(3):\n    pyautogui.press('a')", "not_a_call"),
        ("pyautogui.click(0.5, 0.5", "syntax"),
        ("pyautogui.click(*pts)", "non_literal"),
        ("pyautogui.click(**kw)", "non_literal"),
        ("pyautogui.click(0.5, 0.5, speed=3)", "bad_argument"),
        ("pyautogui.click(0.5, 0.5, clicks=7)", "bad_argument"),
        ("pyautogui.click(0.5)", "missing_point"),
        ("pyautogui.press('nonsense')", "bad_argument"),
        ("pyautogui.scroll(0)", "bad_argument"),
        ("pyautogui.write('x' * 5)", "non_literal"),
        ("pyautogui.write('" + "x" * 2001 + "')", "too_long"),
        ("computer.terminate(status='maybe')", "bad_argument"),
        ("computer.terminate(status='success')\npyautogui.click(0.5, 0.5)", "after_terminate"),
        ("pass", "no_action"),
        ("\n".join(["pyautogui.press('a')"] * 21), "too_many_calls"),
        # hostile values (issue 14): no OverflowError, no unbounded wait, no look-alike names, no hidden text
        ("pyautogui.click(" + "9" * 309 + ", 0.5)", "out_of_range"),
        ("pyautogui.click(0.5, 0.5, clicks=-" + "1" * 400 + ")", "out_of_range"),
        ("pyautogui.scroll(" + "9" * 4000 + ")", "out_of_range"),
        ("pyautogui.press('a', presses=1e300)", "out_of_range"),
        ("time.sleep(1e308)", "out_of_range"),
        ("time.sleep(121)", "out_of_range"),
        ("computer.wait(-1)", "out_of_range"),
        ("time.sleep(1e999)", "not_finite"),
        ("ｐｙａｕｔｏｇｕｉ.click(0.5, 0.5)", "identifier"),
        ("pyautogui.ｃｌｉｃｋ(0.5, 0.5)", "identifier"),
        ("pyautogui.click(ｘ=0.5, y=0.5)", "identifier"),
        ("pyautogui.write('invoice\u202egpj.exe')", "hidden_text"),
        ("pyautogui.write('pass\u200bword')", "hidden_text"),
        ("pyautogui.write('a\u200db')", "hidden_text"),
        ("pyautogui.write('\ufeffhello')", "hidden_text"),
    ],
)
def test_rejections(code: str, kind: str) -> None:
    with pytest.raises(ReplyError) as info:
        parse_code(code)
    assert info.value.kind == kind
    assert str(info.value)  # a message the model can read


def test_joiners_inside_non_ascii_text_are_typed() -> None:
    assert one("pyautogui.write('👩\u200d💻 and می\u200cخواهم')") == TypeText(text="👩\u200d💻 and می\u200cخواهم")


def test_corner_allowed_when_meant_and_limits_configurable() -> None:
    assert one("pyautogui.click(0, 0)", allow_corner=True) == Click(point=P(x=0.0, y=0.0))
    with pytest.raises(ReplyError):
        parse_code("pyautogui.write('abcdef')", limits=ParseLimits(max_text_chars=3))


# ---- red-team replies (notes/redteam-replies.md F4, F10, F14) ---------------------------------

@pytest.mark.parametrize(
    ("code", "kind", "named"),
    [
        # F4: a lone surrogate, written as an escape in a plain-ASCII reply, is no text
        ("computer.terminate(status='success', answer='bad \\udcff answer')", "bad_text", "'answer'"),
        ("computer.ask_user('\\ud800 which one?')", "bad_text", "'question'"),
        ("pyautogui.write('a\\udcffb')", "bad_text", "'message'"),
        ("pyautogui.typewrite(['a', '\\udcff'])", "bad_text", "'key'"),
        # F10: one reply may not keep the executor busy for minutes
        ("pyautogui.press(" + repr(["a"] * 60) + ")", "too_many_actions", "at most 50"),
        ("pyautogui.typewrite(" + repr(["a"] * 3000) + ")", "too_many_actions", "3000 actions"),
        ("pyautogui.press(" + repr(["a"] * 11) + ", presses=50)", "too_many_keys", "at most 500"),
        ("\n".join(["pyautogui.press('tab', presses=50)"] * 11), "too_many_keys", "550 key presses"),
        ("\n".join(["time.sleep(120)"] * 2), "too_long_wait", "at most 120"),
        ("\n".join(["pyautogui.dragTo(0.5, 0.5, duration=10)"] * 13), "too_long_wait", "130 seconds"),
        ("\n".join(["pyautogui.write('" + "x" * 2000 + "')"] * 3), "too_long", "at most 4000"),
        # F14: invisible and control characters in typed text
        ("pyautogui.write('hi\\U000e0069\\U000e0067\\U000e006e')", "hidden_text", "TAG LATIN SMALL LETTER I"),
        ("pyautogui.write('a\\u3164b')", "hidden_text", "U+3164"),
        ("pyautogui.write('\\u115f\\u1160')", "hidden_text", "U+115F"),
        ("pyautogui.write('a\\uffa0')", "hidden_text", "U+FFA0"),
        ("pyautogui.write('a\\u034fb')", "hidden_text", "COMBINING GRAPHEME JOINER"),
        ("pyautogui.write('ok\\ufe0f\\ufe0f')", "hidden_text", "U+FE0F"),
        ("pyautogui.write('\\ufe0fok')", "hidden_text", "U+FE0F"),
        ("pyautogui.write('a\\u17b4')", "hidden_text", "U+17B4"),
        ("pyautogui.write('\\ufff9note\\ufffb')", "hidden_text", "U+FFF9"),
        ("pyautogui.write('a\\u2800b')", "hidden_text", "U+2800"),
        ("pyautogui.write('a\\u2028b')", "hidden_text", "U+2028"),
        ("pyautogui.write('\\x1b[2Jclear')", "hidden_text", "U+001B (a control character)"),
        ("pyautogui.write('nul\\x00')", "hidden_text", "U+0000"),
        ("pyautogui.write('cr\\r')", "hidden_text", "U+000D"),
        ("pyautogui.write('\\ue000')", "hidden_text", "U+E000"),
    ],
)
def test_hostile_replies_are_refused_naming_what_and_why(code: str, kind: str, named: str) -> None:
    with pytest.raises(ReplyError) as info:
        parse_code(code, allow_corner=True)
    assert info.value.kind == kind
    assert named in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "text",
    ["line one\nline two\tcolumn", "中文 テキスト 한국어", "❤️ and ❤️\u200d🔥", "#️⃣ 1️⃣", "👍🏽", "👩\u200d💻",
     "葛\U000e0100城", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "≩\ufe00", "٠١٢ \u0600١",
     "می\u200cخواهم"],
)
def test_text_that_uses_joiners_selectors_and_tags_as_writing_does_is_typed(text: str) -> None:
    assert one(f"pyautogui.write({text!r})") == TypeText(text=text)


def test_per_reply_limits_leave_room_for_real_replies() -> None:
    busy = "\n".join(["pyautogui.hotkey('ctrl', 'a')", "pyautogui.press('backspace', presses=50)",
                      "pyautogui.write('" + "x" * 2000 + "')", "pyautogui.press(['tab', 'tab', 'tab'])",
                      "pyautogui.write('" + "y" * 1999 + "')", "time.sleep(60)", "computer.wait(30)",
                      "pyautogui.moveTo(0.2, 0.2)", "pyautogui.dragTo(0.8, 0.8, duration=2)", "pyautogui.press('enter')"])
    actions, _ = parse_code(busy)
    assert len(actions) == 11
    many_presses = "\n".join(["pyautogui.press('down', presses=25)"] * 20)
    assert len(parse_code(many_presses)[0]) == 20  # 500 presses: exactly the limit
    with pytest.raises(ReplyError) as info:
        parse_code(many_presses, limits=ParseLimits(max_key_presses=499))
    assert info.value.kind == "too_many_keys"
