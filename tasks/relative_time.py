"""`rule_relativeTime`: OSWorld's expected values that name a day relative to today.

`rules = {"relativeTime": {"from": "tomorrow", "to"?: ...}, "timezone"?: "Europe/Zurich",
"expected": {"time": "{DoW}, {Month} {Day0D}", ...}}`: the day phrases of OSWorld's table resolve
against `now` (the machine's local time, or the given time zone), and the `{...}` tokens of the
named expected fields are filled with that day. Differences from OSWorld (docs/osworld-compat.md):
"N months later" wraps the year correctly (OSWorld builds month 0 in August and December).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kimi_agent.errors import EvaluationError

_DOW = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def fill_time_format(fmt: str, day: datetime) -> str:
    """Replace the first occurrence of each OSWorld token ({DoW}, {Month}, {DayD}, {Year}, {Month0D},
    {month}, {MonthFull}, {Day0D}, {MonthD}) with `day`'s value, in OSWorld's order."""
    full = calendar.month_name[day.month]
    for token, value in (("{DoW}", _DOW[day.weekday()]), ("{Month}", calendar.month_abbr[day.month]),
                         ("{DayD}", str(day.day)), ("{Year}", str(day.year)), ("{Month0D}", f"{day.month:02d}"),
                         ("{month}", full.lower()), ("{MonthFull}", full), ("{Day0D}", f"{day.day:02d}"),
                         ("{MonthD}", str(day.month))):
        fmt = fmt.replace(token, value, 1)
    return fmt


def _add_months(now: datetime, months: int, day: int) -> datetime:
    y, m = divmod(now.month - 1 + months, 12)
    return now.replace(year=now.year + y, month=m + 1, day=day)


def _first_monday(now: datetime, months: int) -> datetime:
    first = _add_months(now, months, 1)
    return first + timedelta(days=(7 - first.weekday()) % 7)


def _days(n: Callable[[datetime], int]) -> Callable[[datetime], datetime]:
    return lambda now: now + timedelta(days=n(now))


def _next_friday(now: datetime) -> int:
    return 4 - now.weekday() if now.weekday() < 4 else 7 if now.weekday() == 4 else 11 - now.weekday()


def _next_saturday(now: datetime) -> int:
    return 5 - now.weekday() if now.weekday() < 5 else 7 if now.weekday() == 5 else 6


# OSWorld's phrases (getters/misc.py relativeTime_to_IntDay), each a function of "now".
FROM_DAYS: dict[str, Callable[[datetime], datetime]] = {
    "tomorrow": _days(lambda now: 1),
    "5th next month": lambda now: _add_months(now, 1, 5),
    "10th next month": lambda now: _add_months(now, 1, 10),
    "11th next month": lambda now: _add_months(now, 1, 11),
    "this month": lambda now: now,
    "this Saturday": _days(lambda now: 5 - now.weekday()),
    "this Sunday": _days(lambda now: 6 - now.weekday()),
    "next Monday": _days(lambda now: 7 - now.weekday()),
    "next Monday split": _days(lambda now: 7 - now.weekday()),
    "next Friday": _days(_next_friday),
    "next Saturday": _days(_next_saturday),
    "next week Friday": _days(lambda now: 11 - now.weekday()),
    "next week Saturday": _days(lambda now: 12 - now.weekday()),
    "next week Sunday": _days(lambda now: 13 - now.weekday()),
    "first monday four months later": lambda now: _first_monday(now, 4),
    "first monday eight months later": lambda now: _first_monday(now, 8),
}


def _to_day(phrase: str, from_phrase: str, start: datetime, now: datetime) -> datetime:
    """The end day of a range: relative to the start day where OSWorld does so."""
    if phrase in ("next Friday", "next Friday split") and from_phrase in ("next Monday", "next Monday split"):
        return start + timedelta(days=4)
    if phrase in ("next Friday", "next Friday split"):
        return now + timedelta(days=4 - now.weekday() if now.weekday() < 4 else 11 - now.weekday())
    if phrase == "next Sunday" and from_phrase in ("next Friday", "next Saturday"):
        return start + timedelta(days=6 - start.weekday())
    if phrase == "next Sunday":
        return now + timedelta(days=6 - now.weekday() if now.weekday() < 6 else 7)
    if phrase == "next week Sunday" and from_phrase in ("next week Friday", "next week Saturday"):
        return start + timedelta(days=6 - start.weekday())
    return _day(phrase, now)


def _day(phrase: str, now: datetime) -> datetime:
    if phrase not in FROM_DAYS:
        raise EvaluationError(f"rule_relativeTime: unknown relative time {phrase!r}")
    return FROM_DAYS[phrase](now)


def local_now(timezone: str | None) -> datetime:
    """Now in `timezone` (an IANA name), or in this machine's local zone."""
    if not timezone:
        return datetime.now().astimezone()
    try:
        zone: tzinfo = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise EvaluationError(f"rule_relativeTime: unknown time zone {timezone!r}") from e
    return datetime.now(zone)


def resolve_relative_time(rules: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A copy of `rules` with the day tokens of its expected fields filled (see module doc)."""
    rel = rules["relativeTime"]
    expected = dict(rules["expected"])
    start = _day(rel["from"], now)

    def fill(key: str, day: datetime) -> None:
        value = expected[key]
        expected[key] = [fill_time_format(v, day) for v in value] if isinstance(value, list) \
            else fill_time_format(value, day)

    if "to" not in rel:
        fill("time", start)
        return {**rules, "expected": expected}
    end = _to_day(rel["to"], rel["from"], start, now)
    for key in (("puDay", "puMonth", "puYear") if rel["from"] == "next Monday split" else ("from",)):
        fill(key, start)
    for key in (("doDay", "doMonth", "doYear") if rel["to"] == "next Friday split" else ("to",)):
        fill(key, end)
    return {**rules, "expected": expected}
