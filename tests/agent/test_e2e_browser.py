"""End to end in the browser environment: fill and submit a form on a page served by the test.

The scripted backend (a test double) computes each point from the live DOM through the env's
Playwright page; the result is checked through the page's own state. The password goes in as a
`<secret>` reference: typing into a password field needs a confirmation, the page gets the real
value, and the trajectory never contains it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.page_server import page_server

from kimi_agent import Agent, AgentSettings
from kimi_agent.model_runtime.backends.scripted import ScriptCall, ScriptedBackend
from kimi_agent.safety import SafetySettings
from kimi_agent.trajectory import read_steps

FORM = b"""<!doctype html><html><head><title>Sign up</title><style>
body{font:18px sans-serif;margin:40px} input{display:block;margin:12px 0;font-size:18px;padding:6px;width:320px}
</style></head><body><h1>Sign up</h1>
<form id="f"><input id="name" placeholder="Full name"><input id="pw" type="password" placeholder="Password">
<label><input id="agree" type="checkbox" style="display:inline;width:auto"> I agree</label>
<button id="go" type="submit" style="display:block;margin-top:16px;font-size:18px">Submit</button></form>
<p id="out"></p><script>
const $ = id => document.getElementById(id);
$('f').addEventListener('submit', e => { e.preventDefault();
  window.__submitted = {name: $('name').value, pw: $('pw').value, agree: $('agree').checked};
  $('out').textContent = 'Thanks, ' + $('name').value; });
</script></body></html>"""

SECRET = "s3cr3t-Passw0rd"


@pytest.fixture
def form_url() -> Iterator[str]:
    with page_server(lambda path: (FORM, "text/html")) as base:
        yield f"{base}/form.html"


def kimi(thought: str, action: str, code: str) -> str:
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


def test_browser_form_episode(tmp_path: Path, form_url: str, pw: Any) -> None:
    from kimi_agent.env.browser import BrowserEnv

    with BrowserEnv(headless=True, viewport=(1280, 800), start_url=form_url) as env:
        page = env.page

        def at(call: ScriptCall, selector: str) -> str:
            box = page.locator(selector).bounding_box()
            w, h = call.screenshot.size  # CSS pixels of the viewport
            return f"x={(box['x'] + box['width'] / 2) / w:.4f}, y={(box['y'] + box['height'] / 2) / h:.4f}"

        plan = [
            lambda c: kimi("An empty sign-up form.", "Type the name into 'Full name'.",
                           f"pyautogui.click({at(c, '#name')})\npyautogui.write('Ada Lovelace')"),
            lambda c: kimi("Now the password.", "Type the password.",
                           f"pyautogui.click({at(c, '#pw')})\npyautogui.write('<secret>pw</secret>')"),
            lambda c: kimi("Accept the terms.", "Tick 'I agree'.", f"pyautogui.click({at(c, '#agree')})"),
            lambda c: kimi("Ready.", "Click Submit.", f"pyautogui.click({at(c, '#go')})"),
            lambda c: kimi("The page thanks Ada.", "Done.", "computer.terminate(status='success')"),
        ]
        asked: list[str] = []
        settings = AgentSettings(out_dir=tmp_path / "runs", safety=SafetySettings(secrets={"pw": SECRET}))
        agent = Agent(ScriptedBackend(lambda c: plan[c.index](c)), env, settings,
                      confirm=lambda q: asked.append(q) is None)
        result = agent.run_episode("sign up as Ada Lovelace")
        assert result.status == "success", result.reason
        assert page.evaluate("() => window.__submitted") == {"name": "Ada Lovelace", "pw": SECRET, "agree": True}
        assert page.locator("#out").text_content() == "Thanks, Ada Lovelace"
    assert len(asked) == 1 and "password field" in asked[0]
    steps = read_steps(result.run_dir)
    assert steps[0]["obs_before"]["url"] == form_url
    assert steps[1]["actions"][1]["safety"]["risk"] == "type into a password field"
    for name in ("steps.jsonl", "run.json"):
        assert SECRET not in (result.run_dir / name).read_text()
