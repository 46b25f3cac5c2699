"""Unicode rules for model output: identifiers must be what they look like, typed text must not hide.

Two checks, both pure functions of a string:

- `unstable_identifiers(code)`: names in a code block that Python's parser would silently NFKC-
  normalize (`ｐｙａｕｔｏｇｕｉ.click` parses as `pyautogui.click`). The parser refuses them, so a call
  is accepted only when it is spelled exactly as the function it runs.
- `hidden_characters(text)`: invisible and control characters in text to be typed: bidi controls,
  zero-width and other default-ignorable characters (tag characters, Hangul fillers, variation
  selectors out of place), C0/C1 controls but newline and tab (ESC, NUL), other format characters,
  private-use characters, line/paragraph separators and the blank braille pattern.

Why typed text with them is *refused* (not typed and flagged): such characters are invisible in the
screenshot the model reads next, in the step record a human reviews and in most fields they land
in, yet they change what the text means (a reordered file name, a look-alike URL, a password with a
hidden extra character). Refusing keeps "what was recorded" equal to "what was seen"; the model
gets the code point and position and can type the text again without it. Real text never needs
them from the model: bidi rendering is automatic, and the two joiners, variation selectors and
tag characters are allowed where writing systems and emoji use them (👩‍💻, Persian ZWNJ, ❤️, #️⃣,
葛󠄀, the flag of England). Unassigned code points are not refused: this Python's Unicode data may
predate an emoji the model types.
"""

from __future__ import annotations

import io
import tokenize
import unicodedata

#: Explicit bidi formatting (Unicode property Bidi_Control): the Trojan Source set.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Zero-width characters that have no place in typed text.
ZERO_WIDTH = frozenset("\u200b\u2060\ufeff\u180e\u00ad\u2061\u2062\u2063\u2064")
#: Joiners: allowed only between two non-ASCII characters (emoji ZWJ sequences, Indic/Persian ZWNJ).
JOINERS = frozenset("\u200c\u200d")
#: Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters that draw
#: nothing. Among them the Hangul fillers, the combining grapheme joiner, the Khmer inherent vowels,
#: variation selectors and the tag block (Unicode "ASCII smuggling").
DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
#: Characters that draw as an empty cell though they are letters or symbols.
BLANK_GLYPHS = frozenset("\u2800")
#: Format characters that do draw (Arabic number signs and other prepended concatenation marks).
VISIBLE_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2"
                           "\U000110bd\U000110cd")
#: Control characters typed text may hold.
TEXT_CONTROLS = frozenset("\n\t")
#: Emoji presentation selectors: allowed once right after a visible character (❤️, #️⃣).
EMOJI_SELECTORS = frozenset("\ufe0e\ufe0f")
#: Other variation selectors (standardized, Mongolian): allowed once right after a non-ASCII character.
TEXT_SELECTORS = frozenset([*map(chr, range(0xFE00, 0xFE0E)), "\u180b", "\u180c", "\u180d", "\u180f"])
#: Ideographic variation selectors: allowed once right after a CJK ideograph.
IDEOGRAPHIC_SELECTORS = range(0xE0100, 0xE01F0)
#: The only tag sequences that are text: the RGI subdivision flags (England, Scotland, Wales).
_BLACK_FLAG, _CANCEL_TAG = "\U0001f3f4", "\U000e007f"
FLAG_TAGS = frozenset("".join(chr(0xE0000 + ord(c)) for c in code) + _CANCEL_TAG
                      for code in ("gbeng", "gbsct", "gbwls"))
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in DEFAULT_IGNORABLE)


def is_hidden(ch: str) -> bool:
    """Whether `ch` is invisible or a control character out of any context: a default-ignorable
    code point, a blank glyph, or in category Cc (but \\n and \\t), Cf (but the visible ones),
    Cs (a lone surrogate), Co (private use), Zl or Zp (line and paragraph separators)."""
    if ch in TEXT_CONTROLS or ch in VISIBLE_FORMAT:
        return False
    return (ch in BLANK_GLYPHS or _ignorable(ord(ch))
            or unicodedata.category(ch) in _HIDDEN_CATEGORIES)


def _base(ch: str) -> bool:
    """Whether `ch` can carry a joiner or a variation selector: a character that draws."""
    return bool(ch) and not is_hidden(ch) and not ch.isspace()


def hidden_characters(text: str) -> list[tuple[int, str]]:
    """(index, character) of every invisible or control character of `text` out of its place.

    In their place, as text uses them: a joiner between two non-ASCII characters, one variation
    selector right after the character it selects (an emoji one after any character, a standardized
    or Mongolian one after a non-ASCII character, an ideographic one after a CJK ideograph), and the
    tag characters of an England, Scotland or Wales flag. Everything `is_hidden` names is refused
    anywhere else: tag characters, Hangul fillers, C0/C1 controls such as ESC and NUL, etc.
    """
    found: list[tuple[int, str]] = []
    skip_to = 0
    for i, ch in enumerate(text):
        if i < skip_to:
            continue
        if ch == _BLACK_FLAG:
            tail = next((t for t in FLAG_TAGS if text.startswith(t, i + 1)), None)
            skip_to = i + 1 + len(tail) if tail else 0
            continue
        if not is_hidden(ch):
            continue
        before, after = text[i - 1: i], text[i + 1: i + 2]
        if ch in JOINERS:
            ok = (_base(before) and _base(after) and not before.isascii() and not after.isascii()) or (
                before in EMOJI_SELECTORS and _base(after) and not after.isascii())
        elif ch in EMOJI_SELECTORS:
            ok = _base(before)
        elif ch in TEXT_SELECTORS:
            ok = _base(before) and not before.isascii()
        elif ord(ch) in IDEOGRAPHIC_SELECTORS:
            ok = _base(before) and unicodedata.name(before, "").startswith("CJK ")
        else:
            ok = False
        if not ok:
            found.append((i, ch))
    return found


def describe_char(ch: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE)`; `U+001B (a control character)` for one without a name."""
    unnamed = {"Cc": "a control character", "Cs": "a lone surrogate", "Co": "a private-use character"}
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, '') or unnamed.get(unicodedata.category(ch), 'unnamed')})"


def unstable_identifiers(code: str) -> list[str]:
    """Names in `code` that NFKC normalization would change (they run as something else).

    `code` must already parse (`ast.parse`); tokenizer failures are left to the caller's parser,
    and any name the tokenizer cannot reach is reported as the whole remainder.
    """
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and unicodedata.normalize("NFKC", tok.string) != tok.string:
                out.append(tok.string)
    except (tokenize.TokenError, SyntaxError, ValueError) as e:
        out.append(f"<untokenizable code: {type(e).__name__}>")
    return out
