"""BrowserEnv against hostile pages (red-team findings F1, F5, F8, F9, F11, F13, F15).

Real Chromium, real local servers: ALLOWED serves the pages, FORBIDDEN plays another origin and
logs what reaches it; a raw TCP listener and a UDP socket stand in for TURN and STUN servers. An
escape is a request, a connection or a datagram that arrived where the allowlist forbids it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.actions.types import Click, Navigate, NormPoint, SwitchTab, TypeText, Wait
from kimi_agent.env import browser as browser_mod
from kimi_agent.env.browser import BrowserEnv

FULL = NormPoint(x=0.5, y=0.5)
BUSY_ONCE = ("<!doctype html><title>busy</title><body style='margin:0'><p>busy</p><script>"
             "if (!localStorage.getItem('busy')) { localStorage.setItem('busy', '1');"
             " setTimeout(() => { for (;;) {} }, 1500); }</script>")
BUSY_ALWAYS = "<!doctype html><title>busy</title><p>busy</p><script>setTimeout(() => { for (;;) {} }, 300)</script>"


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = self.server.pages.get(self.path.split("?")[0], f"<title>{self.path}</title><p>{self.path}</p>")
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: list[str] = []
        self.pages: dict[str, str] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Listeners:
    """A TCP listener (a TURN server) and a UDP socket (a STUN server) that record what arrives."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.got: list[tuple[str, bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            self.got.append(("tcp", conn.recv(64)))
            conn.close()

    def _receive(self) -> None:
        while True:
            try:
                data, _ = self.udp.recvfrom(2048)
            except OSError:
                return
            self.got.append(("udp", data[:20]))

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[_Site, _Site]]:
    allowed, forbidden = _Site(), _Site()
    yield allowed, forbidden
    for site in (allowed, forbidden):
        site.shutdown()
        site.server_close()


@pytest.fixture(scope="module")
def guarded(pw: Any, sites: tuple[_Site, _Site]) -> Iterator[BrowserEnv]:
    allowed, _ = sites
    with BrowserEnv(viewport=(800, 600), start_url=allowed.url("/"), allowed_urls=[allowed.url("")]) as env:
        yield env


@pytest.fixture()
def open_env(pw: Any, sites: tuple[_Site, _Site]) -> Iterator[BrowserEnv]:
    with BrowserEnv(viewport=(800, 600), start_url=sites[0].url("/")) as env:
        yield env


# -- F1, F8: what Chromium fetches by itself ----------------------------------------------------


def test_speculation_rules_prefetch_and_prerender_do_not_escape(guarded: BrowserEnv,
                                                                sites: tuple[_Site, _Site]) -> None:
    allowed, forbidden = sites
    secret = forbidden.url("/secret.html")
    allowed.pages["/prerender.html"] = (
        '<!doctype html><title>pr</title><script type="speculationrules">'
        f'{{"prefetch":[{{"source":"list","urls":["{forbidden.url("/spec-prefetch")}"]}}],'
        f'"prerender":[{{"source":"list","urls":["{secret}"]}}]}}</script>'
        f'<body style="margin:0"><a href="{secret}" style="display:block;width:100vw;height:100vh">click me</a>')
    forbidden.hits.clear()
    assert guarded.execute(Navigate(url=allowed.url("/prerender.html"))).ok
    guarded.execute(Wait(seconds=3))
    out = guarded.execute(Click(point=FULL))  # a prerendered page would be activated here
    assert forbidden.hits == [], forbidden.hits
    assert not out.ok and secret in str(out.error)  # the click's navigation is refused and reported
    assert guarded.observe().url != secret


def test_webrtc_reaches_no_stun_or_turn_server(guarded: BrowserEnv, sites: tuple[_Site, _Site]) -> None:
    allowed, _ = sites
    ears = _Listeners()
    try:
        allowed.pages["/rtc.html"] = f"""<!doctype html><title>rtc</title><script>
          const pc = new RTCPeerConnection({{iceServers: [
            {{urls: 'turn:127.0.0.1:{ears.tcp_port}?transport=tcp', username: 'exfil', credential: 'x'}},
            {{urls: 'stun:127.0.0.1:{ears.udp_port}'}}]}});
          pc.createDataChannel('x');
          pc.createOffer().then(o => pc.setLocalDescription(o)).then(() => document.title = 'offered');
        </script>"""
        assert guarded.execute(Navigate(url=allowed.url("/rtc.html"))).ok
        guarded.execute(Wait(seconds=4))
        assert guarded.page.title() == "offered"  # WebRTC itself still runs; it only cannot get out
        assert ears.got == []
    finally:
        ears.close()


# -- F13: an encoded slash under a path-limited entry -------------------------------------------


