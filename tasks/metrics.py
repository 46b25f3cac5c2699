"""Metrics: pure functions `(result, expected, **options) -> float` in [0, 1], registered by name.

Semantics follow OSWorld's `desktop_env/evaluators/metrics/{general,chrome}.py` (same names, same
rule shapes, same edge cases such as "an empty result scores 0"); the code is our own. An unknown
rule `type`, a rule field of the wrong JSON type, and a regex that is invalid or too slow raise
`EvaluationError` naming the metric and the field; so does a getter's value that OSWorld's metric
raises on (null, a missing key), where OSWorld's example ends without a score. Work on task-file input is bounded: regexes run
with a timeout, expected lists are capped at `MAX_ITEMS`, and no check is quadratic.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import regex
import tldextract

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.registry import metric
from kimi_agent.tasks.spec import GetterConfig, TaskFieldError

MAX_ITEMS = 10_000  # entries of one expected list (keywords, domains, urls...)
MAX_KEYWORDS = 1_000  # check_history_deleted's keywords
MAX_KEYWORD_CHARS = 100_000  # all of them together: the size of its keyword trie (OSWorld's one keyword has 7)
MAX_BOOKMARK_OPTIONS = 1_000  # URL strings in `liked_authors_websites_urls`, all lists together
REGEX_TIMEOUT_S = 2.0  # all patterns of one metric call together
MAX_REGEX_EXPANSION = 10_000  # pattern nodes; `regex` unrolls counted repeats when compiling (a{5000000}: 1.3 GB)
# Characters of one pattern, and of all patterns of one metric: `regex` does not check its timeout while it
# matches a long literal, which costs ~n^3 (1,000 characters: 0.3 s against a long URL; 4,000: 18 s).
# OSWorld's longest is 78.
MAX_PATTERN_CHARS = 1_000
MAX_PATTERNS_CHARS = 5_000

# OSWorld drops the public suffix with tldextract's default extractor; this one reads the snapshot
# of the public suffix list that the package ships and never fetches it.
_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
_SRE: Any = importlib.import_module("re._parser")  # re's own parser, to size a pattern before compiling


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def require_object(fn: str, value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvaluationError(f"{fn}: {field} must be an object, not {_kind(value)}")
    return value


def require_key(fn: str, obj: dict[str, Any], key: str, field: str) -> Any:
    if key not in obj:
        raise EvaluationError(f"{fn}: {field}.{key} is missing")
    return obj[key]


def require_str(fn: str, value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise EvaluationError(f"{fn}: {field} must be a string, not {_kind(value)}")
    return value


def require_str_list(fn: str, value: Any, field: str, *, cap: int = MAX_ITEMS) -> list[str]:
    """`value` as a list of at most `cap` strings (a string is refused, not read letter by letter)."""
    if not isinstance(value, list):
        raise EvaluationError(f"{fn}: {field} must be an array of strings, not {_kind(value)}")
    if len(value) > cap:
        raise EvaluationError(f"{fn}: {field} has {len(value)} entries, more than {cap}")
    for i, v in enumerate(value):
        require_str(fn, v, f"{field}[{i}]")
    return value


def no_result(fn: str, what: str) -> EvaluationError:
    """The error for a getter's null where OSWorld's metric raises on it (the example ends without a
    score there): `"{fn}: no {what} (the getter returned null)"`."""
    return EvaluationError(f"{fn}: no {what} (the getter returned null)")


def _rule_type_error(fn: str, rule: dict[str, Any]) -> EvaluationError:
    return EvaluationError(f"{fn}: rule type {rule.get('type')!r} is not supported")


def _rule(fn: str, rule: Any) -> tuple[dict[str, Any], Any]:
    """The rules object and its `type`."""
    rule = require_object(fn, rule, "rules")
    return rule, require_key(fn, rule, "type", "rules")


def _expanded_size(items: Any) -> int:
    """How many nodes `regex` builds for a parsed `re` pattern: counted repeats are unrolled to their minimum."""
    total = 0
    for op, av in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            total += max(av[0], 1) * _expanded_size(av[2])
        elif name == "SUBPATTERN":
            total += _expanded_size(av[3])
        elif name == "BRANCH":
            total += sum(_expanded_size(b) for b in av[1])
        elif name in ("ASSERT", "ASSERT_NOT"):
            total += _expanded_size(av[1])
        elif name == "ATOMIC_GROUP":
            total += _expanded_size(av)
        elif name == "GROUPREF_EXISTS":
            total += _expanded_size(av[1]) + (_expanded_size(av[2]) if av[2] else 0)
        else:
            total += 1
        if total > MAX_REGEX_EXPANSION:
            return total
    return total


def check_pattern(fn: str, field: str, pattern: Any) -> Any:
    """`pattern` compiled (Python `re` syntax, run by `regex`, whose VERSION0 has `re`'s semantics);
    `EvaluationError` when it is not a string, not a valid `re` pattern, or too large to compile."""
    pattern = require_str(fn, pattern, field)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise EvaluationError(f"{fn}: {field} is a regex of {len(pattern)} characters, more than {MAX_PATTERN_CHARS}")
    try:  # re's parser, not its compiler: compiling (?i)[\u0000-\uffff] walks every code point (5 ms a range)
        size = _expanded_size(_SRE.parse(pattern))
    except (re.error, OverflowError, RecursionError) as e:
        raise EvaluationError(f"{fn}: {field} {pattern[:200]!r} is not a valid regex: {e}") from None
    if size > MAX_REGEX_EXPANSION:
        raise EvaluationError(f"{fn}: {field} {pattern[:200]!r} repeats too much (over "
                              f"{MAX_REGEX_EXPANSION} nodes once counted repeats are unrolled)")
    try:
        return regex.compile(pattern, flags=regex.VERSION0)
    except (regex.error, OverflowError, RecursionError, MemoryError) as e:
        raise EvaluationError(f"{fn}: {field} {pattern[:200]!r} is not a valid regex: {e}") from None


def _check_patterns_size(fn: str, patterns: list[str]) -> None:
    """`EvaluationError` when the patterns of one metric hold more than `MAX_PATTERNS_CHARS` characters."""
    total = sum(len(p) for p in patterns)
    if total > MAX_PATTERNS_CHARS:
        raise EvaluationError(f"{fn}: rules.expected holds {total} characters of regexes, more than {MAX_PATTERNS_CHARS}")


def regex_search(fn: str, field: str, compiled: Any, text: str, *, deadline: float) -> bool:
    """Whether `compiled` (from `check_pattern`) is found in `text`, like `re.search`;
    `EvaluationError` when the search runs past `deadline` (`time.monotonic()`)."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        return compiled.search(text, timeout=left) is not None
    except TimeoutError:
        raise EvaluationError(f"{fn}: {field} {compiled.pattern[:200]!r} did not finish within "
                              f"{REGEX_TIMEOUT_S:g} s on a {len(text)}-character text "
                              f"(catastrophic backtracking?)") from None


def _normalize_host(netloc: str) -> str:
    """Host without a lone `www` subdomain and without its public suffix (OSWorld's tldextract rule);
    IPs are kept whole, and so is the port (OSWorld drops it: docs/osworld-compat.md)."""
    host, sep, port = netloc.lower().rpartition(":")
    if not sep or not port.isdigit():
        host, port = netloc.lower(), ""
    parts = _TLD(host)
    sub = "" if parts.subdomain == "www" else parts.subdomain
    name = f"{sub}.{parts.domain}" if sub else parts.domain
    return name + (f":{port}" if port else "")


def normalize_url(url: str, *, full: bool = True) -> str:
    """OSWorld's URL normal form: default scheme http, no www, no public suffix, no lone '/' path."""
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+\-.]*://", url):
        url = f"http://{url}"
    p = urlparse(url)
    path = "" if p.path == "/" else p.path
    return urlunparse((p.scheme.lower(), _normalize_host(p.netloc), path,
                       p.params if full else "", p.query if full else "", p.fragment if full else ""))


