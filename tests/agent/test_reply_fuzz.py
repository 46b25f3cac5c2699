"""Property test: any text, random or a mutated real reply, gives a Step or a ReplyError.

Hypothesis draws the inputs; to keep the per-example overhead off the bill, each example also
expands a drawn seed into a batch of further random/mutated replies. Counted cases:
2 x (3,000 examples x (1 + 20 batch)) = 126,000 replies, plus 3 x 600 hostile replies (numbers out of
range, look-alike names, hidden characters in typed text) that must be refused with the right kind.
"""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.replies import INFEASIBLE, KIMI_NON_THINKING, KIMI_THINKING, MULTI_FENCE, OPENCUA_L2, TERMINATE

from kimi_agent.actions.unicode_rules import BIDI_CONTROLS, JOINERS, ZERO_WIDTH, hidden_characters
from kimi_agent.errors import ReplyError
from kimi_agent.reply import Step, parse_reply

EXAMPLES, BATCH = 3_000, 20
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SEEDS = [KIMI_NON_THINKING, KIMI_THINKING, OPENCUA_L2, MULTI_FENCE, TERMINATE, INFEASIBLE]
TOKENS = ["```", "```python\n", "## Code:\n", "## Action:\n", "## Thought\n", "◁think▷", "◁/think▷",
          "pyautogui.click(", "pyautogui.write(", "pyautogui.hotkey(", "pyautogui.dragTo(", "computer.terminate(",
          "computer.wait()", "time.sleep(", ")", "(", ",", "'", '"', "x=", "y=", "0.5", "-1", "1e999", "0",
          "\n", " ", "[", "]", "__import__", "lambda", "*", "**", "\\", "\x00", "\ud800", "status=", "'success'",
          "((((((((((", "-" * 50, "pyautogui.press(['a', 'enter'])", "f'{x}'", "0.99999", "1.0000001"]

random_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=40).map("".join)


def _mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 6)):
        i = rng.randint(0, len(text))
        j = rng.randint(i, min(len(text), i + 12))
        piece = rng.choice(TOKENS) if rng.random() < 0.7 else "".join(
            chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 4)))
        text = text[:i] + piece + text[j:]
    return text


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4))) + text[j:]
    return text


def _check(text: str) -> None:
    result = parse_reply(text, screenshot_size=(1920, 1080))
    assert isinstance(result, Step | ReplyError), repr(text)
    if isinstance(result, ReplyError):
        assert result.message and result.kind, repr(text)
    else:
        assert result.actions, repr(text)


@FUZZ
@given(random_text, st.integers(0, 2**32))
def test_random_text_never_raises(text: str, seed: int) -> None:
    _check(text)
    rng = random.Random(seed)
    for _ in range(BATCH):
        _check("".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 40))))


@FUZZ
@given(mutated(), st.integers(0, 2**32))
def test_mutated_replies_never_raise(text: str, seed: int) -> None:
    _check(text)
    rng = random.Random(seed)
    for _ in range(BATCH):
        _check(_mutate(rng.choice(SEEDS), rng))



# ---- hostile values: huge numbers, look-alike names, hidden characters ------------------------

HOSTILE_EXAMPLES = 600
HOSTILE = settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
NUMERIC_CALLS = ["pyautogui.click({n}, 0.5)", "pyautogui.click(0.5, y={n})", "pyautogui.click(0.5, 0.5, clicks={n})",
                 "pyautogui.scroll({n})", "pyautogui.press('tab', presses={n})", "time.sleep({n})",
                 "computer.wait({n})", "pyautogui.dragTo(0.5, 0.5, duration={n})", "pyautogui.hscroll({n}, 0.5, 0.5)"]
HIDDEN = sorted(BIDI_CONTROLS | ZERO_WIDTH | JOINERS)
FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}

huge_ints = st.one_of(st.integers(min_value=10**6 + 1, max_value=10**4000), st.integers(max_value=-(10**6) - 1,
                                                                                          min_value=-(10**4000)))
huge_floats = st.one_of(st.floats(min_value=1e6, exclude_min=True, allow_infinity=True, allow_nan=False),
                        st.floats(max_value=-1e6, exclude_max=True, allow_infinity=True, allow_nan=False))


def _fence(code: str) -> str:
    return f"## Action:\nDo it.\n\n## Code:\n```python\n{code}\n```\n"


def _literal(n: int | float) -> str:
    return repr(n) if isinstance(n, int) or abs(n) != float("inf") else ("1e999" if n > 0 else "-1e999")


@HOSTILE
@given(st.sampled_from(NUMERIC_CALLS), st.one_of(huge_ints, huge_floats))
def test_out_of_range_numbers_are_reply_errors(template: str, n: int | float) -> None:
    result = parse_reply(_fence(template.format(n=_literal(n))), screenshot_size=(1920, 1080))
    assert isinstance(result, ReplyError), (template, n)
    assert result.kind in {"out_of_range", "not_finite", "syntax"}, result  # > 4300 digits: Python refuses


@HOSTILE
@given(st.sampled_from(["pyautogui.click(0.5, 0.5)", "pyautogui.write('hi')", "pyautogui.hotkey('ctrl', 'l')",
                        "computer.terminate(status='success')", "pyautogui.click(x=0.5, y=0.5)"]),
       st.lists(st.integers(0, 40), min_size=1, max_size=5))
def test_lookalike_names_are_refused(code: str, positions: list[int]) -> None:
    chars = list(code)
    letters = [i for i, c in enumerate(chars) if c in FULLWIDTH and not _in_string(code, i)]
    for p in positions:
        i = letters[p % len(letters)]
        chars[i] = FULLWIDTH.get(chars[i], chars[i])
    result = parse_reply(_fence("".join(chars)))
    assert isinstance(result, ReplyError) and result.kind == "identifier", (chars, result)


def _in_string(code: str, i: int) -> bool:
    return code[:i].count("'") % 2 == 1


@HOSTILE
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="'\\"),
               min_size=1, max_size=30),
       st.sampled_from(HIDDEN), st.integers(0, 30))
def test_hidden_characters_in_typed_text_are_refused(text: str, hidden: str, at: int) -> None:
    typed = text[: at % (len(text) + 1)] + hidden + text[at % (len(text) + 1):]
    result = parse_reply(_fence(f"pyautogui.write('{typed}')"))
    if hidden_characters(typed):
        assert isinstance(result, ReplyError) and result.kind == "hidden_text", (typed, result)
    else:  # a joiner between two non-ASCII characters (an emoji sequence, Persian ZWNJ) is text
        assert hidden in JOINERS
        assert isinstance(result, Step | ReplyError)
        if isinstance(result, Step):
            assert result.actions[0].text == typed  # type: ignore[union-attr]
    assert isinstance(result, Step | ReplyError)
