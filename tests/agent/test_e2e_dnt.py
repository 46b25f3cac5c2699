"""End to end on a real desktop: Chromium under Xvfb, clicks through pyautogui, the real setting.

The model is the scripted backend (a test double). It answers in the exact Kimi format and computes
every point at run time from the live page: Playwright (over Chromium's debugging port, CSS
locators pierce shadow DOM) gives the element's CSS box, the window offset turns it into screen
pixels, and dividing by the screenshot size gives the normalized point the model would write.
So the test exercises prompt -> reply -> parse -> coordinate mapping -> pyautogui click in the real
window -> Chromium's real preference, checked in `Default/Preferences` after a graceful close.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kimi_agent import Agent, AgentSettings
from kimi_agent.model_runtime.backends.scripted import ScriptCall, ScriptedBackend
from kimi_agent.trajectory import read_steps

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                reason="needs Xvfb and Chromium")

GET_DNT = "() => new Promise(r => chrome.settingsPrivate.getPref('enable_do_not_track', p => r(p.value)))"
# Screen offset of the page's (0, 0): window position + frame border + toolbar height.
OFFSET = """() => { const b = (outerWidth - innerWidth) / 2;
                    return [screenX + b, screenY + outerHeight - innerHeight - b, devicePixelRatio]; }"""


def evaluate(page: Any, script: str) -> Any:
    """page.evaluate, retried (bounded) while a navigation replaces the page's execution context:
    after a click, the navigation it starts may not have begun when wait_for_load_state returns."""
    from playwright.sync_api import Error as PlaywrightError

    for _ in range(50):
        try:
            return page.evaluate(script)
        except PlaywrightError as e:
            if "context was destroyed" not in str(e) and "navigation" not in str(e):
                raise
            page.wait_for_load_state()
            page.wait_for_timeout(100)
    return page.evaluate(script)


def kimi(thought: str, action: str, code: str) -> str:
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


class DntScript:
    """Decides the next reply from the live page state (robust to retries and slow renders)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.seen: list[str] = []

    def point(self, locator: Any, call: ScriptCall) -> tuple[float, float]:
        locator.wait_for(state="visible", timeout=10_000)
        box = locator.bounding_box()
        ox, oy, dpr = evaluate(self.page, OFFSET)
        w, h = call.screenshot.size
        x = (ox + (box["x"] + box["width"] / 2)) * dpr
        y = (oy + (box["y"] + box["height"] / 2)) * dpr
        return round(x / w, 4), round(y / h, 4)

    def click(self, call: ScriptCall, locator: Any, thought: str, action: str) -> str:
        x, y = self.point(locator, call)
        return kimi(thought, action, f"pyautogui.click(x={x}, y={y})")

    def __call__(self, call: ScriptCall) -> str:
        page = self.page
        page.wait_for_load_state()  # a click may have started a navigation; evaluate needs a live context
        url = evaluate(page, "() => location.href")
        confirm = page.get_by_role("button", name="Confirm")
        if url.startswith("chrome://settings") and evaluate(page, GET_DNT):
            self.seen.append("done")
            return kimi("The Do Not Track request is now enabled.", "Report that the task is done.",
                        "computer.terminate(status='success', answer='Do Not Track is on')")
        if confirm.count() and confirm.first.is_visible():
            self.seen.append("confirm")
            return self.click(call, confirm.first, "A dialog asks to confirm Do Not Track.", "Click Confirm in the dialog.")
        if url.startswith("chrome://settings/cookies"):
            self.seen.append("toggle")
            toggle = page.locator("#doNotTrack cr-toggle")
            return self.click(call, toggle, "The Advanced section has the Do Not Track toggle.",
                              "Click the toggle 'Send a Do Not Track request with your browsing traffic'.")
        if url.startswith("chrome://settings/privacy"):
            self.seen.append("cookies")
            row = page.get_by_text("Third-party cookies", exact=True)
            return self.click(call, row, "Cookie settings hold Do Not Track.", "Open 'Third-party cookies'.")
        if url.startswith("chrome://settings"):
            self.seen.append("privacy")
            item = page.get_by_role("menuitem", name="Privacy and security")
            return self.click(call, item, "Settings are open.", "Click 'Privacy and security' in the left menu.")
        self.seen.append("open")
        return kimi("The browser shows a new tab; I will open the settings.", "Type chrome://settings in the address bar.",
                    "pyautogui.hotkey('ctrl', 'l')\npyautogui.write('chrome://settings')\npyautogui.press('enter')")


