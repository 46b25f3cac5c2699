"""The getters that load pages in the worker's browser, the profile's extension paths and
`compare_pdfs`, scored both ways with the real task files' own evaluators (121ba48f page_info,
e1e75309 pdf_from_url, 93eabf48 chrome_appearance_mode_ui, 6766f2b8 find_unpacked_extension_path,
b4f95342 gotoRecreationPage_and_get_html_content) on a real Chromium on a private Xvfb.

Internet pages are replaced by local pages of the same structure (tests/support/page_server.py);
the task files' URLs are swapped for them, nothing else is changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.desk import local_desk
from support.page_server import page_server

from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.context import EpisodeEnd, EvalContext
from kimi_agent.tasks.evaluate import evaluate, run_steps
from kimi_agent.tasks.getters import _page_targets
from kimi_agent.tasks.getters_page import get_chrome_appearance_mode_ui, get_page_info
from kimi_agent.tasks.spec import GetterConfig, TaskSpec

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                reason="needs Xvfb and Chromium")

CHROME_EVAL = Path(__file__).parents[1] / "fixtures" / "osworld" / "chrome_eval"

ARTICLE = b"""<!doctype html><html><head><title>LLM Powered Autonomous Agents | Lil'Log</title></head>
<body><h1>LLM Powered Autonomous Agents</h1>
<p>Building agents with LLM (large language model) as its core controller is a cool concept.</p>
<p>Agent System Overview: planning, memory and tool use.</p></body></html>"""
OTHER_ARTICLE = b"""<!doctype html><html><head><title>Prompt Engineering</title></head>
<body><h1>Prompt Engineering</h1><p>Zero-shot and few-shot learning.</p></body></html>"""
# The Steam cart: items the shop page put into localStorage (the browser's state, not the server's).
STORE = b"""<!doctype html><title>Dota 2 on Steam</title><button id="add"
  onclick="localStorage.setItem('cart', JSON.stringify(['The Dota 2 Official Soundtrack']))">Add to Cart</button>"""
CART = b"""<!doctype html><title>Shopping Cart</title><ul id="cart"></ul><script>
for (const item of JSON.parse(localStorage.getItem('cart') || '[]')) {
  const li = document.createElement('li'); li.textContent = item; document.getElementById('cart').append(li); }
</script>"""
# recreation.gov's structure: home search -> results -> a campground (new tab) -> Next Available.
REC_HOME = b"""<!doctype html><title>Recreation.gov</title><input id="hero-search-input">
<button class="nav-search-button" onclick="location.href='/search?q='+
  encodeURIComponent(document.getElementById('hero-search-input').value)">Search</button>"""
REC_SEARCH = b"""<!doctype html><title>Search</title><script>
if (new URLSearchParams(location.search).get('q') === 'Diamond') document.write(
  '<a class="search-result-highlight--success" target="_blank" href="/camping/campgrounds/233">Diamond Lake</a>');
</script>"""
REC_CAMP = b"""<!doctype html><title>Diamond Lake</title><button class="next-available" onclick="
  document.querySelectorAll('.camp-sortable-column-header').forEach((h, i) => h.textContent = 'Jul ' + (14 + i))">
Next Available</button><table><tr><th class="camp-sortable-column-header">Site</th>
<th class="camp-sortable-column-header">Jun 1</th><th class="camp-sortable-column-header">Jun 2</th>
<th class="camp-sortable-column-header">Jun 3</th></tr></table>"""

PAGES = {"/article": ARTICLE, "/other": OTHER_ARTICLE, "/app/2570/Dota_2/": STORE, "/cart/": CART,
         "/": REC_HOME, "/camping/campgrounds/233": REC_CAMP}


def _respond(path: str) -> tuple[bytes, str]:
    if path.startswith("/search"):
        return REC_SEARCH, "text/html"
    return PAGES.get(path, b"<title>404</title>not found"), "text/html"


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with page_server(_respond) as base:
        yield base


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_desk(tmp_path_factory.mktemp("worker") / "home") as (_env, host):
        yield host


def _task(prefix: str, **swap: dict[str, Any]) -> TaskSpec:
    """The real task file, with `evaluator.<key>` entries updated by `swap` (local URLs)."""
    [path] = CHROME_EVAL.glob(f"{prefix}*.json")
    raw = json.loads(path.read_text())
    for key, update in swap.items():
        raw["evaluator"][key].update(update)
    return TaskSpec.model_validate(raw)


