"""`compare_pdfs`: how alike two PDFs' texts are (OSWorld's `metrics/chrome.py`, same score).

The text of each PDF is its pages' extracted text, one page after another, stripped (pypdf here,
PyMuPDF in OSWorld; on Chromium-printed PDFs the two give scores within 0.0002); the score of a pair is rapidfuzz's `fuzz.ratio` / 100, the normalized Indel similarity
that OSWorld uses, and several pairs score their mean. A file that is missing or not a readable PDF
scores its pair 0, as in OSWorld.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
    """Mean text similarity of the PDFs `result[i]` and `expected[i]` (single paths or lists)."""
    results = result if isinstance(result, list) else [result]
    expecteds = expected if isinstance(expected, list) else [expected]
    if not expecteds:
        return 0.0
    total = 0.0
    for a, b in zip(results, expecteds, strict=False):
        if a is None or b is None:
            continue
        try:
            total += text_similarity(pdf_text(a), pdf_text(b))
        except (FileNotFoundError, ValueError) as e:
            log.info("compare_pdfs: %s", e)
    return total / len(expecteds)
