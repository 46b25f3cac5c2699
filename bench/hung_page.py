"""Worst-case time of a step whose page never answers (issue 14), in the browser environment.

Two cases, each on a local page whose script spins forever:
- `after action`: the spin starts just after a click returned; the env's own bounds apply
  (settle: its cap plus one grab timeout; observe: its screenshot timeout, then the last frame).
- `inside submit`: the spin starts in the submit handler of a key press, so Playwright's input
  call never returns; the agent's watchdog ends the episode at `max_seconds`.

    python bench/hung_page.py                 # max_seconds 5
    python bench/hung_page.py --max-seconds 10
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kimi_agent import Agent, AgentSettings
from kimi_agent.actions.types import Click, NormPoint, TypeText
from kimi_agent.env.browser import BrowserEnv
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend

PAGE = b"""<!doctype html><title>hang</title><form id="f"><input id="a" autofocus autocomplete="off"></form>
<script>document.getElementById('f').addEventListener('submit', e => { e.preventDefault(); for (;;) {} });</script>"""
REPLY = "## Action:\nSubmit.\n\n## Code:\n```python\npyautogui.press('enter')\n```\n"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    with BrowserEnv(viewport=(1280, 800), start_url=url) as env:
        env.observe()
        env.page.evaluate("() => { setTimeout(() => { for (;;) {} }, 100); }")
        t0 = time.perf_counter()
        out = env.execute(Click(point=NormPoint(x=0.5, y=0.5)))
        obs = env.observe()
        after = time.perf_counter() - t0
    print(f"after action : execute+settle+observe {after:6.2f} s (settle {out.settle_ms / 1000:.2f} s, "
          f"title {obs.title!r})")

    with BrowserEnv(viewport=(1280, 800), start_url=url) as env, tempfile.TemporaryDirectory() as out_dir:
        assert env.execute(TypeText(text="x")).ok
        settings = AgentSettings(out_dir=out_dir, max_seconds=args.max_seconds)
        t0 = time.perf_counter()
        result = Agent(ScriptedBackend([REPLY] * 3), env, settings).run_episode("submit")
        inside = time.perf_counter() - t0
    print(f"inside submit: episode ended after {inside:6.2f} s with max_seconds={args.max_seconds:g} "
          f"({result.status}: {result.reason})")


if __name__ == "__main__":
    main()
