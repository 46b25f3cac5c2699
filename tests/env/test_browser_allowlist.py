"""The URL allowlist against every trick in issue 14, with real HTTP servers on several ports.

Three servers: ALLOWED (the allowlist's origin), OTHER (another port), and PREFIXED, whose port
starts with ALLOWED's digits (5559 -> 55591). Chromium resolves `*.test` to 127.0.0.1, so host
tricks (`site.test.evil.test`) reach a real server too. Each server logs the requests it got: a
blocked request is one that never arrived, and the env reports it in `blocked`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kimi_agent.actions.types import Click, Navigate, NewTab, NormPoint
from kimi_agent.env.browser import BrowserEnv


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.hits.append((self.headers.get("Host", ""), self.path))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/redirect":
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.pages.get(parts.path, f"<title>{parts.path}</title><p>{parts.path}</p>")
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if parts.path.endswith(".json") else "text/html")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET


class _Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.hits: list[tuple[str, str]] = []
        self.pages: dict[str, str] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [p for _, p in self.hits]


def _prefix_pair() -> tuple[_Site, _Site]:
    """Two servers on ports P and P*10+1 (a port that starts with P's digits)."""
    for port in range(5559, 6500, 7):
        try:
            first = _Site(port)
        except OSError:
            continue
        try:
            return first, _Site(port * 10 + 1)
        except OSError:
            first.shutdown()
            first.server_close()
    raise RuntimeError("no free pair of ports P, P*10+1")


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, _Site]]:
    allowed, prefixed = _prefix_pair()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    out = {"allowed": allowed, "prefixed": prefixed, "other": _Site(free)}
    yield out
    for site in out.values():
        site.shutdown()
        site.server_close()


@pytest.fixture(scope="module")
def module_env(pw: Any, sites: dict[str, _Site]) -> Iterator[BrowserEnv]:
    allowed = sites["allowed"]
    allowed.pages["/"] = "<title>home</title><p>home</p>"
    with BrowserEnv(viewport=(800, 600), start_url=allowed.url("/"), allowed_urls=[allowed.url("") + "*"],
                    extra_args=["--host-resolver-rules=MAP *.test 127.0.0.1"]) as benv:
        yield benv


@pytest.fixture()
def env(module_env: BrowserEnv, sites: dict[str, _Site]) -> BrowserEnv:
    """The module's browser back on its start page, with no hits and no blocked requests yet."""
    module_env.reset()
    for site in sites.values():
        site.hits.clear()
    assert module_env._guard is not None
    module_env._guard.blocked.clear()
    return module_env


def _link(env: BrowserEnv, href: str, target: str = "") -> NormPoint:
    env.page.evaluate("""([href, target]) => { document.body.innerHTML =
        `<a id="go" href="${href}" target="${target}" style="font-size:60px">go</a>`; }""", [href, target])
    box = env.page.locator("#go").bounding_box()
    assert box is not None
    return NormPoint(x=(box["x"] + box["width"] / 2) / 800, y=(box["y"] + box["height"] / 2) / 600)


def _refused(env: BrowserEnv, action: Any, url: str) -> str:
    out = env.execute(action)
    assert not out.ok, out.executed
    assert "blocked" in str(out.error) or "refused" in str(out.error), out.error
    assert any(b.url.rstrip("/") == url.rstrip("/") for b in env.blocked), env.blocked
    return str(out.error)


def test_server_side_redirect_to_another_port_is_blocked_and_reported(env: BrowserEnv,
                                                                     sites: dict[str, _Site]) -> None:
    allowed, other = sites["allowed"], sites["other"]
    target = other.url("/secret")
    error = _refused(env, Navigate(url=allowed.url(f"/redirect?to={target}")), target)
    assert "redirect (302) from" in error
    assert other.hits == []
    for code in (301, 303, 307, 308):
        env.execute(Navigate(url=allowed.url(f"/redirect?code={code}&to={target}")))
        assert env.blocked[-1].url == target and f"({code})" in env.blocked[-1].reason
    assert other.hits == []


def test_redirect_chains_are_checked_hop_by_hop(env: BrowserEnv, sites: dict[str, _Site]) -> None:
    allowed, other = sites["allowed"], sites["other"]
    out = env.execute(Navigate(url=allowed.url("/redirect?to=/redirect%3Fto%3D/landed")))
    assert out.ok, out.error
    env.page.wait_for_url("**/landed")
    assert env.page.title() == "/landed"
    hop2 = allowed.url("/redirect?to=" + other.url("/x"))
    _refused(env, Navigate(url=allowed.url("/redirect?to=" + hop2.replace("?", "%3F").replace("=", "%3D"))),
             other.url("/x"))
    assert other.hits == []


