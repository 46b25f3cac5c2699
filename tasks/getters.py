"""Getters: `(ctx, config) -> value` that read the state a metric scores, registered by name.

They read the worker's Chromium profile files (Preferences JSON, Bookmarks, the History and
Cookies sqlite databases, Local State) and the browser's debugging port, with OSWorld's defaults
for missing values (for example "false" when Preferences has no `enable_do_not_track`). Profile
files are only trustworthy after a graceful browser close; the tasks' postconfig does that.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.context import EvalContext
from kimi_agent.tasks.registry import getter
from kimi_agent.tasks.spec import GetterConfig

_DEFAULT_WEBPREFS = {"default_fixed_font_size": 13, "default_font_size": 16, "minimum_font_size": 13}


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when the file is missing or not JSON (Chromium writes
    these files lazily; an absent file means every setting has its default)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def preferences(ctx: EvalContext) -> dict[str, Any]:
    return _read_json(ctx.host.paths.default_profile / "Preferences")


def _flag(value: Any) -> str:
    return "true" if value else "false"


@getter("rule")
def get_rule(ctx: EvalContext, config: GetterConfig) -> Any:
    """The `rules` object of the config, verbatim."""
    return config.params["rules"]


@getter("enable_do_not_track")
def get_enable_do_not_track(ctx: EvalContext, config: GetterConfig) -> str:
    return _flag(preferences(ctx).get("enable_do_not_track"))


@getter("enable_enhanced_safety_browsing")
def get_enable_enhanced_safety_browsing(ctx: EvalContext, config: GetterConfig) -> str:
    return _flag(preferences(ctx).get("safebrowsing", {}).get("enhanced"))


@getter("enable_safe_browsing")
def get_enable_safe_browsing(ctx: EvalContext, config: GetterConfig) -> str:
    sb = preferences(ctx).get("safebrowsing", {})
    return _flag(sb.get("enhanced") or sb.get("enabled"))


@getter("new_startup_page")
def get_new_startup_page(ctx: EvalContext, config: GetterConfig) -> str:
    """"true" when Chromium opens the New Tab page at startup (`session.restore_on_startup == 5`,
    or no `session` key at all, which is the default)."""
    prefs = preferences(ctx)
    if "session" not in prefs:
        return "true"
    return _flag(prefs["session"].get("restore_on_startup") == 5)


@getter("default_search_engine")
def get_default_search_engine(ctx: EvalContext, config: GetterConfig) -> str:
    data = preferences(ctx).get("default_search_provider_data", {}).get("template_url_data", {})
    return str(data.get("short_name", "Google"))


@getter("profile_name")
def get_profile_name(ctx: EvalContext, config: GetterConfig) -> str | None:
    name = preferences(ctx).get("profile", {}).get("name")
    return None if name is None else str(name)


@getter("chrome_font_size")
def get_chrome_font_size(ctx: EvalContext, config: GetterConfig) -> dict[str, Any]:
    webprefs = preferences(ctx).get("webkit", {}).get("webprefs")
    return {**_DEFAULT_WEBPREFS, **webprefs} if isinstance(webprefs, dict) else dict(_DEFAULT_WEBPREFS)


@getter("chrome_language")
def get_chrome_language(ctx: EvalContext, config: GetterConfig) -> str:
    local_state = _read_json(ctx.host.paths.profile_dir / "Local State")
    return str(local_state.get("intl", {}).get("app_locale", "en-US"))


@getter("data_delete_automacally")  # sic: OSWorld's name
def get_data_delete_automatically(ctx: EvalContext, config: GetterConfig) -> str:
    return _flag(preferences(ctx).get("profile", {}).get("default_content_setting_values") is not None)


@getter("find_unpacked_extension_path")
def get_find_unpacked_extension_path(ctx: EvalContext, config: GetterConfig) -> list[str]:
    """The folder of every extension in the profile's `extensions.settings` (unpacked ones are
    loaded from there), as VM paths (`/home/user/...`). Chromium on Linux keeps these settings in
    Default/Preferences, Chrome on Windows and macOS in `Secure Preferences`: both are read.
    Entries without a `path` are skipped (OSWorld's getter fails on them and scores the task 0)."""
    out: list[str] = []
    for name in ("Preferences", "Secure Preferences"):
        settings = _read_json(ctx.host.paths.default_profile / name).get("extensions", {}).get("settings", {})
        for entry in (settings.values() if isinstance(settings, dict) else []):
            path = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(path, str) and path:
                vm_path = ctx.host.paths.vm_path(path)
                if vm_path not in out:
                    out.append(vm_path)
    return out


@getter("bookmarks")
def get_bookmarks(ctx: EvalContext, config: GetterConfig) -> dict[str, Any]:
    """The `roots` object of Default/Bookmarks ({} when there are no bookmarks yet)."""
    roots = _read_json(ctx.host.paths.default_profile / "Bookmarks").get("roots", {})
    return roots if isinstance(roots, dict) else {}


def cache_path(ctx: EvalContext, dest: str) -> Path:
    """Where a getter writes its copy named `dest` (a task file's value): inside the evaluation
    cache, so `dest` must be one plain file name (no `/`, not `.` or `..`)."""
    if not dest or dest in (".", "..") or "/" in dest or "\0" in dest:
        raise EvaluationError(f"dest {dest!r} is not a plain file name")
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    return ctx.cache_dir / dest


def _sqlite_rows(ctx: EvalContext, candidates: list[Path], query: str, dest: str) -> list[tuple[Any, ...]]:
    """Copy the first existing database of `candidates` into the cache and run `query` on the copy
    (Chromium keeps its databases locked while it runs)."""
    src = next((p for p in candidates if p.exists()), None)
    if src is None:
        raise FileNotFoundError(f"none of {[str(p) for p in candidates]} exists")
    copy = cache_path(ctx, dest)
    shutil.copyfile(src, copy)
    journal = src.with_name(src.name + "-journal")
    if journal.exists():
        shutil.copyfile(journal, copy.with_name(copy.name + "-journal"))
    conn = sqlite3.connect(copy)
    try:
        return list(conn.execute(query).fetchall())
    except sqlite3.Error as e:
        raise EvaluationError(f"{src}: {e}") from e
    finally:
        conn.close()


@getter("history")
def get_history(ctx: EvalContext, config: GetterConfig) -> list[tuple[Any, ...]]:
    """Rows `(url, title, last_visit_time)` of the History database."""
    return _sqlite_rows(ctx, [ctx.host.paths.default_profile / "History"],
                        "SELECT url, title, last_visit_time FROM urls", str(config.params.get("dest", "History")))


@getter("cookie_data")
def get_cookie_data(ctx: EvalContext, config: GetterConfig) -> list[tuple[Any, ...]]:
    """Rows of `SELECT * FROM cookies` (column 1 is host_key); Chromium keeps the database in
    Default/Network/Cookies (older versions: Default/Cookies)."""
    d = ctx.host.paths.default_profile
    return _sqlite_rows(ctx, [d / "Network" / "Cookies", d / "Cookies"], "SELECT * FROM cookies",
                        str(config.params.get("dest", "Cookies")))


def _page_targets(ctx: EvalContext) -> list[dict[str, Any]]:
    """The browser's tabs from the debugging port's /json/list, most recently active first; none
    when the browser is not running (the agent closed it: OSWorld's getters then give None and the
    metric scores 0, not an error)."""
    if not ctx.host.browser_running():
        return []
    try:
        resp = httpx.get(f"{ctx.host.cdp_url}/json/list", timeout=10.0)
        resp.raise_for_status()
    except httpx.HTTPError as e:
        raise EvaluationError(f"cannot list tabs over CDP at {ctx.host.cdp_url}: {e}") from e
    return [t for t in resp.json() if t.get("type") == "page" and not str(t.get("url", "")).startswith("devtools://")]


@getter("open_tabs_info")
def get_open_tabs_info(ctx: EvalContext, config: GetterConfig) -> list[dict[str, str]]:
    """`[{title, url}]` of every open tab."""
    return [{"title": str(t.get("title", "")), "url": str(t.get("url", ""))} for t in _page_targets(ctx)]


def _active_url(ctx: EvalContext) -> str | None:
    targets = _page_targets(ctx)
    return str(targets[0]["url"]) if targets else None


@getter("active_url_from_accessTree")
def get_active_url_from_access_tree(ctx: EvalContext, config: GetterConfig) -> str | None:
    """The active tab's full URL (None when no tab is open).

    OSWorld reads the omnibox text, which hides `https://` and `www.`, and rebuilds a URL as
    `goto_prefix + text`. We read the real URL over CDP, so `goto_prefix` is not needed and is
    ignored: prepending it to a URL that still has its scheme built `https://www.www.drugs.com/`.
    (docs/osworld-compat.md lists where this differs from OSWorld's reconstruction.)"""
    return _active_url(ctx)


@getter("active_tab_info")
def get_active_tab_info(ctx: EvalContext, config: GetterConfig) -> dict[str, str] | None:
    """`{title, url, content}` of the active tab (content is the page's HTML)."""
    url = _active_url(ctx)
    if url is None:
        return None
    browser = ctx.host.with_cdp()
    for context in browser.contexts:
        for page in context.pages:
            if page.url == url:
                return {"title": page.title(), "url": page.url, "content": page.content()}
    return {"title": "", "url": url, "content": ""}


def _fetch_file(ctx: EvalContext, src: Path, dest: str) -> str:
    if not src.is_file():
        raise FileNotFoundError(str(src))
    out = cache_path(ctx, dest)
    shutil.copyfile(src, out)
    return str(out)


def _file_getter(ctx: EvalContext, config: GetterConfig, *, mapped: bool) -> str | list[str | None] | None:
    p = config.params
    paths = p["path"] if p.get("multi") else [p["path"]]
    dests = p["dest"] if p.get("multi") else [p.get("dest", Path(str(p["path"])).name)]
    gives = set(p.get("gives", [0]))
    out: list[str | None] = []
    given: list[str] = []  # the task file's path of each entry of `out`
    for i, (path, dest) in enumerate(zip(paths, dests, strict=True)):
        src = ctx.host.paths.map_path(path) if mapped else Path(path)
        try:
            local = _fetch_file(ctx, src, dest)
        except FileNotFoundError:
            local = None
        if i in gives:
            out.append(local)
            given.append(str(path))
    if len(out) == 1:
        if out[0] is None:
            raise FileNotFoundError(given[0])
        return out[0]
    return out


@getter("vm_file")
def get_vm_file(ctx: EvalContext, config: GetterConfig) -> str | list[str | None] | None:
    """Copy a file from the (mapped) VM path into the cache; returns the local copy's path."""
    return _file_getter(ctx, config, mapped=True)


@getter("local_file")
def get_local_file(ctx: EvalContext, config: GetterConfig) -> str | list[str | None] | None:
    """Like `vm_file` for a path on this machine, taken literally."""
    return _file_getter(ctx, config, mapped=False)
