"""Enforce a `UrlAllowlist` on every request a Playwright browser context makes.

Installed with `RequestGuard(allowlist).install(context)`; it routes every HTTP request and every
WebSocket of the context (all tabs, popups and frames):

- a navigation (top-level or frame) must be allowed by the allowlist;
- a subresource (script, image, fetch/XHR, WebSocket, ...) must come from an allowed origin (any
  path), unless `allow_subresources=True`, which lets subresources go anywhere;
- what is allowed is fetched here (`route.fetch`, Playwright's HTTP client: the context's cookies,
  but not Chromium's cache, proxy or host-resolver rules) and handed to the page;
- redirects are checked hop by hop. Playwright does not route redirect hops (they are followed
  inside the browser), so an allowed request is fetched here with `max_redirects=0`: a response
  that is not a redirect is handed to the page; a redirect to a URL that is not allowed is
  blocked; an allowed redirect of a subresource is followed here (each hop checked), and of a
  navigation becomes a zero-delay meta refresh, a new navigation that passes the guard again.
  A 307/308 redirect of a navigation with a body is blocked (a refresh cannot resend the body).

Every refusal is appended to `blocked` (URL and why) and the request fails with
`net::ERR_BLOCKED_BY_CLIENT`. Service workers must be blocked in the context (they fetch outside
the routes); `BrowserEnv` does that whenever an allowlist is set. Each fetch has `timeout_s`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urljoin

from kimi_agent.env.url_allowlist import UrlAllowlist

if TYPE_CHECKING:
    from playwright.sync_api import APIResponse, BrowserContext, Route, WebSocketRoute

MAX_REDIRECTS = 10
_ANY = re.compile(r".*")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class BlockedRequest:
    """A request the guard refused: its URL, what kind of request it was, and why."""

    url: str
    kind: Literal["navigation", "subresource", "websocket"]
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} to {self.url} ({self.reason})"


@dataclass  # no slots: Playwright caches a wrapper on each bound-method handler's object
class RequestGuard:
    """Routes that enforce `allowlist` (see the module doc)."""

    allowlist: UrlAllowlist
    allow_subresources: bool = False
    timeout_s: float = 15.0
    blocked: list[BlockedRequest] = field(default_factory=list)

    def install(self, context: BrowserContext) -> None:
        context.route(_ANY, self.on_request)
        context.route_web_socket(_ANY, self.on_websocket)

    def allowed(self, url: str, *, navigation: bool) -> bool:
        if navigation:
            return self.allowlist.allows(url)
        return self.allow_subresources or self.allowlist.same_origin_allowed(url)

    def on_request(self, route: Route) -> None:
        request = route.request
        navigation = request.is_navigation_request()
        kind: Literal["navigation", "subresource"] = "navigation" if navigation else "subresource"
        if not navigation and self.allow_subresources:
            # fetched here too, not continued: Chromium treats a fulfilled document as a public
            # address space and would refuse its requests to local addresses (Local Network Access)
            self._fulfill_fetched(route)
            return
        if not self.allowed(request.url, navigation=navigation):
            self._block(route, BlockedRequest(request.url, kind, "not on the URL allowlist"))
            return
        self._fetch_checked(route, navigation=navigation)

    def on_websocket(self, ws: WebSocketRoute) -> None:
        if self.allowed(ws.url, navigation=False):
            ws.connect_to_server()
            return
        self.blocked.append(BlockedRequest(ws.url, "websocket", "not on the URL allowlist"))
        ws.close(code=1008, reason="blocked by the URL allowlist")

    # -- internals ----------------------------------------------------------------------------

    def _fetch_checked(self, route: Route, *, navigation: bool) -> None:
        from playwright.sync_api import Error as PlaywrightError

        request = route.request
        kind: Literal["navigation", "subresource"] = "navigation" if navigation else "subresource"
        url, method, body = request.url, request.method, request.post_data_buffer
        for hop in range(MAX_REDIRECTS + 1):
            try:
                response = self._fetch(route, url if hop else None, method, body)
            except PlaywrightError as exc:
                route.abort("failed" if "timeout" not in exc.message.lower() else "timedout")
                return
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or not location:
                route.fulfill(response=response)
                return
            target = urljoin(url, location)
            if not self.allowed(target, navigation=navigation):
                self._block(route, BlockedRequest(target, kind, f"redirect ({response.status}) from {url}"))
                return
            keeps_body = response.status in (307, 308)
            if navigation:
                if keeps_body and method not in ("GET", "HEAD"):
                    self._block(route, BlockedRequest(target, kind, f"{response.status} redirect of a {method} "
                                                                    "cannot be re-checked"))
                else:
                    route.fulfill(status=200, content_type="text/html; charset=utf-8", body=_refresh_page(target))
                return
            if not keeps_body:
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
            url = target
        self._block(route, BlockedRequest(url, kind, f"more than {MAX_REDIRECTS} redirects"))

    def _fetch(self, route: Route, url: str | None, method: str, body: bytes | None) -> APIResponse:
        timeout_ms = self.timeout_s * 1000.0
        if url is None:
            return route.fetch(max_redirects=0, timeout=timeout_ms)
        return route.fetch(url=url, method=method, post_data=body, max_redirects=0, timeout=timeout_ms)

    def _fulfill_fetched(self, route: Route) -> None:
        from playwright.sync_api import Error as PlaywrightError

        try:
            response = route.fetch(timeout=self.timeout_s * 1000.0)
        except PlaywrightError as exc:
            route.abort("failed" if "timeout" not in exc.message.lower() else "timedout")
            return
        route.fulfill(response=response)

    def _block(self, route: Route, blocked: BlockedRequest) -> None:
        self.blocked.append(blocked)
        route.abort("blockedbyclient")


def _refresh_page(target: str) -> str:
    url = html.escape(target, quote=True)
    return f'<!doctype html><meta http-equiv="refresh" content="0; url={url}"><title>redirect</title>'
