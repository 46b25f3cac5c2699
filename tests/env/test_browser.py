"""BrowserEnv: every action type checked by the page, at two viewports / device scale factors.

Points are computed from element bounding boxes in CSS pixels and normalized by the viewport; the
model's screenshot geometry is a downscaled one in the first configuration, and the device scale
factor is 2 in the second (screenshots must still come back in CSS pixels).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.actions.geometry import Geometry
from kimi_agent.actions.types import (
    AskUser,
    Click,
    CloseTab,
    Done,
    Drag,
    GoBack,
    GoForward,
    Hotkey,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseUp,
    Move,
    Navigate,
    NewTab,
    NormPoint,
    Press,
    Reload,
    Scroll,
    SwitchTab,
    TypeText,
    Wait,
)
from kimi_agent.env.browser import BrowserEnv

CONFIGS = {"1280x800-shot640": ((1280, 800), 1.0, (640, 400)), "1024x640-dpr2": ((1024, 640), 2.0, None)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def benv(request: pytest.FixtureRequest, pw: Any, http_server: Any) -> Iterator[tuple[BrowserEnv, Geometry]]:
    viewport, dpr, shot = CONFIGS[request.param]
    with BrowserEnv(viewport=viewport, device_scale_factor=dpr, start_url=http_server.url("events.html")) as env:
        obs = env.observe()
        assert obs.image.size == viewport  # CSS pixels, whatever the device scale factor
        assert obs.geometry.device_pixel_ratio == dpr
        assert env.page.evaluate("devicePixelRatio") == dpr
        geometry = obs.geometry if shot is None else obs.geometry.model_copy(
            update={"shot_width": shot[0], "shot_height": shot[1]})
        yield env, geometry


@pytest.fixture()
def env(benv: tuple[BrowserEnv, Geometry], http_server: Any) -> Iterator[tuple[BrowserEnv, Geometry]]:
    browser_env, _ = benv
    browser_env.reset()
    yield benv


def point(env: BrowserEnv, selector: str, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float, NormPoint]:
    box = env.page.locator(selector).bounding_box()
    assert box is not None
    x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    w, h = env.page.evaluate("() => [innerWidth, innerHeight]")
    return x, y, NormPoint(x=x / w, y=y / h)


def events(env: BrowserEnv, *types: str) -> list[dict[str, Any]]:
    return [e for e in env.page.evaluate("window.__events") if not types or e["type"] in types]


def assert_at(event: dict[str, Any], x: float, y: float, tol: float = 1.5) -> None:
    assert abs(event["x"] - x) <= tol and abs(event["y"] - y) <= tol, (event, x, y)


@pytest.mark.parametrize(("button", "clicks", "dom_type"), [("left", 1, "click"), ("right", 1, "contextmenu"),
                                                           ("left", 2, "dblclick")])
def test_click(env: tuple[BrowserEnv, Geometry], button: str, clicks: int, dom_type: str) -> None:
    benv, geometry = env
    x, y, p = point(benv, "#target", 0.3, 0.7)
    out = benv.execute(Click(point=p, button=button, clicks=clicks, modifiers=("shift",)), geometry=geometry)
    assert out.ok, out.error
    assert out.executed[0] == "page.keyboard.down('Shift')" and out.executed[-1] == "page.keyboard.up('Shift')"
    (seen,) = events(benv, dom_type)
    assert seen["target"] == "target" and seen["shiftKey"] is True
    assert_at(seen, x, y)


def test_move_down_up_drag(env: tuple[BrowserEnv, Geometry]) -> None:
    benv, geometry = env
    x, y, p = point(benv, "#drag", 0.2, 0.4)
    assert benv.execute(Move(point=p), geometry=geometry).ok
    assert_at(events(benv, "mousemove")[-1], x, y)
    assert benv.observe().pointer is not None
    assert benv.execute(MouseDown(point=p), geometry=geometry).ok
    x2, y2, p2 = point(benv, "#drag", 0.7, 0.7)
    assert benv.execute(MouseUp(point=p2), geometry=geometry).ok
    assert_at(events(benv, "mousedown")[-1], x, y)
    assert_at(events(benv, "mouseup")[-1], x2, y2)
    x3, y3, p3 = point(benv, "#drag", 0.1, 0.1)
    x4, y4, p4 = point(benv, "#drag", 0.9, 0.9)
    assert benv.execute(Drag(start=p3, end=p4, duration_s=0.2), geometry=geometry).ok
    assert_at(events(benv, "mousedown")[-1], x3, y3)
    assert_at(events(benv, "mouseup")[-1], x4, y4)
    assert len([e for e in events(benv, "mousemove") if e["buttons"] == 1]) >= 2


@pytest.mark.parametrize(("direction", "axis", "sign"), [("down", "deltaY", 1), ("left", "deltaX", -1)])
def test_scroll(env: tuple[BrowserEnv, Geometry], direction: str, axis: str, sign: int) -> None:
    benv, geometry = env
    x, y, p = point(benv, "#scroller")
    assert benv.execute(Scroll(point=p, direction=direction, amount=3), geometry=geometry).ok
    (wheel,) = events(benv, "wheel")
    assert wheel[axis] * sign > 0
    assert_at(wheel, x, y)
    if direction == "down":
        assert benv.page.evaluate("document.getElementById('scroller').scrollTop") > 0


def test_typing_and_keys(env: tuple[BrowserEnv, Geometry]) -> None:
    benv, geometry = env
    _, _, p = point(benv, "#text")
    benv.execute(Click(point=p), geometry=geometry)
    out = benv.execute(TypeText(text="a<b é€ 中 😀 z"))
    assert out.ok
    assert "page.keyboard.insert_text(' é€ 中 😀 ')" not in out.executed  # runs split on ASCII
    assert any(c.startswith("page.keyboard.insert_text(") for c in out.executed)
    assert benv.page.input_value("#text") == "a<b é€ 中 😀 z"
    assert benv.execute(Press(key="backspace", presses=2)).ok
    assert benv.page.input_value("#text") == "a<b é€ 中 😀"
    assert benv.execute(Hotkey(keys=("ctrl", "a"))).ok
    assert benv.execute(KeyDown(key="shift")).ok
    benv.execute(Press(key="q"))
    assert benv.execute(KeyUp(key="shift")).ok
    assert benv.page.input_value("#text") == "Q"
    assert "Shift" in [e["key"] for e in events(benv, "keyup")]


def test_history_and_tabs(env: tuple[BrowserEnv, Geometry], http_server: Any) -> None:
    benv, _ = env
    assert benv.execute(Navigate(url=http_server.url("page2.html"))).ok
    assert benv.observe().title == "page two"
    assert benv.execute(GoBack()).ok and benv.page.url.endswith("/events.html")
    assert benv.execute(GoForward()).ok and benv.page.url.endswith("/page2.html")
    benv.page.evaluate("window.__marker = 1")
    assert benv.execute(Reload()).ok and benv.page.evaluate("window.__marker") is None
    _, _, link = point(benv, "#popup")
    assert benv.execute(Click(point=link)).ok  # target=_blank: the popup becomes the current tab
    benv.page.wait_for_load_state()
    assert benv.page.url.endswith("/events.html") and len(benv.context.pages) == 2
    assert benv.execute(NewTab(url=http_server.url("page2.html?third"))).ok
    assert benv.observe().url.endswith("page2.html?third") and len(benv.context.pages) == 3
    assert benv.execute(SwitchTab(index=0)).ok and benv.page.url.endswith("/page2.html")
    refused = benv.execute(SwitchTab(index=7))
    assert not refused.ok and "3 tab(s)" in str(refused.error)
    assert benv.execute(CloseTab()).ok and len(benv.context.pages) == 2
    assert not benv.page.is_closed()


def test_wait_done_ask_user(env: tuple[BrowserEnv, Geometry]) -> None:
    benv, _ = env
    out = benv.execute(Wait(seconds=0.2))
    assert out.ok and out.executed == ["page.wait_for_timeout(200.0)"] and out.exec_ms >= 200
    for action in (Done(), AskUser(question="?")):
        out = benv.execute(action)
        assert out.ok and out.executed == []


def test_url_allowlist(pw: Any, http_server: Any) -> None:
    allowed = [http_server.url("*")]
    with BrowserEnv(viewport=(800, 600), start_url=http_server.url("page2.html"), allowed_urls=allowed) as env:
        out = env.execute(Navigate(url="https://example.com/"))
        assert not out.ok and "allowlist" in str(out.error) and out.executed == []
        env.page.evaluate("document.getElementById('popup').removeAttribute('target');"
                          "document.getElementById('popup').href = 'http://localhost:9/elsewhere'")
        _, _, link = point(env, "#popup")
        out = env.execute(Click(point=link))
        assert not out.ok and "blocked" in str(out.error)
        assert env.blocked_urls[-1] == "http://localhost:9/elsewhere"
        assert env.execute(Navigate(url=http_server.url("events.html"))).ok


def test_persistent_profile_reaches_chrome_settings(pw: Any, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    with BrowserEnv(viewport=(1280, 900), user_data_dir=profile) as env:
        assert env.execute(Navigate(url="chrome://settings/cookies")).ok
        assert env.page.evaluate("() => new Promise(r => chrome.settingsPrivate.setPref("
                                 "'enable_do_not_track', true, '', r))") is True
    prefs = json.loads((profile / "Default" / "Preferences").read_text())
    assert prefs["enable_do_not_track"] is True


def test_headed_in_a_private_xvfb_and_attach_to_desktop_chromium(pw: Any, http_server: Any,
                                                                  tmp_path: Path) -> None:
    with BrowserEnv(headless=False, viewport=(800, 600), start_url=http_server.url("events.html")) as env:
        assert env._xvfb is not None and env._xvfb.running
        _, _, p = point(env, "#target")
        assert env.execute(Click(point=p)).ok and len(events(env, "click")) == 1
    assert not env._xvfb.running

    from kimi_agent.env.desktop import DesktopEnv

    with DesktopEnv(window_manager=False) as desktop:
        chromium = desktop.start_chromium(tmp_path / "p", url=http_server.url("events.html"))
        with BrowserEnv.attach(chromium.cdp_url) as attached:
            obs = attached.observe()
            assert obs.url == http_server.url("events.html")
            assert obs.image.size == (obs.geometry.exec_width, obs.geometry.exec_height)
            x, y, p = point(attached, "#target", 0.8, 0.2)
            assert attached.execute(Click(point=p)).ok
            (click,) = events(attached, "click")
            assert_at(click, x, y)
        assert chromium.running  # attach/close only disconnected


def test_focused_is_password_asks_the_page(env: tuple[BrowserEnv, Geometry]) -> None:
    benv, geometry = env
    _, _, p = point(benv, "#text")
    assert benv.execute(Click(point=p), geometry=geometry).ok
    assert benv.focused_is_password() is False
    benv.page.evaluate("document.getElementById('text').type = 'password'")
    assert benv.focused_is_password() is True