@pytest.fixture
def desktop(tmp_path: Path, pw: Any) -> Iterator[tuple[Any, Any, Any]]:
    from kimi_agent.env.desktop import DesktopEnv

    env = DesktopEnv(width=1920, height=1080)
    try:
        chromium = env.start_chromium(tmp_path / "profile")
        browser = pw.chromium.connect_over_cdp(chromium.cdp_url)
        page = browser.contexts[0].pages[0]
        yield env, chromium, page
        browser.close()  # disconnects Playwright only; the Chromium process is the env's
    finally:
        env.close()


def test_do_not_track_end_to_end(tmp_path: Path, desktop: tuple[Any, Any, Any]) -> None:
    env, chromium, page = desktop
    env.settle()

    # A run that must fail: bad points are rejected (never clicked), retried, and the budget ends it.
    bad = [kimi("The toggle is here.", "Click the toggle.", "pyautogui.click(x=0.0, y=0.0)"),
           kimi("The toggle is here.", "Click the toggle.", "pyautogui.click(x=-0.2, y=1.4)")] * 3
    strict = AgentSettings(out_dir=tmp_path / "runs", max_attempts=2, max_failures=3)
    failed = Agent(ScriptedBackend(bad), env, strict).run_episode("enable Do Not Track")
    assert failed.status == "error" and "consecutive failures" in failed.reason
    steps = read_steps(failed.run_dir)
    kinds = [a["kind"] for s in steps for a in s["attempts"]]
    assert kinds == ["degenerate", "off_screen", "degenerate"]
    assert all(not s["actions"] for s in steps)

    # The real run.
    script = DntScript(page)
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=12)
    result = Agent(ScriptedBackend(script), env, settings).run_episode("enable Do Not Track")
    assert result.status == "success", result.reason
    assert script.seen == ["open", "privacy", "cookies", "toggle", "confirm", "done"]
    steps = read_steps(result.run_dir)
    clicks = [a for s in steps for a in s["actions"] if a["action"]["type"] == "click"]
    assert len(clicks) == 4 and all(c["ok"] and c["executed"][0].startswith("pyautogui.click") for c in clicks)
    for c in clicks:  # model point == normalized point; executed pixel = normalized x screen size
        assert c["model_xy"] == c["norm_xy"]
        (nx, ny), (ex, ey) = c["norm_xy"][0], c["exec_xy"][0]
        assert abs(nx * 1920 - ex) <= 1 and abs(ny * 1080 - ey) <= 1

    overhead = [s["durations_ms"].get("observe", 0) + s["durations_ms"].get("parse", 0)
                + s["durations_ms"].get("execute", 0) for s in steps]
    phases = {k: statistics.median(s["durations_ms"].get(k, 0) for s in steps)
              for k in ("observe", "parse", "execute", "settle", "model")}
    print(f"\nDNT per-step overhead observe+parse+execute (ms): {[round(o, 1) for o in overhead]}, "
          f"median {statistics.median(overhead):.1f}; phase medians {phases}")

    env.close()  # stops Chromium gracefully: it writes Preferences on the way out
    assert not chromium.running
    prefs = json.loads((tmp_path / "profile" / "Default" / "Preferences").read_text())
    assert prefs.get("enable_do_not_track") is True