def compare_urls(a: str | None, b: str | None, *, full: bool = True) -> bool:
    if a is None or b is None:
        return a == b
    return normalize_url(a, full=full) == normalize_url(b, full=full)


def _normalized(fn: str, url: Any, field: str) -> str:
    """`normalize_url(url)`; `EvaluationError` naming `field` when `url` is no string or no URL."""
    try:
        return normalize_url(require_str(fn, url, field))
    except ValueError as e:
        raise EvaluationError(f"{fn}: {field} {url[:200]!r} is not a URL: {e}") from None


def _tab_url(fn: str, info: Any) -> str | None:
    """The URL of an active tab given as its URL or as an `active_tab_info` object (whose `url` may be
    missing or null: no URL); `EvaluationError` for any other value, where OSWorld's URL parsing raises."""
    url = info.get("url") if isinstance(info, dict) else info
    if url is not None and not isinstance(url, str):
        raise EvaluationError(f"{fn}: the result must be a URL or a tab object with a url string, not {_kind(info)}"
                              + (f" with a {_kind(url)} url" if isinstance(info, dict) else ""))
    return url


def _rules_expected(fn: str, rules: Any) -> Any:
    return require_key(fn, require_object(fn, rules, "rules"), "expected", "rules")


@metric("exact_match")
def exact_match(result: Any, rules: dict[str, Any]) -> float:
    return 1.0 if result == _rules_expected("exact_match", rules) else 0.0


