"""Metrics: pure functions `(result, expected, **options) -> float` in [0, 1], registered by name.

Semantics follow OSWorld's `desktop_env/evaluators/metrics/{general,chrome}.py` (same names, same
rule shapes, same edge cases such as "an empty result scores 0"); the code is our own. An unknown
rule `type` raises `EvaluationError` instead of silently scoring.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any
from urllib.parse import urlparse, urlunparse

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.registry import metric

# Second-level public suffixes common in OSWorld URLs; OSWorld drops the whole public suffix
# (tldextract) so that airbnb.com and airbnb.com.sg compare equal.
_TWO_LABEL_SUFFIXES = frozenset({
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.sg", "com.au", "com.cn", "com.hk", "com.br", "co.jp",
    "co.in", "co.kr", "com.tw", "com.mx", "co.nz", "co.za", "com.tr", "com.ar", "net.au", "org.au",
})


def _rule_type_error(fn: str, rule: dict[str, Any]) -> EvaluationError:
    return EvaluationError(f"{fn}: rule type {rule.get('type')!r} is not supported")


def _normalize_host(netloc: str) -> str:
    """Host without a leading lone `www` and without its public suffix; IPs and ports are kept."""
    host, sep, port = netloc.lower().rpartition(":")
    if not sep or not port.isdigit():
        host, port = netloc.lower(), ""
    suffix = f":{port}" if port else ""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host + suffix
    except ValueError:
        pass
    labels = [label for label in host.split(".") if label]
    if len(labels) <= 1:
        return host + suffix
    cut = 2 if len(labels) > 2 and ".".join(labels[-2:]) in _TWO_LABEL_SUFFIXES else 1
    rest = labels[:-cut]
    if rest[:1] == ["www"] and len(rest) == 2:
        rest = rest[1:]
    return ".".join(rest) + suffix


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


def _lists_equal(xs: Sequence[Any], ys: Sequence[Any], eq: Callable[[Any, Any], bool]) -> bool:
    return len(xs) == len(ys) and all(any(eq(x, y) for y in ys) for x in xs)


def _url_of(info: Any) -> str | None:
    if isinstance(info, dict):
        url = info.get("url")
        return url if isinstance(url, str) else None
    return info if isinstance(info, str) else None


@metric("exact_match")
def exact_match(result: Any, rules: dict[str, Any]) -> float:
    return 1.0 if result == rules["expected"] else 0.0


@metric("match_in_list")
def match_in_list(result: Any, rules: dict[str, Any]) -> float:
    return 1.0 if result in rules["expected"] else 0.0


@metric("is_in_list")
def is_in_list(result: Any, rules: dict[str, Any]) -> float:
    """1 if `rules["expected"]` is an element of (or substring of) `result`."""
    if result is None:
        return 0.0
    return 1.0 if rules["expected"] in result else 0.0


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
    raise EvaluationError(f"literal_match: type {type!r} is not supported")


@metric("check_font_size")
def check_font_size(font_size: dict[str, Any], rule: dict[str, Any]) -> float:
    size = font_size["default_font_size"]
    if rule["type"] == "value":
        return 1.0 if size == rule["value"] else 0.0
    if rule["type"] == "range":
        return 1.0 if rule["min"] < size < rule["max"] else 0.0
    raise _rule_type_error("check_font_size", rule)


@metric("is_expected_bookmarks")
def is_expected_bookmarks(bookmarks: dict[str, Any] | None, rule: dict[str, Any]) -> float:
    """`bookmarks` is the `roots` object of Chromium's Bookmarks file."""
    if not bookmarks:
        return 0.0
    bar = bookmarks.get("bookmark_bar", {}).get("children", [])
    kind = rule["type"]
    if kind == "bookmark_bar_folders_names":
        names = {b["name"] for b in bar if b.get("type") == "folder"}
        return 1.0 if names == set(rule["names"]) else 0.0
    if kind == "bookmark_bar_websites_urls":
        urls = {b["url"] for b in bar if b.get("type") == "url"}
        return 1.0 if urls == set(rule["urls"]) else 0.0
    if kind == "liked_authors_websites_urls":
        folder = next((b for b in bar if b.get("type") == "folder" and b.get("name") == "Liked Authors"), None)
        if folder is None:
            return 0.0
        have = {b["url"] for b in folder.get("children", []) if b.get("type") == "url"}
        options = [[u] if isinstance(u, str) else list(u) for u in rule["urls"]]
        return 1.0 if any(set(combo) == have for combo in product(*options)) else 0.0
    raise _rule_type_error("is_expected_bookmarks", rule)