def _fresh(host: Any, *browser_args: str) -> Any:
    """A reset worker with its browser started; returns the agent's (only) tab."""
    host.reset()
    host.start_browser(list(browser_args))
    return host.with_cdp().contexts[0].pages[0]


def _score(host: Any, spec: TaskSpec, tmp_path: Path) -> float:
    return evaluate(spec, host, EpisodeEnd("success"), cache_dir=tmp_path / "cache").score


def _ctx(host: Any, tmp_path: Path) -> EvalContext:
    return EvalContext(host=host, episode=EpisodeEnd("success"), cache_dir=tmp_path / "cache")


def test_real_internet_getters_need_the_network() -> None:
    offline = {t.id[:8]: t for t in load_tasks(CHROME_EVAL)}
    online = {t.id[:8]: t for t in load_tasks(CHROME_EVAL, allow_network=True)}
    assert "network: getter 'page_info' needs https://store.steampowered.com/cart/" in offline["121ba48f"].reasons
    assert ("network: getter 'pdf_from_url' needs https://lilianweng.github.io/posts/2023-06-23-agent/"
            in offline["e1e75309"].reasons)
    assert ("network: getter 'gotoRecreationPage_and_get_html_content' needs https://www.recreation.gov/"
            in offline["b4f95342"].reasons)
    for prefix in ("121ba48f", "e1e75309", "b4f95342", "6766f2b8"):
        assert online[prefix].status == "runnable", online[prefix].reasons
    assert offline["93eabf48"].status == "runnable"


# ---------------------------------------------------------------- page_info (121ba48f)

def test_page_info_reads_the_cart_of_the_agents_browser(desk: Any, site: str, tmp_path: Path) -> None:
    spec = _task("121ba48f", result={"url": f"{site}/cart/"})
    tab = _fresh(desk)
    tab.goto(f"{site}/app/2570/Dota_2/")
    assert _score(desk, spec, tmp_path) == 0.0, "an empty cart must not pass"

    tab = _fresh(desk)
    tab.goto(f"{site}/app/2570/Dota_2/")
    tab.click("#add")
    info = get_page_info(_ctx(desk, tmp_path), GetterConfig(type="page_info", url=f"{site}/cart/"))
    assert info["title"] == "Shopping Cart" and info["url"] == f"{site}/cart/"
    assert "<li>The Dota 2 Official Soundtrack</li>" in info["content"]
    assert [t["url"] for t in _page_targets(_ctx(desk, tmp_path))] == [f"{site}/app/2570/Dota_2/"], \
        "the getter's tab is closed and the agent's tab is still the active one"
    assert _score(desk, spec, tmp_path) == 1.0


def test_page_info_starts_the_browser_the_agent_closed(desk: Any, site: str, tmp_path: Path) -> None:
    tab = _fresh(desk)
    tab.goto(f"{site}/app/2570/Dota_2/")
    tab.click("#add")
    desk.stop_browser()
    spec = _task("121ba48f", result={"url": f"{site}/cart/"})
    assert _score(desk, spec, tmp_path) == 1.0  # the cart lives in the profile, as OSWorld reads it


# ---------------------------------------------------------------- pdf_from_url + compare_pdfs (e1e75309)

def _print_to_desktop(host: Any, url: str) -> Path:
    out = host.paths.map_path("/home/user/Desktop/LLM Powered Autonomous Agents _ Lil'Log.pdf")
    page = host.with_cdp().contexts[0].new_page()
    page.goto(url)
    page.pdf(path=out)
    page.close()
    return out


def test_pdf_of_the_page_scores_against_the_gold_pdf(desk: Any, site: str, tmp_path: Path) -> None:
    spec = _task("e1e75309", expected={"path": f"{site}/article"})
    _fresh(desk)
    assert _score(desk, spec, tmp_path) == 0.0, "no PDF on the Desktop must not pass"

    _fresh(desk)
    _print_to_desktop(desk, f"{site}/other")
    wrong = _score(desk, spec, tmp_path)
    assert wrong < 0.5

    _fresh(desk)
    _print_to_desktop(desk, f"{site}/article")
    ev = evaluate(spec, desk, EpisodeEnd("success"), cache_dir=tmp_path / "cache2")
    assert ev.score == 1.0
    gold = Path(ev.metrics[0].expected)
    assert gold.parent == tmp_path / "cache2" and gold.name == "LLM Powered Autonomous Agents _ Lil'Log_gold.pdf"
    assert gold.read_bytes().startswith(b"%PDF-")


