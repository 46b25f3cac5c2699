"""Metrics of OSWorld's `os` domain and the remaining chrome ones (`metrics/{general,basic_os,
chrome}.py`, same names and rules). Inputs are parsed, never evaluated (`ast.literal_eval`, not
OSWorld's `eval`, for the gsettings list).
"""

from __future__ import annotations

import ast
from typing import Any

from kimi_agent.tasks.registry import metric


@metric("check_include_exclude")
def check_include_exclude(result: str | None, rules: dict[str, list[str]]) -> float:
    """1 when every `include` string is in `result` and no `exclude` string is."""
    if result is None:
        return 0.0
    ok = all(s in result for s in rules.get("include", [])) and all(s not in result for s in rules.get("exclude", []))
    return 1.0 if ok else 0.0


@metric("check_moved_jpgs")
def check_moved_jpgs(directory: dict[str, Any] | None, rule: dict[str, Any]) -> float:
    """1 when the folder's entries are exactly the expected names (`list_directory` tree)."""
    if not directory:
        return 0.0
    names = [child["name"] for child in directory.get("children", [])]
    expected = rule["expected"]
    return 1.0 if len(names) == len(expected) and set(names) == set(expected) else 0.0


@metric("is_utc_0")
def is_utc_0(timedatectl_output: str | None) -> float:
    """1 when the 4th line of `timedatectl status` (the time zone) ends with "+0000)"."""
    lines = (timedatectl_output or "").split("\n")
    return 1.0 if len(lines) > 3 and lines[3].endswith("+0000)") else 0.0


@metric("check_gnome_favorite_apps")
def check_gnome_favorite_apps(apps_text: str | None, rule: dict[str, Any]) -> float:
    """`gsettings get org.gnome.shell favorite-apps` output (a Python-style list) vs `expected`."""
    try:
        apps = ast.literal_eval((apps_text or "").strip())
    except (ValueError, SyntaxError):
        return 0.0
    if not isinstance(apps, list):
        return 0.0
    expected = rule["expected"]
    return 1.0 if len(apps) == len(expected) and set(apps) == set(expected) else 0.0


@metric("is_added_to_steam_cart")
def is_added_to_steam_cart(active_tab_info: dict[str, str] | None, rule: dict[str, Any]) -> float:
    """1 when every item name is in the active tab's HTML."""
    if not active_tab_info:
        return 0.0
    content = active_tab_info.get("content", "")
    return 1.0 if all(item in content for item in rule["items"]) else 0.0


@metric("is_shortcut_on_desktop")
def is_shortcut_on_desktop(shortcuts: dict[str, str] | None, rule: dict[str, Any]) -> float:
    """A `.desktop` file whose `Name=` contains the expected name, ignoring case (type "name"), or
    whose `Exec=` line contains the expected command (type "exec"). OSWorld also accepts a name
    that is a substring of the expected one (a one-letter shortcut name would pass): not here."""
    kind = rule["type"]
    for text in (shortcuts or {}).values():
        lines = text.split("\n")
        if kind == "name" and any(line.startswith("Name=") and rule["name"].lower() in line[5:].lower()
                                  for line in lines):
            return 1.0
        if kind == "exec" and any(line.startswith("Exec=") and rule["exec"] in line for line in lines):
            return 1.0
    return 0.0