@metric("match_in_list")
def match_in_list(result: Any, rules: dict[str, Any]) -> float:
    """1 if `result` is in `rules["expected"]`: an element of a list or, as in OSWorld, a substring
    of a string."""
    fn = "match_in_list"
    expected = _rules_expected(fn, rules)
    if isinstance(expected, str):  # OSWorld's `result in expected` raises for anything but a string
        if result is None:
            raise no_result(fn, "result")
        if not isinstance(result, str):
            raise EvaluationError(f"{fn}: the result must be a string to look up in the text rules.expected, "
                                  f"not {_kind(result)}")
        return 1.0 if result in expected else 0.0
    if not isinstance(expected, list):
        raise EvaluationError(f"{fn}: rules.expected must be an array or a string, not {_kind(expected)}")
    return 1.0 if result in expected else 0.0


@metric("is_in_list")
def is_in_list(result: Any, rules: dict[str, Any]) -> float:
    """1 if `rules["expected"]` is an element of (or substring of) `result`."""
    expected = _rules_expected("is_in_list", rules)
    if result is None:  # OSWorld's `expected in None` raises
        raise no_result("is_in_list", "result")
    if isinstance(result, str) and not isinstance(expected, str):
        raise EvaluationError(f"is_in_list: rules.expected must be a string to find in a text, not {_kind(expected)}")
    if not isinstance(result, str | list | tuple | dict):
        raise EvaluationError(f"is_in_list: the result must be an array or a string, not {_kind(result)}")
    try:
        return 1.0 if expected in result else 0.0
    except TypeError as e:  # an array or object looked up among an object's keys
        raise EvaluationError(f"is_in_list: rules.expected cannot be looked up in the result: {e}") from None


@metric("literal_match")
def literal_match(result: Any, expected: Any, *, type: str = "str", ignore_case: bool = False) -> float:
    def norm(v: Any) -> str:
        return str(v).lower() if ignore_case else str(v)
    if type == "str":
        return float(norm(result) == norm(expected))
    if type == "list":
        if not isinstance(result, list | tuple) or not isinstance(expected, list | tuple):
            return 0.0
        return float([norm(v) for v in result] == [norm(v) for v in expected])
    raise EvaluationError(f"literal_match: options.type {type!r} is not supported")