@metric("is_expected_tabs")
def is_expected_tabs(open_tabs: list[dict[str, str]] | None, rule: dict[str, Any]) -> float:
    if not open_tabs:
        return 0.0
    if rule["type"] != "url":
        raise _rule_type_error("is_expected_tabs", rule)
    actual = [tab["url"] for tab in open_tabs]
    return 1.0 if _lists_equal(rule["urls"], actual, compare_urls) else 0.0


@metric("is_expected_active_tab")
def is_expected_active_tab(active_tab: Any, rule: dict[str, Any]) -> float:
    if not active_tab:
        return 0.0
    if rule["type"] != "url":
        raise _rule_type_error("is_expected_active_tab", rule)
    return 1.0 if compare_urls(rule["url"], _url_of(active_tab)) else 0.0


def _strip_query(url: str) -> str:
    return urlunparse(urlparse(url)._replace(query=""))


@metric("is_expected_active_tab_approximate")
def is_expected_active_tab_approximate(active_tab: Any, rule: dict[str, Any]) -> float:
    if not active_tab:
        return 0.0
    if rule["type"] != "url":
        raise _rule_type_error("is_expected_active_tab_approximate", rule)
    actual = _url_of(active_tab)
    return 1.0 if actual is not None and _strip_query(rule["url"]) == _strip_query(actual) else 0.0


@metric("is_expected_url_pattern_match")
def is_expected_url_pattern_match(result: Any, rules: dict[str, Any]) -> float:
    """Every regex in `rules["expected"]` must be found in the URL."""
    url = _url_of(result)
    if not url:
        return 0.0
    return 1.0 if all(re.search(p, url) for p in rules["expected"]) else 0.0


@metric("check_direct_json_object")
def check_direct_json_object(result: Any, rules: dict[str, Any]) -> float:
    """Compare a JSON object with `rules["expected"]` key by key (or by containment with
    `expect_in_result`); a result that is not a JSON object scores 0."""
    if isinstance(result, str):
        try:
            result = json.loads(result.strip().replace("'", '"'))
        except json.JSONDecodeError:
            return 0.0
    if not isinstance(result, dict):
        return 0.0
    expected: dict[str, Any] = rules.get("expected") or {}
    if any(v == "__EVALUATION_FAILED__" for v in expected.values()):
        return 0.0
    # OSWorld reads `ignore_list_order` inside `expected` only, but the real task that uses it
    # (f5d96daf) puts it next to `expected`: both places count here (docs/osworld-compat.md).
    ignore_order = bool(rules.get("ignore_list_order", False) or expected.get("ignore_list_order", False))
    if not rules.get("expect_in_result", False):
        for key, want in expected.items():
            have = result.get(key)
            if ignore_order:
                if not isinstance(want, list) or not isinstance(have, list) or sorted(want) != sorted(have):
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
            if not isinstance(have, str) or want not in have:
                return 0.0
        else:
            return 0.0
    return 1.0


@metric("is_cookie_deleted")
def is_cookie_deleted(cookie_data: list[Sequence[Any]] | None, rule: dict[str, Any]) -> float:
    """`cookie_data` rows are `SELECT * FROM cookies` rows; column 1 is `host_key`."""
    if rule["type"] != "domains":
        raise _rule_type_error("is_cookie_deleted", rule)
    hosts = [row[1] for row in cookie_data or []]
    return 0.0 if any(compare_urls(d, h) for d in rule["domains"] for h in hosts) else 1.0


@metric("check_history_deleted")
def check_history_deleted(history_data: list[Sequence[Any]] | None, rule: dict[str, Any]) -> float:
    """`history_data` rows are `(url, title, last_visit_time)`."""
    if rule["type"] != "keywords":
        raise _rule_type_error("check_history_deleted", rule)
    urls = [row[0] for row in history_data or []]
    return 0.0 if any(k in u for k in rule["keywords"] for u in urls) else 1.0


@metric("infeasible")
def infeasible(reported_failure: bool) -> float:
    """Infeasible tasks: the right ending is the agent reporting failure."""
    return 1.0 if reported_failure else 0.0
