"""Getters that read the active tab's URL or page (OSWorld's `getters/chrome.py`, same names and
config keys): query parameters, a `/`-separated part, Macy's path filters, and texts of elements
selected by class, label, XPath or input. Each gives None when no tab is open.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.context import EvalContext
from kimi_agent.tasks.getters import get_active_url_from_access_tree
from kimi_agent.tasks.registry import getter
from kimi_agent.tasks.relative_time import local_now, resolve_relative_time
from kimi_agent.tasks.spec import GetterConfig, TaskFieldError


def url_query(url: str, params: dict[str, Any]) -> dict[str, Any]:
    """`parse_keys` from the URL's query ('' when absent), renamed by `replace`, split on ',' with
    `split_list`."""
    query = parse_qs(urlparse(url).query)
    out: dict[str, Any] = {k: query.get(k, [""])[0] for k in params["parse_keys"]}
    for old, new in (params.get("replace") or {}).items():
        out[new] = out.pop(old)
    if params.get("split_list", False):
        out = {k: v.split(",") for k, v in out.items()}
    return out


def url_dash_part(url: str, params: dict[str, Any]) -> str | dict[str, str] | None:
    """Part `partIndex` of the URL split on '/' (without '?...' with `needDeleteId`), as a string or
    `{key: part}` (`returnType` "json")."""
    try:
        index = int(params["partIndex"])
    except (TypeError, ValueError):
        return None
    parts = url.split("/")
    if index >= len(parts) or index < -len(parts):
        return None
    part = parts[index].split("?")[0] if params.get("needDeleteId", False) else parts[index]
    kind = params["returnType"]
    if kind == "string":
        return part
    if kind == "json":
        return {params["key"]: part}
    return None


def macys_path_filters(url: str, parse_keys: list[str]) -> dict[str, Any]:
    """OSWorld's `url_path_parse` of a Macy's listing URL: category flags and the filter values
    encoded as `/key1,key2/value1,value2/` path segments."""
    path = unquote(urlparse(url).path)
    parts = path.strip("/").split("/")
    filters: dict[str, Any] = {}
    shirts, short_sleeve = "shirts" in path, "short-sleeve" in path
    for keys_part, values_part in pairwise(parts):
        if "," in keys_part and "," in values_part:
            for k, v in zip((k.strip() for k in keys_part.split(",")), (v.strip() for v in values_part.split(",")),
                            strict=False):
                filters[k] = ([x.strip() for x in v.split("|")] if v else None) if k == "Price_discount_range" \
                    else (v or None)
                shirts = shirts or (k == "Product_department" and v in ("shirts", "Shirts", "Shirt"))
                short_sleeve = short_sleeve or (k == "Sleeve_length" and v in ("short-sleeve", "Short Sleeve"))
            break
    out: dict[str, Any] = {"mens_clothing": True if "mens-clothing" in path else None,
                           "shirts": True if shirts else None, "short_sleeve": True if short_sleeve else None}
    for key in parse_keys:
        if key == "Price_discount_range":
            ranges = filters.get(key) or []
            only_50 = "50_PERCENT_ off & more" in ranges and not {"30_PERCENT_ off & more",
                                                                  "20_PERCENT_ off & more"} & set(ranges)
            out[key] = "50_PERCENT_ off & more" if only_50 else "not_50_PERCENT_ off & more"
        elif key in filters or key == "Men_regular_size_t":
            out[key] = filters.get(key)
    return out


@getter("active_tab_url_parse")
def get_active_tab_url_parse(ctx: EvalContext, config: GetterConfig) -> dict[str, Any] | None:
    url = get_active_url_from_access_tree(ctx, config)
    return None if url is None else url_query(url, config.params)


@getter("url_dashPart")
def get_url_dash_part(ctx: EvalContext, config: GetterConfig) -> str | dict[str, str] | None:
    url = get_active_url_from_access_tree(ctx, config)
    return None if url is None else url_dash_part(url, config.params)


@getter("url_path_parse")
def get_url_path_parse(ctx: EvalContext, config: GetterConfig) -> dict[str, Any] | None:
    url = get_active_url_from_access_tree(ctx, config)
    return None if url is None else macys_path_filters(url, list(config.params.get("parse_keys", [])))


def _check_relative_rules(config: GetterConfig) -> list[str]:
    """`rules` must be an object with `relativeTime` (an object with a `from` string) and `expected`
    (an object): `TaskFieldError` when the task loads, not a KeyError once it has run."""
    rules = config.params.get("rules")
    if not isinstance(rules, dict):
        raise TaskFieldError("rules", "must be an object with relativeTime and expected")
    rel = rules.get("relativeTime")
    if not isinstance(rel, dict) or not isinstance(rel.get("from"), str):
        raise TaskFieldError("rules.relativeTime", 'must be an object with a "from" string such as "tomorrow"')
    if not isinstance(rules.get("expected"), dict):
        raise TaskFieldError("rules.expected", "must be an object")
    return []


@getter("rule_relativeTime", check=_check_relative_rules)
def get_rule_relative_time(ctx: EvalContext, config: GetterConfig) -> dict[str, Any]:
    """The `rules` with their relative days resolved against now (see tasks/relative_time.py)."""
    rules = config.params["rules"]
    return resolve_relative_time(rules, local_now(rules.get("timezone")))


# ---------------------------------------------------------------- page content

_DIRECT_TEXT_JS = """els => els.length ? Array.from(els[0].childNodes)
  .filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent.trim()).filter(Boolean) : []"""


def _page_for(ctx: EvalContext, url: str) -> Any:
    def norm(u: str) -> str:
        return unquote(u).rstrip("/")
    for context in ctx.host.with_cdp().contexts:
        for page in context.pages:
            if not page.is_closed() and norm(page.url) == norm(url):
                return page
    return None


def _texts(page: Any, selector: str) -> list[str]:
    return [(t or "").strip() for t in page.locator(selector).all_text_contents()]


def _first_text(locator: Any) -> str:
    return (locator.first.text_content() or "").strip() if locator.count() > 0 else ""


def html_parse(page: Any, params: dict[str, Any]) -> dict[str, Any]:
    """OSWorld's `active_tab_html_parse` on a Playwright page (see its config keys there)."""
    out: dict[str, Any] = {}
    category = params["category"]
    if category == "class":
        for cls, by_rank in (params.get("class_multiObject") or {}).items():
            texts = _texts(page, "." + cls)
            for rank, key in by_rank.items():
                out[key] = texts[int(rank)] if len(texts) > int(rank) else ""
        for cls, by_rank in (params.get("class_multiObject_child") or {}).items():
            texts = page.locator("." + cls).evaluate_all(_DIRECT_TEXT_JS)
            for rank, key in by_rank.items():
                out[key] = texts[int(rank)] if len(texts) > int(rank) else ""
        for cls, by_rank in (params.get("class_multiObject_only_child") or {}).items():
            texts = [t.strip() for t in page.locator(f".{cls} h3").all_text_contents()]
            for rank, key in by_rank.items():
                out[key] = texts[int(rank)] if len(texts) > int(rank) else ""
        for cls, wanted in (params.get("class_multiObject_search_exist") or {}).items():
            texts = _texts(page, "." + cls)
            for item in wanted:
                if item != "is_other_exist":
                    out[item] = item in texts
            if "is_other_exist" in wanted:
                out["is_other_exist"] = any(t not in wanted for t in texts)
        for cls, key in (params.get("class_singleObject") or {}).items():
            texts = _texts(page, "." + cls)
            out[key] = texts[0] if texts else ""
    elif category == "label":
        for label, key in (params.get("labelObject") or {}).items():
            out[key] = _first_text(page.locator(f"text={label}"))
    elif category == "xpath":
        for xpath, key in (params.get("xpathObject") or {}).items():
            out[key] = _first_text(page.locator(f"xpath={xpath}"))
    elif category == "input":
        for xpath, key in (params.get("inputObject") or {}).items():
            inputs = page.locator(f"xpath={xpath}")
            out[key] = (inputs.first.input_value() or "").strip() if inputs.count() > 0 else ""
    elif category == "class&url":
        groups = [(_texts(page, "." + c), items) for c, items in (params.get("class_multiObject") or {}).items()]
        groups += [([t.strip() for t in page.locator(f".{c} li.catAllProducts span").all_inner_texts()], items)
                   for c, items in (params.get("class_multiObject_li") or {}).items()]
        for texts, items in groups:
            for item in items:
                if any(item.lower() == t.lower() for t in texts):
                    out[item.lower()] = True
            if any(all(t.lower() not in i.lower() for i in items) for t in texts):
                out["is_other_exist"] = True
            out.setdefault("is_other_exist", False)
        for key in params.get("url_include_expected") or []:
            out.setdefault(key.lower(), key.lower() in page.url.lower())
    else:
        raise EvaluationError(f"active_tab_html_parse: category {category!r} is not supported")
    return out


@getter("active_tab_html_parse")
def get_active_tab_html_parse(ctx: EvalContext, config: GetterConfig) -> dict[str, Any] | None:
    """Texts of the active tab's elements, keyed as the config says ({} when the tab is gone)."""
    url = get_active_url_from_access_tree(ctx, config)
    if url is None:
        return None
    page = _page_for(ctx, url)
    return {} if page is None else html_parse(page, config.params)