def _number(fn: str, value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluationError(f"{fn}: {field} must be a number, not {_kind(value)}")
    return value


@metric("check_font_size")
def check_font_size(font_size: dict[str, Any], rule: dict[str, Any]) -> float:
    fn = "check_font_size"
    size = require_key(fn, require_object(fn, font_size, "the result"), "default_font_size", "the result")
    rule, kind = _rule(fn, rule)
    if kind == "value":
        return 1.0 if size == require_key(fn, rule, "value", "rules") else 0.0
    if kind == "range":
        low = _number(fn, require_key(fn, rule, "min", "rules"), "rules.min")
        high = _number(fn, require_key(fn, rule, "max", "rules"), "rules.max")
        return 1.0 if low < _number(fn, size, "the result's default_font_size") < high else 0.0
    raise _rule_type_error(fn, rule)


def _bookmark_entries(fn: str, node: Any, field: str) -> list[dict[str, Any]]:
    """The entries of a bookmark folder's `children`, each an object with a `type` (Chromium writes
    both; OSWorld's metric raises without them)."""
    children = require_key(fn, require_object(fn, node, field), "children", field)
    if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
        raise EvaluationError(f"{fn}: {field}.children must be an array of objects")
    for i, c in enumerate(children):
        require_key(fn, c, "type", f"{field}.children[{i}]")
    return children


def _bookmark_values(fn: str, entries: list[dict[str, Any]], kind: str, key: str, field: str) -> list[Any]:
    """`entry[key]` of every entry of type `kind`; `EvaluationError` naming the entry that lacks it."""
    return [require_key(fn, e, key, f"{field}.children[{i}]") for i, e in enumerate(entries) if e["type"] == kind]


def _bookmark_options(fn: str, urls: Any) -> list[list[str]]:
    """`rules.urls` of `liked_authors_websites_urls`: one entry per bookmark, a URL or a list of
    acceptable URLs."""
    if not isinstance(urls, list):
        raise EvaluationError(f"{fn}: rules.urls must be an array, not {_kind(urls)}")
    options = [[u] if isinstance(u, str) else require_str_list(fn, u, f"rules.urls[{i}]")
               for i, u in enumerate(urls)]
    if sum(len(o) for o in options) > MAX_BOOKMARK_OPTIONS:
        raise EvaluationError(f"{fn}: rules.urls holds more than {MAX_BOOKMARK_OPTIONS} URLs")
    return options


def can_pick_exactly(options: list[list[str]], have: set[str]) -> bool:
    """Whether one pick from each list in `options` gives exactly the set `have` (OSWorld tries every
    combination of `product(*options)`: 2**40 of them for 40 pairs)."""
    # Picks c_i in O_i with {c_i} == H exist iff every O_i meets H and H matches into distinct lists
    # (h in O_i): a surjection holds such a matching; conversely the unmatched lists pick any h in O_i.
    allowed = [[u for u in dict.fromkeys(o) if u in have] for o in options]
    if len(have) > len(options) or not all(allowed):
        return False
    lists_of: dict[str, list[int]] = {h: [] for h in have}
    for i, a in enumerate(allowed):
        for u in a:
            lists_of[u].append(i)
    owner: dict[int, str] = {}  # list index -> the element of `have` it is matched to
    return all(_augment(h, lists_of, owner) for h in have)


def _augment(start: str, lists_of: dict[str, list[int]], owner: dict[int, str]) -> bool:
    """Kuhn's step, iteratively: match `start` to a list, moving earlier matches along an alternating path."""
    seen: set[int] = set()
    stack = [(start, iter(lists_of[start]))]
    path: list[int] = []  # path[k]: the list that frame k's element takes if the path completes
    while stack:
        for i in stack[-1][1]:
            if i in seen:
                continue
            seen.add(i)
            path.append(i)
            if i not in owner:
                for (h, _), j in zip(stack, path, strict=True):
                    owner[j] = h
                return True
            stack.append((owner[i], iter(lists_of[owner[i]])))
            break
        else:
            stack.pop()
            if path:
                path.pop()
    return False


@metric("is_expected_bookmarks")
def is_expected_bookmarks(bookmarks: dict[str, Any] | None, rule: dict[str, Any]) -> float:
    """`bookmarks` is the `roots` object of Chromium's Bookmarks file."""
    fn = "is_expected_bookmarks"
    rule, kind = _rule(fn, rule)
    if not bookmarks:
        return 0.0
    # Chromium's Bookmarks file always has `bookmark_bar` (the getter gives {} when there is no file)
    where = "the result's bookmark_bar"
    bar = _bookmark_entries(fn, require_key(fn, require_object(fn, bookmarks, "the result"), "bookmark_bar",
                                            "the result"), where)
    if kind == "bookmark_bar_folders_names":
        names = set(_bookmark_values(fn, bar, "folder", "name", where))
        return 1.0 if names == set(require_str_list(fn, require_key(fn, rule, "names", "rules"), "rules.names")) else 0.0
    if kind == "bookmark_bar_websites_urls":
        urls = set(_bookmark_values(fn, bar, "url", "url", where))
        return 1.0 if urls == set(require_str_list(fn, require_key(fn, rule, "urls", "rules"), "rules.urls")) else 0.0
    if kind == "liked_authors_websites_urls":
        options = _bookmark_options(fn, require_key(fn, rule, "urls", "rules"))
        folder = next((b for i, b in enumerate(bar) if b["type"] == "folder"
                       and require_key(fn, b, "name", f"{where}.children[{i}]") == "Liked Authors"), None)
        if folder is None:
            return 0.0
        liked = "the 'Liked Authors' folder"
        liked_urls = _bookmark_values(fn, _bookmark_entries(fn, folder, liked), "url", "url", liked)
        if not all(isinstance(u, str) for u in liked_urls):
            return 0.0  # a null URL equals no expected URL
        return 1.0 if can_pick_exactly(options, set(liked_urls)) else 0.0
    raise _rule_type_error(fn, rule)


@metric("is_expected_tabs")
def is_expected_tabs(open_tabs: list[dict[str, str]] | None, rule: dict[str, Any]) -> float:
    """The open tabs' URLs equal `rules.urls` as sets of normalized URLs, with the same length."""
    fn = "is_expected_tabs"
    rule, kind = _rule(fn, rule)
    if kind != "url":
        raise _rule_type_error(fn, rule)
    expected = require_str_list(fn, require_key(fn, rule, "urls", "rules"), "rules.urls")
    if not open_tabs:
        return 0.0
    if not isinstance(open_tabs, list) or not all(isinstance(t, dict) and "url" in t for t in open_tabs):
        raise EvaluationError(f"{fn}: the result must be an array of tabs with a url")
    if len(expected) != len(open_tabs):
        return 0.0
    # OSWorld: every expected URL equals (compare_urls) some tab's URL; a tab URL of null equals none.
    have = {_normalized(fn, t["url"], f"the result's tab {i} url")
            for i, t in enumerate(open_tabs) if t["url"] is not None}
    return 1.0 if all(_normalized(fn, u, f"rules.urls[{i}]") in have for i, u in enumerate(expected)) else 0.0


@metric("is_expected_active_tab")
def is_expected_active_tab(active_tab: Any, rule: dict[str, Any]) -> float:
    fn = "is_expected_active_tab"
    rule, kind = _rule(fn, rule)
    if kind != "url":
        raise _rule_type_error(fn, rule)
    want = _normalized(fn, require_key(fn, rule, "url", "rules"), "rules.url")
    if not active_tab:
        return 0.0
    actual = _tab_url(fn, active_tab)
    return 1.0 if actual is not None and _normalized(fn, actual, "the result's url") == want else 0.0


def _strip_query(fn: str, url: str, field: str) -> str:
    try:
        return urlunparse(urlparse(url)._replace(query=""))
    except ValueError as e:
        raise EvaluationError(f"{fn}: {field} {url[:200]!r} is not a URL: {e}") from None


@metric("is_expected_active_tab_approximate")
def is_expected_active_tab_approximate(active_tab: Any, rule: dict[str, Any]) -> float:
    fn = "is_expected_active_tab_approximate"
    rule, kind = _rule(fn, rule)
    if kind != "url":
        raise _rule_type_error(fn, rule)
    want = _strip_query(fn, require_str(fn, require_key(fn, rule, "url", "rules"), "rules.url"), "rules.url")
    if not active_tab:
        return 0.0
    actual = _tab_url(fn, active_tab)
    return 1.0 if actual is not None and _strip_query(fn, actual, "the result's url") == want else 0.0


def _url_patterns(fn: str, texts: list[Any]) -> list[tuple[str, Any]]:
    """(field, compiled) of each of `rules.expected`, checked by `check_pattern` and, together, by
    `_check_patterns_size`; `EvaluationError` naming the field otherwise."""
    patterns = [(f"rules.expected[{i}]", check_pattern(fn, f"rules.expected[{i}]", p)) for i, p in enumerate(texts)]
    _check_patterns_size(fn, texts)
    return patterns


def _check_url_patterns(expected: GetterConfig) -> list[str]:
    """Load-time check of the metric's `expected` (a `rule` getter): `_url_patterns` of its
    `rules.expected`, its EvaluationError a `TaskFieldError` on the field it names (the task is then
    invalid before it runs, not an error after its episode)."""
    fn = "is_expected_url_pattern_match"
    rules = expected.params.get("rules") if expected.type == "rule" else None
    patterns = rules.get("expected") if isinstance(rules, dict) else None
    if not isinstance(patterns, list):
        return []  # a shape the metric itself reports when it runs
    try:
        _url_patterns(fn, patterns)
    except EvaluationError as e:  # "fn: <field> <reason>"
        field, _, reason = str(e).removeprefix(f"{fn}: ").partition(" ")
        raise TaskFieldError(field, reason) from None
    return []


@metric("is_expected_url_pattern_match", check=_check_url_patterns)
def is_expected_url_pattern_match(result: Any, rules: dict[str, Any]) -> float:
    """Every regex in `rules["expected"]` must be found in the URL (`re.search`, with a time bound)."""
    fn = "is_expected_url_pattern_match"
    patterns = _url_patterns(fn, require_str_list(fn, _rules_expected(fn, rules), "rules.expected"))
    if not result or not isinstance(result, str | dict) or (isinstance(result, dict) and "url" not in result):
        return 0.0  # OSWorld: no URL, or a value of another shape, scores 0
    url = result if isinstance(result, str) else result["url"]
    if not isinstance(url, str):  # OSWorld's re.search raises on it
        raise EvaluationError(f"{fn}: the result's url must be a string, not {_kind(url)}")
    deadline = time.monotonic() + REGEX_TIMEOUT_S
    return 1.0 if all(regex_search(fn, field, c, url, deadline=deadline) for field, c in patterns) else 0.0


@metric("check_direct_json_object")
def check_direct_json_object(result: Any, rules: dict[str, Any]) -> float:
    """Compare a JSON object with `rules["expected"]` key by key (or by containment with
    `expect_in_result`); a result that is not a JSON object scores 0."""
    fn = "check_direct_json_object"
    expected = require_object(fn, _rules_expected(fn, rules), "rules.expected")
    if isinstance(result, str):
        try:
            result = json.loads(result.strip().replace("'", '"'))
        except (json.JSONDecodeError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return 0.0
    if not isinstance(result, dict):
        return 0.0
    if any(v == "__EVALUATION_FAILED__" for v in expected.values()):
        return 0.0
    # OSWorld reads `ignore_list_order` inside `expected` only, but the real task that uses it
    # (f5d96daf) puts it next to `expected`: both places count here (docs/osworld-compat.md).
    ignore_order = bool(rules.get("ignore_list_order", False) or expected.get("ignore_list_order", False))
    if not rules.get("expect_in_result", False):
        for key, want in expected.items():
            have = result.get(key)
            if ignore_order:
                if not isinstance(want, list) or not isinstance(have, list):
                    return 0.0
                try:
                    if sorted(want) != sorted(have):
                        return 0.0
                except TypeError:  # values that do not order: OSWorld's except scores 0
                    return 0.0
            elif want != have:
                return 0.0
        return 1.0
    for key, want in expected.items():
        have = result.get(key)
        if isinstance(want, list):
            if not any((isinstance(have, list) and w in have) or (isinstance(have, str) and w == have)
                       for w in want):
                return 0.0
        elif isinstance(want, str):
            # OSWorld's `want in have`: a substring of a string, an element of an array, a key of an object
            if not isinstance(have, str | list | dict) or want not in have:
                return 0.0
        else:
            return 0.0
    return 1.0


def _column(fn: str, rows: Any, index: int, what: str) -> list[Any]:
    """Column `index` of SQL result rows."""
    if not isinstance(rows, list | tuple) or not all(isinstance(r, Sequence) and not isinstance(r, str)
                                                     and len(r) > index for r in rows):
        raise EvaluationError(f"{fn}: the result must be rows with a {what} column")
    return [r[index] for r in rows]


@metric("is_cookie_deleted")
def is_cookie_deleted(cookie_data: list[Sequence[Any]] | None, rule: dict[str, Any]) -> float:
    """`cookie_data` rows are `SELECT * FROM cookies` rows; column 1 is `host_key`."""
    fn = "is_cookie_deleted"
    rule, kind = _rule(fn, rule)
    if kind != "domains":
        raise _rule_type_error(fn, rule)
    domains = require_str_list(fn, require_key(fn, rule, "domains", "rules"), "rules.domains")
    if cookie_data is None:  # OSWorld's metric raises: no score, not "every cookie deleted"
        raise no_result(fn, "cookie data")
    hosts = [h for h in _column(fn, cookie_data, 1, "host_key") if h is not None]
    if not hosts:
        return 1.0
    # OSWorld: 0 when some domain equals (compare_urls) some host; the same as sets of normal forms.
    gone = {_normalized(fn, d, f"rules.domains[{i}]") for i, d in enumerate(domains)}
    return 0.0 if any(_normalized(fn, h, "a cookie's host_key") in gone for h in hosts) else 1.0


def _keyword_trie(keywords: list[str]) -> tuple[list[dict[str, int]], list[int], list[bool]]:
    """Aho-Corasick automaton of `keywords`: (goto, fail, hit), indexed by node (0 is the root).
    `hit[n]` says some keyword ends at node n or at a node its fail chain reaches. Time and size
    are linear in the keywords' characters."""
    goto: list[dict[str, int]] = [{}]
    hit = [False]
    for k in keywords:
        node = 0
        for ch in k:
            nxt = goto[node].get(ch)
            if nxt is None:
                nxt = goto[node][ch] = len(goto)
                goto.append({})
                hit.append(False)
            node = nxt
        hit[node] = True
    fail = [0] * len(goto)
    queue = deque(goto[0].values())  # depth-1 nodes fail to the root
    while queue:
        node = queue.popleft()
        for ch, child in goto[node].items():
            f = fail[node]
            while f and ch not in goto[f]:
                f = fail[f]
            fail[child] = goto[f].get(ch, 0)
            hit[child] = hit[child] or hit[fail[child]]
            queue.append(child)
    return goto, fail, hit


def any_keyword_in(keywords: list[str], texts: list[str]) -> bool:
    """Whether some keyword is a substring of some text (`any(k in t for k in keywords for t in
    texts)`), in time linear in the characters of both lists together (Aho-Corasick; each text is
    scanned on its own, so a match never spans two texts)."""
    longest = max(map(len, texts), default=0)
    goto, fail, hit = _keyword_trie([k for k in keywords if len(k) <= longest])  # longer ones match nothing
    if hit[0]:  # "" is in every text
        return bool(texts)
    for text in texts:
        node = 0
        for ch in text:
            while node and ch not in goto[node]:
                node = fail[node]
            node = goto[node].get(ch, 0)
            if hit[node]:
                return True
    return False


@metric("check_history_deleted")
def check_history_deleted(history_data: list[Sequence[Any]] | None, rule: dict[str, Any]) -> float:
    """`history_data` rows are `(url, title, last_visit_time)`. OSWorld: 0 when some keyword is in
    some URL; here in one pass over the URLs, however many keywords (at most MAX_KEYWORDS of at
    most MAX_KEYWORD_CHARS characters together)."""
    fn = "check_history_deleted"
    rule, kind = _rule(fn, rule)
    if kind != "keywords":
        raise _rule_type_error(fn, rule)
    keywords = require_str_list(fn, require_key(fn, rule, "keywords", "rules"), "rules.keywords", cap=MAX_KEYWORDS)
    chars = sum(map(len, keywords))
    if chars > MAX_KEYWORD_CHARS:
        raise EvaluationError(f"{fn}: rules.keywords hold {chars} characters, more than {MAX_KEYWORD_CHARS}")
    if history_data is None:  # OSWorld's metric raises: no score, not "history deleted"
        raise no_result(fn, "history data")
    urls = _column(fn, history_data, 0, "url")
    if not all(isinstance(u, str) for u in urls):
        raise EvaluationError(f"{fn}: a history url is not a string")
    return 0.0 if any_keyword_in(keywords, urls) else 1.0


@metric("infeasible")
def infeasible(reported_failure: bool) -> float:
    """Infeasible tasks: the right ending is the agent reporting failure."""
    return 1.0 if reported_failure else 0.0
