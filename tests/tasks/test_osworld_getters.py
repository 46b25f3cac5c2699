"""The OSWorld getters and metrics added for the real chrome/os tasks, scored both ways (solved and
not) with the real task files' own `expected` rules, against OSWorld's behaviour on the same inputs.

The active tab comes from a real HTTP server that answers the debugging port's `/json/list` the way
Chromium does (a test double of the browser's tab list); page parsing uses a real headless Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.context import EpisodeEnd, EvalContext, HostPaths
from kimi_agent.tasks.evaluate import evaluate
from kimi_agent.tasks.getters_url import html_parse, macys_path_filters, url_dash_part, url_query
from kimi_agent.tasks.metrics_os import (
    check_gnome_favorite_apps,
    check_include_exclude,
    check_moved_jpgs,
    is_added_to_steam_cart,
    is_shortcut_on_desktop,
    is_utc_0,
)
from kimi_agent.tasks.relative_time import fill_time_format, resolve_relative_time
from kimi_agent.tasks.spec import GetterConfig, TaskSpec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "osworld"
CHROME_EVAL = FIXTURES / "chrome_eval"
OS = FIXTURES / "os"


class _Tabs(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        body = json.dumps([{"id": "1", "type": "page", "url": self.server.url, "title": "t"}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TabHost:
    """A task host whose browser shows one tab at `url` (over a real HTTP /json/list)."""

    def __init__(self, home: Path, server: Any) -> None:
        self.paths = HostPaths(home)
        self.client_password = "pw"
        self.server = server

    @property
    def cdp_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def browser_running(self) -> bool:
        return True

    def stop_browser(self) -> None: ...

    def execute(self, argv: Any, *, shell: bool, timeout_s: float) -> tuple[int, str, str]:
        done = subprocess.run(argv, shell=shell, capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.paths.home, check=False, executable="/bin/bash" if shell else None,
                              env={"PATH": os.environ["PATH"], "HOME": str(self.paths.home)})
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
def tab_host(tmp_path: Path) -> Iterator[TabHost]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tabs)
    server.url = "about:blank"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "home").mkdir()
    try:
        yield TabHost(tmp_path / "home", server)
    finally:
        server.shutdown()


def _spec(prefix: str, folder: Path = CHROME_EVAL) -> TaskSpec:
    [path] = folder.glob(f"{prefix}*.json")
    spec = TaskSpec.model_validate_json(path.read_text())
    return spec.model_copy(update={"evaluator": spec.evaluator.model_copy(update={"postconfig": []})})


def _score(host: TabHost, prefix: str, url: str, tmp_path: Path, folder: Path = CHROME_EVAL) -> float:
    host.server.url = url
    return evaluate(_spec(prefix, folder), host, EpisodeEnd("success"), cache_dir=tmp_path / "c").score  # type: ignore[arg-type]


MONTH = datetime.now().astimezone().strftime("%B").lower()
SOLVED = {  # the real tasks' solved states, as the URL a browser shows
    "0d8b7de3": ("https://www.drugs.com/npc/", "https://www.drugs.com/npd/"),
    "59155008": ("https://www.babycenter.com/baby-names/details/carl-853", "https://www.babycenter.com/baby-names"),
    "f0b971a1": ("https://www.nfl.com/scores/2019/post4", "https://www.nfl.com/scores/2019/post3"),
    "12086550": ("chrome://password-manager/passwords", "chrome://settings/passwords"),
    "82279c77": ("https://www.cars.com/shopping/results/?list_price_max=50000&maximum_distance=50&zip=10001"
                 "&fuel_slugs[]=electric", "https://www.cars.com/shopping/results/?zip=10001"),
    "f5d96daf": ("https://www.apple.com/shop/buy-iphone?modelList=iphone-13-pro-max,iphone-15-pro-max,"
                 "iphone-14-pro-max", "https://www.apple.com/shop/buy-iphone?modelList=iphone-15-pro-max"),
    "2888b4e6": ("https://www.macys.com/shop/mens-clothing/mens-shirts/Men_regular_size_t,Price_discount_range,"
                 "Sleeve_length/L,50_PERCENT_%20off%20%26%20more,Short%20Sleeve?id=20635",
                 "https://www.macys.com/shop/mens-clothing/mens-shirts/Men_regular_size_t,Price_discount_range/"
                 "L,30_PERCENT_%20off%20%26%20more|50_PERCENT_%20off%20%26%20more?id=20635"),
    "368d9ba4": (f"https://www.accuweather.com/en/gb/manchester/m15-6/{MONTH}-weather/329260",
                 "https://www.accuweather.com/en/gb/london/ec4a-2/{MONTH}-weather/328328"),
}


@pytest.mark.parametrize("prefix", sorted(SOLVED))
def test_real_chrome_url_tasks_score_the_solved_state_1_and_another_0(tab_host: TabHost, tmp_path: Path,
                                                                      prefix: str) -> None:
    solved, unsolved = SOLVED[prefix]
    assert _score(tab_host, prefix, solved, tmp_path) == 1.0
    assert _score(tab_host, prefix, unsolved, tmp_path) == 0.0


def test_goto_prefix_no_longer_doubles_www_or_drops_the_scheme(tab_host: TabHost, tmp_path: Path) -> None:
    from kimi_agent.tasks.getters import get_active_url_from_access_tree

    ctx = EvalContext(tab_host, EpisodeEnd("success"), tmp_path)  # type: ignore[arg-type]
    tab_host.server.url = "https://www.drugs.com/npc/"
    for prefix in ("https://www.", "", "https://"):
        got = get_active_url_from_access_tree(ctx, GetterConfig(type="active_url_from_accessTree", goto_prefix=prefix))
        assert got == "https://www.drugs.com/npc/"
    tab_host.server.url = "chrome://settings/appearance"
    cfg = GetterConfig(type="active_url_from_accessTree", goto_prefix="")
    assert get_active_url_from_access_tree(ctx, cfg) == "chrome://settings/appearance"


def test_url_parsers_match_osworld_on_the_same_inputs() -> None:
    url = "https://www.ryanair.com/x?originIata=DUB&destinationIata=VIE&tpAdults=2&dateOut=2025-03-10"
    assert url_query(url, {"parse_keys": ["originIata", "dateOut", "missing"], "replace": {"dateOut": "time"}}) == {
        "originIata": "DUB", "missing": "", "time": "2025-03-10"}
    assert url_query("https://a.com/?m=a,b", {"parse_keys": ["m"], "split_list": True}) == {"m": ["a", "b"]}
    assert url_dash_part("https://a.com/x/y-z?id=3", {"partIndex": -1, "needDeleteId": True,
                                                       "returnType": "string"}) == "y-z"
    assert url_dash_part("https://a.com/x", {"partIndex": 9, "returnType": "string"}) is None
    assert url_dash_part("https://a.com/x", {"partIndex": "no", "returnType": "string"}) is None
    assert macys_path_filters("https://www.macys.com/shop/womens", ["Men_regular_size_t", "Price_discount_range"]) == {
        "mens_clothing": None, "shirts": None, "short_sleeve": None, "Men_regular_size_t": None,
        "Price_discount_range": "not_50_PERCENT_ off & more"}


def test_relative_time_rules_fill_osworld_tokens() -> None:
    wed = datetime(2025, 1, 15)  # a Wednesday
    assert fill_time_format("{DoW}, {Month} {Day0D}, {Year} {Month0D} {DayD} {month} {MonthFull} {MonthD}",
                            datetime(2025, 3, 5)) == "Wed, Mar 05, 2025 03 5 march March 3"
    one = {"relativeTime": {"from": "tomorrow"}, "expected": {"time": "{Year}-{Month0D}-{Day0D}", "x": 1}}
    assert resolve_relative_time(one, wed)["expected"] == {"time": "2025-01-16", "x": 1}
    listed = {"relativeTime": {"from": "next Monday"}, "expected": {"time": ["{Year}-{Month0D}-{Day0D}"]}}
    assert resolve_relative_time(listed, wed)["expected"]["time"] == ["2025-01-20"]
    rng = {"relativeTime": {"from": "next week Saturday", "to": "next week Sunday"},
           "expected": {"from": "{DoW}, {Month} {Day0D}", "to": "{DoW}, {Month} {Day0D}"}}
    assert resolve_relative_time(rng, wed)["expected"] == {"from": "Sat, Jan 25", "to": "Sun, Jan 26"}
    split = {"relativeTime": {"from": "next Monday split", "to": "next Friday split"},
             "expected": {"puDay": "{DayD}", "puMonth": "{MonthD}", "puYear": "{Year}", "doDay": "{DayD}",
                          "doMonth": "{MonthD}", "doYear": "{Year}"}}
    assert resolve_relative_time(split, wed)["expected"] == {"puDay": "20", "puMonth": "1", "puYear": "2025",
                                                             "doDay": "24", "doMonth": "1", "doYear": "2025"}
    assert resolve_relative_time({"relativeTime": {"from": "10th next month"}, "expected": {"time": "{Month0D}"}},
                                 datetime(2025, 12, 20))["expected"]["time"] == "01"
    # OSWorld builds month 0 here (Aug + 4 months) and fails; December has its first Monday on the 1st
    aug = {"relativeTime": {"from": "first monday four months later"}, "expected": {"time": "{Year}-{Month0D}-{Day0D}"}}
    assert resolve_relative_time(aug, datetime(2025, 8, 10))["expected"]["time"] == "2025-12-01"


def test_os_metrics_both_ways() -> None:
    assert check_include_exclude("spotify is /snap/bin/spotify", {"include": ["spotify"], "exclude": ["not found"]}) == 1
    assert check_include_exclude("spotify not found", {"include": ["spotify"], "exclude": ["not found"]}) == 0
    assert check_include_exclude(None, {"include": []}) == 0
    tree = {"name": "d", "type": "directory", "children": [{"name": "a.jpg"}, {"name": "b.jpg"}]}
    assert check_moved_jpgs(tree, {"expected": ["b.jpg", "a.jpg"]}) == 1
    assert check_moved_jpgs(tree, {"expected": ["a.jpg"]}) == 0
    status = "Local time: x\nUniversal time: y\nRTC time: z\n                Time zone: Etc/UTC (UTC, +0000)\n"
    assert is_utc_0(status) == 1 and is_utc_0(status.replace("+0000", "+0100")) == 0
    with pytest.raises(EvaluationError, match="no 4th naming the time zone"):  # as OSWorld: no score, not a 0
        is_utc_0("")
    apps = "['thunderbird.desktop', 'vim.desktop']"
    assert check_gnome_favorite_apps(apps, {"expected": ["vim.desktop", "thunderbird.desktop"]}) == 1
    assert check_gnome_favorite_apps(apps, {"expected": ["vim.desktop"]}) == 0
    assert check_gnome_favorite_apps("__import__('os').system('true')", {"expected": []}) == 0  # never evaluated
    assert is_added_to_steam_cart({"content": "<li>Dota 2</li><li>Portal</li>"}, {"items": ["Dota 2", "Portal"]}) == 1
    assert is_added_to_steam_cart({"content": "<li>Dota 2</li>"}, {"items": ["Dota 2", "Portal"]}) == 0
    shortcut = {"x.desktop": "[Desktop Entry]\nName=Play Puzzle Game 2048\nExec=/opt/chrome --app-id=abc\n"}
    assert is_shortcut_on_desktop(shortcut, {"type": "name", "name": "Puzzle Game 2048"}) == 1
    assert is_shortcut_on_desktop(shortcut, {"type": "name", "name": "Solitaire"}) == 0
    assert is_shortcut_on_desktop(shortcut, {"type": "exec", "exec": "--app-id=abc"}) == 1


def test_real_os_tasks_score_both_ways_with_real_commands(tab_host: TabHost, tmp_path: Path) -> None:
    home = tab_host.paths.home
    (home / "Desktop").mkdir()
    assert _score(tab_host, "5ea617a3", "about:blank", tmp_path, OS) == 0.0  # the .webp file is not there yet
    (home / "Desktop" / "poster_party_night.webp").write_bytes(b"RIFF")
    assert _score(tab_host, "5ea617a3", "about:blank", tmp_path, OS) == 1.0
    assert _score(tab_host, "e0df059f", "about:blank", tmp_path, OS) == 0.0
    (home / "Desktop" / "todo_list_Jan_2").mkdir()
    assert _score(tab_host, "e0df059f", "about:blank", tmp_path, OS) == 1.0
    jpgs = home / "Desktop" / "cpjpg"
    jpgs.mkdir()
    rules = _spec("23393935", OS).evaluator.expected[0]
    assert rules is not None
    for name in rules.params["rules"]["expected"][:-1]:
        (jpgs / name).write_bytes(b"")
    assert _score(tab_host, "23393935", "about:blank", tmp_path, OS) == 0.0
    (jpgs / rules.params["rules"]["expected"][-1]).write_bytes(b"")
    assert _score(tab_host, "23393935", "about:blank", tmp_path, OS) == 1.0


def test_gnome_only_commands_make_tasks_unsupported_naming_the_command() -> None:
    tasks = {t.id[:8]: t for t in load_tasks(OS)}
    for prefix, program in (("a4d98375", "gsettings"), ("b6781586", "timedatectl")):
        [reason] = tasks[prefix].reasons
        assert tasks[prefix].status == "unsupported"
        assert reason.startswith(f"getter 'vm_command_line' runs {program} (needs an Ubuntu GNOME desktop): ")
    assert tasks["e0df059f"].status == "runnable" and tasks["5ea617a3"].status == "unsupported"  # network download


PAGE = """<html><body>
<div class="date">Wed, Mar 05, 2025</div><div class="date">Thu, Mar 06</div>
<div class="route">SEA<div class="sep"></div>NYC</div>
<ul class="crumb"><li>Toys</li><li>Kids</li></ul>
<ul class="cats"><li class="catAllProducts"><span>Spider-Man</span></li></ul>
<label>Miles</label><button data-automation="checkin"><div>Check In</div></button>
<input id="q" value=" drip coffee maker ">
</body></html>"""


def test_active_tab_html_parse_categories_on_a_real_page(headless_browser: Any) -> None:
    page = headless_browser.new_page()
    try:
        page.set_content(PAGE)
        assert html_parse(page, {"category": "class", "class_singleObject": {"date": "time", "none": "x"},
                                 "class_multiObject": {"date": {"1": "second", "5": "sixth"}},
                                 "class_multiObject_child": {"route": {"0": "start", "1": "end"}}}) == {
            "second": "Thu, Mar 06", "sixth": "", "start": "SEA", "end": "NYC", "time": "Wed, Mar 05, 2025", "x": ""}
        assert html_parse(page, {"category": "class",
                                 "class_multiObject_search_exist": {"crumb li": ["Toys", "is_other_exist"]}}) == {
            "Toys": True, "is_other_exist": True}
        assert html_parse(page, {"category": "label", "labelObject": {"Miles": "category"}}) == {"category": "Miles"}
        assert html_parse(page, {"category": "xpath", "xpathObject": {
            "//button[@data-automation='checkin']//div": "in", "//nav": "missing"}}) == {"in": "Check In", "missing": ""}
        assert html_parse(page, {"category": "input", "inputObject": {"//input[@id='q']": "q"}}) == {
            "q": "drip coffee maker"}
        assert html_parse(page, {"category": "class&url", "class_multiObject": {"crumb li": ["toys", "kids"]},
                                 "class_multiObject_li": {"cats": ["spider-man"]},
                                 "url_include_expected": ["about"]}) == {
            "toys": True, "kids": True, "is_other_exist": False, "spider-man": True, "about": True}
    finally:
        page.close()


def test_list_directory_of_a_huge_folder_is_an_evaluation_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_agent.errors import EvaluationError
    from kimi_agent.tasks import getters_os

    monkeypatch.setattr(getters_os, "MAX_TREE_ENTRIES", 20)  # 10,000 in a run
    for i in range(10):
        (tmp_path / "d" / f"s{i}").mkdir(parents=True)
        (tmp_path / "d" / f"s{i}" / "f").write_text("x")
    with pytest.raises(EvaluationError, match="list_directory: more than 20 files and folders"):
        getters_os._tree(tmp_path / "d")
    assert len(getters_os._tree(tmp_path / "d" / "s0")["children"]) == 1


def test_list_directory_does_not_walk_into_links(tmp_path: Path) -> None:
    """A task can leave a link loop (or a link to / ) in its home: the tree lists the link, not its inside."""
    from kimi_agent.tasks.getters_os import _tree

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.txt").write_text("x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "root").symlink_to("/")
    tree = _tree(tmp_path / "a")
    assert tree == {"name": "a", "type": "directory", "children": [
        {"name": "b", "type": "directory", "children": [{"name": "f.txt", "type": "file"}]},
        {"name": "loop", "type": "directory", "children": []},
        {"name": "root", "type": "directory", "children": []}]}