def test_encoded_slash_does_not_leave_a_path_prefix(pw: Any, sites: tuple[_Site, _Site]) -> None:
    allowed, _ = sites
    allowed.pages["/docs/index.html"] = "<title>docs</title><p>docs</p>"
    allowed.pages["/docs/jump.html"] = "<title>jump</title><script>location.href = '/docs/..%2fsecret.html'</script>"
    with BrowserEnv(viewport=(800, 600), start_url=allowed.url("/docs/index.html"),
                    allowed_urls=[allowed.url("/docs/")]) as env:
        allowed.hits.clear()
        out = env.execute(Navigate(url=allowed.url("/docs/..%2fsecret.html")))
        assert not out.ok and "blocked" in str(out.error)
        env.execute(Navigate(url=allowed.url("/docs/jump.html")))
        env.settle()
        assert [h for h in allowed.hits if "secret" in h] == []
        assert any("..%2fsecret" in b.url for b in env.blocked), env.blocked
        assert env.execute(Navigate(url=allowed.url("/docs/a%2Fb.html"))).ok  # still under /docs/


# -- F11: popups -------------------------------------------------------------------------------


def test_a_page_cannot_open_popups_without_a_gesture(open_env: BrowserEnv, sites: tuple[_Site, _Site]) -> None:
    allowed, _ = sites
    allowed.pages["/flood.html"] = """<!doctype html><title>flood</title><script>
      let n = 0; const t = setInterval(() => { const w = window.open('about:blank');
        if (w) w.document.write('<title>DONE</title>'); if (++n >= 40) clearInterval(t); }, 20);</script>"""
    assert open_env.execute(Navigate(url=allowed.url("/flood.html"))).ok
    open_env.execute(Wait(seconds=2))
    assert len(open_env.context.pages) == 1
    assert open_env.observe().title == "flood"


def test_popups_are_followed_when_the_model_opens_them_and_capped(open_env: BrowserEnv, sites: tuple[_Site, _Site],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    allowed, _ = sites
    monkeypatch.setattr(browser_mod, "MAX_PAGES", 2)
    allowed.pages["/opener.html"] = ("<!doctype html><title>opener</title><body style='margin:0'>"
                                     "<div style='width:100vw;height:100vh' onclick=\"window.open('/popped.html')\">"
                                     "open</div>")
    allowed.pages["/popped.html"] = "<title>popped</title><p>popped</p>"
    assert open_env.execute(Navigate(url=allowed.url("/opener.html"))).ok
    assert open_env.execute(Click(point=FULL)).ok
    assert len(open_env.context.pages) == 2
    assert open_env.page.url == allowed.url("/popped.html")  # the model's click opened it: followed
    assert open_env.execute(SwitchTab(index=0)).ok
    assert open_env.execute(Click(point=FULL)).ok
    open_env.execute(Wait(seconds=1))
    assert len(open_env.context.pages) == 2  # the third tab was closed at once
    assert open_env.page.url == allowed.url("/opener.html")


# -- F9: password fields out of the top document ------------------------------------------------


@pytest.mark.parametrize("where", ["same_origin_iframe", "cross_origin_iframe", "open_shadow_root"])
def test_password_fields_in_frames_and_shadow_roots_are_seen(open_env: BrowserEnv, sites: tuple[_Site, _Site],
                                                             where: str) -> None:
    allowed, forbidden = sites
    fields = "<input id=t type=text><input id=p type=password>"
    allowed.pages["/fields.html"] = forbidden.pages["/fields.html"] = f"<title>fields</title>{fields}"
    allowed.pages["/host.html"] = {
        "same_origin_iframe": f"<title>host</title><iframe src='{allowed.url('/fields.html')}'></iframe>",
        "cross_origin_iframe": f"<title>host</title><iframe src='{forbidden.url('/fields.html')}'></iframe>",
        "open_shadow_root": "<title>host</title><div id=h></div><script>document.getElementById('h')"
                            f".attachShadow({{mode: 'open'}}).innerHTML = `{fields}`;</script>",
    }[where]
    assert open_env.execute(Navigate(url=allowed.url("/host.html"))).ok
    page = open_env.page
    scope = (page.locator("#h") if where == "open_shadow_root" else page.frame_locator("iframe"))
    for field, expected in (("#p", True), ("#t", False)):
        box = scope.locator(field).bounding_box()
        assert box is not None
        point = NormPoint(x=(box["x"] + box["width"] / 2) / 800, y=(box["y"] + box["height"] / 2) / 600)
        assert open_env.execute(Click(point=point)).ok
        assert open_env.focused_is_password() is expected, (where, field)


# -- F5: a page that never answers --------------------------------------------------------------


@pytest.fixture()
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser_mod, "ACTION_TIMEOUT_S", 2.0)
    monkeypatch.setattr(browser_mod, "HANG_GRACE_S", 0.5)
    monkeypatch.setattr(browser_mod, "PASSWORD_CHECK_TIMEOUT_S", 1.5)


