"""Unicode rules for model output: identifiers must be what they look like, typed text must not hide.

Two checks, both pure functions of a string:

- `unstable_identifiers(code)`: names in a code block that Python's parser would silently NFKC-
  normalize (`ｐｙａｕｔｏｇｕｉ.click` parses as `pyautogui.click`). The parser refuses them, so a call
  is accepted only when it is spelled exactly as the function it runs.
- `hidden_characters(text)`: bidi controls and zero-width characters in text to be typed.

Why typed text with them is *refused* (not typed and flagged): such characters are invisible in the
screenshot the model reads next, in the step record a human reviews and in most fields they land
in, yet they change what the text means (a reordered file name, a look-alike URL, a password with a
hidden extra character). Refusing keeps "what was recorded" equal to "what was seen"; the model
gets the code point and position and can type the text again without it. Real text never needs
them from the model: bidi rendering is automatic, and the two joiners are allowed where writing
systems use them (between two non-ASCII characters: emoji sequences such as 👩‍💻, Persian ZWNJ).
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


def hidden_characters(text: str) -> list[tuple[int, str]]:
    """(index, character) of every bidi control or misplaced zero-width character in `text`."""
    found: list[tuple[int, str]] = []
    for i, ch in enumerate(text):
        if ch in BIDI_CONTROLS or ch in ZERO_WIDTH:
            found.append((i, ch))
        elif ch in JOINERS:
            before, after = text[i - 1: i], text[i + 1: i + 2]
            if not (before and after and not before.isascii() and not after.isascii()
                    and before not in JOINERS and after not in JOINERS):
                found.append((i, ch))
    return found


def describe_char(ch: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE)`."""
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"


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
