"""Metrics of OSWorld's `os` domain and the remaining chrome ones (`metrics/{general,basic_os,
chrome}.py`, same names and rules). Inputs are parsed, never evaluated (`ast.literal_eval`, not
OSWorld's `eval`, for the gsettings list). A rule field of the wrong JSON type raises
`EvaluationError` naming the field.
"""

from __future__ import annotations

import ast
from typing import Any

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.metrics import (
    _kind,
    no_result,
    require_key,
    require_object,
    require_str,
    require_str_list,
)
from kimi_agent.tasks.registry import metric

MAX_GSETTINGS_TEXT = 1_000_000  # characters of a favorite-apps list parsed with ast.literal_eval


@metric("check_include_exclude")
def check_include_exclude(result: str | None, rules: dict[str, list[str]]) -> float:
    """1 when every `include` string is in `result` and no `exclude` string is."""
    fn = "check_include_exclude"
    rules = require_object(fn, rules, "rules")
    include = require_str_list(fn, rules.get("include", []), "rules.include")
    exclude = require_str_list(fn, rules.get("exclude", []), "rules.exclude")
    if result is None:
        return 0.0
    if not isinstance(result, str | list):
        raise EvaluationError(f"{fn}: the result must be a string, not {_kind(result)}")
    ok = all(s in result for s in include) and all(s not in result for s in exclude)
    return 1.0 if ok else 0.0


@metric("check_moved_jpgs")
def check_moved_jpgs(directory: dict[str, Any] | None, rule: dict[str, Any]) -> float:
    """1 when the folder's entries are exactly the expected names (`list_directory` tree)."""
    fn = "check_moved_jpgs"
    expected = require_str_list(fn, require_key(fn, require_object(fn, rule, "rules"), "expected", "rules"),
                                "rules.expected")
    if directory is None:
        raise no_result(fn, "directory listing")
    children = require_key(fn, require_object(fn, directory, "the result"), "children", "the result")
    if not isinstance(children, list) or not all(isinstance(c, dict) and "name" in c for c in children):
        raise EvaluationError(f"{fn}: the result's children must be entries with a name")
    names = [child["name"] for child in children]
    return 1.0 if len(names) == len(expected) and set(names) == set(expected) else 0.0


@metric("is_utc_0")
def is_utc_0(timedatectl_output: str | None) -> float:
    """1 when the 4th line of `timedatectl status` (the time zone) ends with "+0000)". An output of
    fewer lines (timedatectl missing or failed) is an EvaluationError, as OSWorld raises: no score."""
    if timedatectl_output is None:
        raise no_result("is_utc_0", "timedatectl output")
    lines = require_str("is_utc_0", timedatectl_output, "the result").split("\n")
    if len(lines) < 4:
        raise EvaluationError(f"is_utc_0: the timedatectl output has {len(lines)} line(s), no 4th naming the time zone")
    return 1.0 if lines[3].endswith("+0000)") else 0.0


@metric("check_gnome_favorite_apps")
def check_gnome_favorite_apps(apps_text: str | None, rule: dict[str, Any]) -> float:
    """`gsettings get org.gnome.shell favorite-apps` output (a Python-style list) vs `expected`: the
    same length and the same set. As with OSWorld's evaluation of the text, any literal that has a
    length and hashable items counts (a tuple, a set; a string is its characters)."""
    fn = "check_gnome_favorite_apps"
    expected = require_str_list(fn, require_key(fn, require_object(fn, rule, "rules"), "expected", "rules"),
                                "rules.expected")
    if apps_text is None:
        raise no_result(fn, "gsettings output")
    text = apps_text.strip() if isinstance(apps_text, str) else ""
    if len(text) > MAX_GSETTINGS_TEXT:
        return 0.0
    try:
        apps = ast.literal_eval(text)
        return 1.0 if len(apps) == len(expected) and set(apps) == set(expected) else 0.0
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):  # not a literal, no length, unhashable
        return 0.0


@metric("is_added_to_steam_cart")
def is_added_to_steam_cart(active_tab_info: dict[str, str] | None, rule: dict[str, Any]) -> float:
    """1 when every item name is in the active tab's HTML."""
    fn = "is_added_to_steam_cart"
    items = require_str_list(fn, require_key(fn, require_object(fn, rule, "rules"), "items", "rules"), "rules.items")
    if active_tab_info is None:
        raise no_result(fn, "page")
    page = require_object(fn, active_tab_info, "the result")
    if "content" not in page:  # OSWorld's own "Connection failed" placeholder has none: its metric raises
        title = page.get("title")
        raise EvaluationError(f"{fn}: the page has no content" + (f" (title {str(title)[:200]!r})" if title else ""))
    content = require_str(fn, page["content"], "the result's content")
    return 1.0 if all(item in content for item in items) else 0.0


@metric("is_shortcut_on_desktop")
def is_shortcut_on_desktop(shortcuts: dict[str, str] | None, rule: dict[str, Any]) -> float:
    """A `.desktop` file with the line `Name=<name>` or whose `Name=` contains the expected name,
    ignoring case (type "name"); with `Exec=<exec>` or an `Exec=` value that contains, or is
    contained in, the expected command (type "exec", OSWorld's rule). OSWorld also accepts a name
    that is a substring of the expected one (a one-letter shortcut name would pass): not here.
    desktop-env 1.0.2 accepts only the exact lines (docs/osworld-compat.md)."""
    fn = "is_shortcut_on_desktop"
    rule = require_object(fn, rule, "rules")
    kind = require_key(fn, rule, "type", "rules")
    if kind not in ("name", "exec"):
        raise EvaluationError(f"{fn}: rule type {kind!r} is not supported")
    want = require_str(fn, require_key(fn, rule, kind, "rules"), f"rules.{kind}")
    key = "Name=" if kind == "name" else "Exec="
    if shortcuts is None:
        raise no_result(fn, "desktop shortcuts")
    for text in require_object(fn, shortcuts, "the result").values():
        if f"{key}{want}\n" in require_str(fn, text, "a shortcut's text"):
            return 1.0
        values = [line[5:] for line in text.split("\n") if line.startswith(key)]
        if kind == "name" and any(want.lower() in v.lower() for v in values):
            return 1.0
        if kind == "exec" and any(want in v or v in want for v in values):
            return 1.0
    return 0.0