# ---------------------------------------------------------------- chrome_appearance_mode_ui (93eabf48)

def _dark_mode_task(host: Any) -> TaskSpec:
    """Task 93eabf48 set up with its own steps (Preferences edited to dark mode, browser started,
    its window "Google Chrome" activated)."""
    spec = _task("93eabf48")
    host.reset()
    run_steps(host, spec.config)
    return spec


def _choose_mode(host: Any, value: str) -> Any:
    tab = host.with_cdp().contexts[0].pages[0]
    tab.goto("chrome://settings/appearance")
    tab.locator("#colorSchemeModeSelect").select_option(value)  # the user's choice in the Mode menu
    return tab


def test_appearance_mode_scores_the_real_task_both_ways(desk: Any, tmp_path: Path) -> None:
    spec = _dark_mode_task(desk)
    assert get_chrome_appearance_mode_ui(_ctx(desk, tmp_path), GetterConfig(type="x")) == "dark"
    assert _score(desk, spec, tmp_path) == 0.0

    spec = _dark_mode_task(desk)
    desk.with_cdp().contexts[0].pages[0].goto("chrome://settings/appearance")
    assert _score(desk, spec, tmp_path) == 0.0, "opening the page without turning dark mode off must not pass"

    for value, mode in (("1", "light"), ("0", "system")):
        spec = _dark_mode_task(desk)
        _choose_mode(desk, value)
        assert get_chrome_appearance_mode_ui(_ctx(desk, tmp_path), GetterConfig(type="x")) == mode
        assert _score(desk, spec, tmp_path) == 1.0


def test_appearance_mode_from_preferences_when_the_browser_is_closed(desk: Any, tmp_path: Path) -> None:
    _dark_mode_task(desk)
    _choose_mode(desk, "1")
    desk.stop_browser()
    assert get_chrome_appearance_mode_ui(_ctx(desk, tmp_path), GetterConfig(type="x")) == "light"
    _dark_mode_task(desk)
    desk.stop_browser()
    assert get_chrome_appearance_mode_ui(_ctx(desk, tmp_path), GetterConfig(type="x")) == "dark"


# ---------------------------------------------------------------- find_unpacked_extension_path (6766f2b8)

def test_unpacked_extension_path_both_ways(desk: Any, tmp_path: Path) -> None:
    spec = _task("6766f2b8")
    _fresh(desk)
    assert _score(desk, spec, tmp_path) == 0.0

    desk.reset()
    ext = desk.paths.map_path("/home/user/Desktop/helloExtension")
    ext.mkdir(parents=True)
    (ext / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "Hello Extensions",
                                                   "version": "1.0"}))
    desk.start_browser([f"--load-extension={ext}"])
    ev = evaluate(spec, desk, EpisodeEnd("success"), cache_dir=tmp_path / "cache")
    assert "/home/user/Desktop/helloExtension" in ev.metrics[0].result
    assert ev.score == 1.0


# ---------------------------------------------------------------- gotoRecreationPage (b4f95342)

def test_recreation_next_available_both_ways(desk: Any, site: str, tmp_path: Path) -> None:
    spec = _task("b4f95342", expected={"url": f"{site}/"})
    tab = _fresh(desk)
    tab.goto(f"{site}/camping/campgrounds/233")
    ev = evaluate(spec, desk, EpisodeEnd("success"), cache_dir=tmp_path / "cache")
    assert ev.metrics[0].expected == {"expected": {"camp-sortable-column-header": "Jul 16"}}
    assert ev.score == 0.0, "the campground without Next Available pressed must not pass"

    tab.click("button.next-available")
    assert _score(desk, spec, tmp_path) == 1.0
    assert [t["url"] for t in _page_targets(_ctx(desk, tmp_path))] == [f"{site}/camping/campgrounds/233"]
