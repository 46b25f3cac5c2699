"""`CHROMIUM_BLOCKED_PORTS`, the ports `--url` refuses up front, agree with the installed Chromium."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from kimi_agent.errors import ConfigError
from kimi_agent.options import CHROMIUM_BLOCKED_PORTS, check_start_url


def _load_error(page: Any, port: int) -> str:
    """Chromium's net error for http://127.0.0.1:PORT/ (nothing listens on these ports here)."""
    try:
        page.goto(f"http://127.0.0.1:{port}/", timeout=10_000)
    except PlaywrightError as e:  # its message carries net::ERR_...
        return str(e)
    return "loaded"


def test_every_listed_port_is_one_chromium_refuses_and_its_neighbours_are_not(headless_browser: Any) -> None:
    page = headless_browser.new_page()
    try:
        refused = {p for p in sorted(CHROMIUM_BLOCKED_PORTS) if "ERR_UNSAFE_PORT" in _load_error(page, p)}
        neighbours = sorted({p + d for p in CHROMIUM_BLOCKED_PORTS for d in (-1, 1)} - CHROMIUM_BLOCKED_PORTS - {0})
        also_refused = {p for p in neighbours if "ERR_UNSAFE_PORT" in _load_error(page, p)}
    finally:
        page.close()
    assert refused == set(CHROMIUM_BLOCKED_PORTS), sorted(set(CHROMIUM_BLOCKED_PORTS) - refused)
    assert not also_refused, sorted(also_refused)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6000/", "https://example.com:25/x", "HTTP://localhost:10080"])
def test_a_start_url_on_a_blocked_port_is_refused_before_start(url: str) -> None:
    with pytest.raises(ConfigError, match="Chromium refuses to load pages from port"):
        check_start_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "https://example.com/", "file:///tmp/p.html"])
def test_other_start_urls_pass(url: str) -> None:
    check_start_url(url)
