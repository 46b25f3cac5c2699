"""`compare_pdfs`: how alike two PDFs' texts are (OSWorld's `metrics/chrome.py`, same score).

The text of each PDF is its pages' extracted text, one page after another, stripped (pypdf here,
PyMuPDF in OSWorld; on Chromium-printed PDFs the two give scores within 0.0002); the score of a pair is rapidfuzz's `fuzz.ratio` / 100, the normalized Indel similarity
that OSWorld uses, and several pairs score their mean. Pairs are formed as OSWorld forms them (a
list of results needs a list of expected PDFs). A file that is missing or not a readable PDF scores its
pair 0, as in OSWorld; so does a null path, which OSWorld reads as an empty document
(docs/osworld-compat.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.metrics import no_result
from kimi_agent.tasks.registry import metric

log = logging.getLogger("kimi_agent.tasks")


def pdf_text(path: str | Path) -> str:
    """Every page's text, in page order, each ending with one newline (as PyMuPDF's text does),
    stripped at both ends; raises ValueError when `path` is
    not a readable PDF and FileNotFoundError when it is missing."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(str(path))
        texts = [(page.extract_text() or "").rstrip("\n") for page in reader.pages]
        return "".join(t + "\n" for t in texts if t).strip()
    except FileNotFoundError:
        raise
    except (PyPdfError, OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable PDF: {type(e).__name__}: {e}") from e


def text_similarity(a: str, b: str) -> float:
    """rapidfuzz `fuzz.ratio(a, b) / 100`: 1 - Indel distance / (len(a) + len(b)); 1 for two ''."""
    from rapidfuzz import fuzz

    return float(fuzz.ratio(a, b)) / 100.0


@metric("compare_pdfs")
def compare_pdfs(result: str | list[str | None] | None, expected: str | list[str | None] | None) -> float:
    """Mean text similarity of the PDFs `result[i]` and `expected[i]`, over `len(expected)` pairs.

    As in OSWorld: an `expected` that is no list pairs with `result` as a whole (a list there is no
    path: 0); a list pairs element-wise with a `result` list (missing pairs score 0), and a `result`
    path against it makes no PDF pair (0); an empty list, or null against a list, has no score."""
    fn = "compare_pdfs"
    if not isinstance(expected, list):
        results: list[object] = [result]
        expecteds: list[object] = [expected]
    elif not expected:  # OSWorld divides by len(expected)
        raise EvaluationError(f"{fn}: expected is an empty list of PDFs")
    elif result is None:
        raise no_result(fn, "result PDFs to compare with the list of expected PDFs")
    elif not isinstance(result, list):  # OSWorld pairs the path's characters with the expected PDFs
        return 0.0
    else:
        results, expecteds = list(result), list(expected)
    total = 0.0
    for a, b in zip(results, expecteds, strict=False):
        if not isinstance(a, str) or not isinstance(b, str):  # null, or a list where a path belongs
            continue
        try:
            total += text_similarity(pdf_text(a), pdf_text(b))
        except (FileNotFoundError, ValueError) as e:
            log.info("compare_pdfs: %s", e)
    return total / len(expecteds)