@pytest.mark.parametrize("action", [Click(point=FULL), TypeText(text="hello")], ids=["click", "type"])
def test_a_busy_page_fails_the_action_and_is_replaced(open_env: BrowserEnv, sites: tuple[_Site, _Site],
                                                      short_bounds: None, action: Any) -> None:
    allowed, _ = sites
    allowed.pages["/busy.html"] = BUSY_ONCE
    open_env.page.evaluate("() => localStorage.clear()")
    assert open_env.execute(Navigate(url=allowed.url("/busy.html"))).ok
    assert open_env.observe().url == allowed.url("/busy.html")
    open_env.page.wait_for_timeout(1700)  # the page's loop has started
    hung = open_env.page
    start = time.perf_counter()
    out = open_env.execute(action)
    took = time.perf_counter() - start
    assert not out.ok and f"{action.type} hung" in str(out.error), out.error
    assert "did not return within 2." in str(out.error), out.error  # the bound, not 15 s or forever
    assert took < 2.5 + browser_mod.RECOVER_TIMEOUT_S + browser_mod.SETTLE_GRAB_TIMEOUT_S + 3, took
    assert hung.is_closed() and open_env.page is not hung
    obs = open_env.observe()  # the episode goes on, in a fresh tab at the last good URL
    assert obs.url == allowed.url("/busy.html") and obs.title == "busy"
    assert open_env.execute(Click(point=FULL)).ok


def test_a_busy_page_cannot_hang_the_password_check(open_env: BrowserEnv, sites: tuple[_Site, _Site],
                                                    short_bounds: None) -> None:
    allowed, _ = sites
    allowed.pages["/busy-always.html"] = BUSY_ALWAYS
    assert open_env.execute(Navigate(url=allowed.url("/busy-always.html"))).ok
    open_env.page.wait_for_timeout(600)
    start = time.perf_counter()
    assert open_env.focused_is_password() is None  # cannot tell
    assert time.perf_counter() - start < 1.5 + browser_mod.RECOVER_TIMEOUT_S + 2


def test_arun_ends_a_hung_step_within_its_budget(sites: tuple[_Site, _Site], tmp_path: Path) -> None:
    from kimi_agent import Agent, AgentSettings
    from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
    from kimi_agent.trajectory import read_run, read_steps

    allowed, _ = sites
    allowed.pages["/busy-later.html"] = BUSY_ALWAYS.replace("300", "1500")
    reply = "## Thought\nclick\n\n## Action\nclick\n\n## Code\n```python\n{}\n```\n"
    replies = [reply.format("time.sleep(2)\npyautogui.click(x=0.5, y=0.5)"),
               reply.format("computer.terminate(status='success')")]
    agent = Agent(ScriptedBackend(replies),
                  lambda: BrowserEnv(viewport=(800, 600), start_url=allowed.url("/busy-later.html")),
                  AgentSettings(out_dir=tmp_path, max_seconds=6.0, settle=False))

    async def main() -> Any:
        try:
            return await asyncio.wait_for(agent.arun("click the page", artifacts=False), timeout=60)
        finally:
            await agent.aclose()

    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # an asyncio application's thread (this one runs Playwright's loop)
        result = pool.submit(asyncio.run, main()).result(timeout=90)
    took = time.perf_counter() - start
    assert result.status == "error" and "hung in execute (click" in result.reason, result.reason
    assert took < 6.0 + 8.0, took  # the budget, plus starting the browser; not the 15 s call bound
    assert read_run(result.run_dir)["status"] == "error"
    [step] = read_steps(result.run_dir)  # the hung step is recorded
    assert step["error"].startswith("interrupted in execute (click"), step["error"]


# -- F15: a start page that never stops reloading ------------------------------------------------


def test_a_page_that_keeps_reloading_still_gives_a_first_screenshot(pw: Any, sites: tuple[_Site, _Site]) -> None:
    allowed, _ = sites
    allowed.pages["/reload.html"] = ("<!doctype html><title>reloading</title><body style='background:#0a0'>"
                                     "<script>setTimeout(() => location.reload(), 30)</script>")
    with BrowserEnv(viewport=(800, 600), start_url=allowed.url("/reload.html")) as env:
        start = time.perf_counter()
        obs = env.observe()
        assert time.perf_counter() - start < browser_mod.OBSERVE_TIMEOUT_S * 2 + 2
        assert obs.image.size == (800, 600)
        assert obs.url == allowed.url("/reload.html")
