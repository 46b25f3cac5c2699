"""The desktop's Chromium keeps page-initiated downloads in its profile (red-team finding F12).

A page on a local server starts a download with no action of anyone (`<a download>` clicked by
its own script). `$HOME` points at an empty folder here, so a download into the real home would
land in `<that folder>/Downloads`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.env.desktop import DesktopEnv

PAGE = (b"<!doctype html><title>dl</title><a id=a href='/evil.txt' download='evil.txt'>x</a>"
        b"<script>setTimeout(() => document.getElementById('a').click(), 300)</script>")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        body = b"echo pwned\n" if self.path == "/evil.txt" else PAGE
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if self.path == "/evil.txt" else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/dl.html"
    httpd.shutdown()
    httpd.server_close()


def test_a_page_download_lands_in_the_profile_not_the_home(server: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    profile = tmp_path / "profile"
    with DesktopEnv() as env:
        chromium = env.start_chromium(profile, url=server)
        target = chromium.downloads_dir / "evil.txt"
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not target.exists() and not (home / "Downloads" / "evil.txt").exists():
            time.sleep(0.2)
        time.sleep(0.5)  # a download into the home as well would show up by now
        assert chromium.downloads_dir == profile / "Downloads"
        assert target.read_text() == "echo pwned\n"
        assert not (home / "Downloads").exists() or list((home / "Downloads").iterdir()) == []