def test_subresources_to_other_origins_are_blocked_unless_allowed(pw: Any, env: BrowserEnv,
                                                                 sites: dict[str, _Site]) -> None:
    allowed, other = sites["allowed"], sites["other"]
    other.pages["/data.json"] = '{"leak": true}'
    allowed.pages["/data.json"] = '{"own": true}'
    fetch = "url => fetch(url).then(r => r.text()).catch(e => 'failed: ' + e.message)"
    assert json.loads(env.page.evaluate(fetch, allowed.url("/data.json"))) == {"own": True}
    assert env.page.evaluate(fetch, other.url("/data.json")).startswith("failed")
    redirected = allowed.url("/redirect?to=" + other.url("/data.json"))
    assert env.page.evaluate(fetch, redirected).startswith("failed")  # a subresource's redirect too
    assert env.page.evaluate(f"""() => new Promise(r => {{ const i = new Image(); i.onload = () => r('loaded');
        i.onerror = () => r('error'); i.src = '{other.url("/pixel.png")}'; }})""") == "error"
    assert other.hits == []
    assert {b.kind for b in env.blocked} == {"subresource"}

    with BrowserEnv(viewport=(800, 600), start_url=allowed.url("/"), allowed_urls=[allowed.url("")],
                    allow_subresources=True) as open_env:
        assert json.loads(open_env.page.evaluate(fetch, other.url("/data.json"))) == {"leak": True}
        assert _refused(open_env, Navigate(url=other.url("/")), other.url("/"))  # navigations still checked


@pytest.mark.parametrize("trick", ["port_prefix", "userinfo", "host_suffix", "other_port", "backslash"])
def test_string_tricks_are_refused(env: BrowserEnv, sites: dict[str, _Site], trick: str) -> None:
    allowed, prefixed = sites["allowed"], sites["prefixed"]
    url = {"port_prefix": prefixed.url("/"),
           "userinfo": f"http://127.0.0.1:{allowed.port}@127.0.0.1:{prefixed.port}/",
           "host_suffix": prefixed.url("/", host=f"127.0.0.1.{allowed.port}.evil.test"),
           "other_port": sites["other"].url("/"),
           "backslash": f"http://evil.test:{prefixed.port}\\@127.0.0.1:{allowed.port}/"}[trick]
    out = env.execute(Navigate(url=url))
    assert not out.ok and out.executed == [], out  # refused before reaching the browser
    out = env.execute(Click(point=_link(env, url)))  # the same URL as a link: the request is blocked
    assert not out.ok, out
    assert prefixed.hits == [] and sites["other"].hits == []


def test_uppercase_scheme_on_the_allowed_origin_is_allowed(env: BrowserEnv, sites: dict[str, _Site]) -> None:
    url = sites["allowed"].url("/upper").replace("http://", "HTTP://")
    out = env.execute(Navigate(url=url))
    assert out.ok, out.error
    assert env.page.title() == "/upper"


@pytest.mark.parametrize("how", ["link", "popup", "iframe", "meta_refresh", "js_location", "form_post"])
def test_every_way_out_of_the_page_is_blocked(env: BrowserEnv, sites: dict[str, _Site], how: str) -> None:
    other = sites["other"]
    target = other.url("/away")
    page = env.page
    if how in ("link", "popup"):
        out = env.execute(Click(point=_link(env, target, "_blank" if how == "popup" else "")))
    else:
        body = {"iframe": f'<iframe src="{target}"></iframe>',
                "meta_refresh": f'<meta http-equiv="refresh" content="0; url={target}">',
                "js_location": f"<script>location.href = '{target}'</script>",
                "form_post": f'<form method="post" action="{target}"><input name="q" value="1"></form>'
                             "<script>document.forms[0].submit()</script>"}[how]
        sites["allowed"].pages["/trick"] = f"<title>trick</title>{body}"
        out = env.execute(Navigate(url=sites["allowed"].url("/trick")))
        env.settle()
    assert other.hits == [], how
    assert any(b.url == target for b in env.blocked), (how, env.blocked)
    if how in ("link", "popup"):
        assert not out.ok and "blocked" in str(out.error)
    assert page.url != target


@pytest.mark.parametrize("url", ["data:text/html,<title>x</title>", "file:///etc/hostname", "javascript:alert(1)",
                                 "chrome://settings", "view-source:http://example.com/"])
def test_other_schemes_are_refused(env: BrowserEnv, url: str) -> None:
    out = env.execute(Navigate(url=url))
    assert not out.ok and "blocked" in str(out.error)
    assert not env.execute(NewTab(url=url)).ok
