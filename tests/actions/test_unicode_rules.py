"""The invisible-text rule (notes/redteam-replies.md F14): what typed text may not hide."""

import pytest

from kimi_agent.actions.unicode_rules import describe_char, hidden_characters, is_hidden

ENGLAND = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize(
    ("text", "hidden_at"),
    [
        ("ignore\U000e0069\U000e0067\U000e006e", [6, 7, 8]),  # tag characters: ASCII smuggling
        ("🏴\U000e0069\U000e0067\U000e007f", [1, 2, 3]),  # a black flag with tags that spell no RGI flag
        ("\U000e0001x", [0]),  # LANGUAGE TAG
        ("a\u3164b\u115f\u1160\uffa0", [1, 3, 4, 5]),  # Hangul fillers
        ("a\u034fb", [1]),  # combining grapheme joiner
        ("a\ufe0f\ufe0f", [2]),  # a second emoji selector selects nothing
        ("\ufe0e", [0]),
        ("a\ufe01", [1]),  # a standardized selector after ASCII
        ("a\U000e0100", [1]),  # an ideographic selector after a Latin letter
        ("\u17b4\u17b5", [0, 1]),  # Khmer inherent vowels
        ("\ufff9a\ufffab\ufffb", [0, 2, 4]),  # interlinear annotation
        ("a\u2800", [1]),  # blank braille pattern
        ("a\u2028b\u2029", [1, 3]),  # line / paragraph separator
        ("\x1b[31mred\x00\x07\r\x85", [0, 8, 9, 10, 11]),  # C0 / C1 controls (not newline or tab)
        ("\ue000\U000f0000", [0, 1]),  # private use
        ("\u206a\u2065\ufff0", [0, 1, 2]),  # deprecated formats, unassigned default-ignorables
        ("\U0001d173", [0]),  # musical format
        ("a\u200db", [1]),  # a joiner between ASCII letters
        ("\u200d👩", [0]),
    ],
)
def test_hidden_characters_are_found_where_they_hide(text: str, hidden_at: list[int]) -> None:
    assert [i for i, _ in hidden_characters(text)] == hidden_at


@pytest.mark.parametrize(
    "text",
    ["plain ASCII, with a\ttab\nand a newline", "中文 テキスト 한국어 ελληνικά עברית العربية", "👩\u200d💻 👨\u200d👩\u200d👧",
     "❤️ ❤️\u200d🔥 ☺︎", "#️⃣ 1️⃣", "👍🏽", "葛\U000e0100", ENGLAND, "≩\ufe00", "می\u200cخواهم", "\u0600١٢",
     "a\u00a0b\u3000c", "ᠠ\u180bᠡ"],
)
def test_text_as_writing_and_emoji_use_it_passes(text: str) -> None:
    assert hidden_characters(text) == []


def test_every_format_and_control_character_but_newline_and_tab_is_hidden_alone() -> None:
    import unicodedata

    for cp in range(0x30000):
        ch = chr(cp)
        category = unicodedata.category(ch)
        if category == "Cc":
            assert is_hidden(ch) is (ch not in "\n\t"), hex(cp)
        if category in ("Cf", "Co", "Cs", "Zl", "Zp"):
            assert is_hidden(ch) or cp in (0x600, 0x601, 0x602, 0x603, 0x604, 0x605, 0x6DD, 0x70F, 0x890, 0x891,
                                           0x8E2, 0x110BD, 0x110CD), hex(cp)
    assert all(is_hidden(chr(cp)) for cp in range(0xE0000, 0xE1000))


def test_describe_char_names_control_characters() -> None:
    assert describe_char("\x1b") == "U+001B (a control character)"
    assert describe_char("\u202e") == "U+202E (RIGHT-TO-LEFT OVERRIDE)"
    assert describe_char("\U000e0069") == "U+E0069 (TAG LATIN SMALL LETTER I)"
