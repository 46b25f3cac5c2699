"""Forms submitted by Enter and by a click, with and without navigation, in both environments.

The reproduction of issue 14's hang: click the first field, type, click the second, type, then
press Enter or click Submit. Every step must return (no unbounded wait anywhere on the path) and
the page must show what was submitted (autocomplete is off: its suggestion popup would cover the
button on the desktop, where the browser remembers the last submission). Points come from the
page's own layout; on the desktop, through CDP to the desktop's Chromium.

Pages that never answer (a script that spins forever): when it starts after the action returned,
settle and observe are bounded by the env (the last good frame is shown again); when it starts
inside the key press (a submit handler), Playwright's input call itself never returns, and the
agent's watchdog ends the episode at `max_seconds`, naming the phase.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.page_server import page_server

from kimi_agent.actions.types import Click, NormPoint, Press, TypeText
from kimi_agent.env.browser import BrowserEnv

FORM = """<!doctype html><html><head><title>form</title><style>
body{{font:20px sans-serif;margin:40px}} input,button{{display:block;margin:16px 0;font-size:20px;width:320px}}
</style></head><body><form id="f" action="/done" method="get" autocomplete="off">
<input id="a" name="a"><input id="b" name="b"><button id="go" type="submit">Submit</button></form>
<p id="out"></p><script>
const mode = "{mode}";
document.getElementById('f').addEventListener('submit', e => {{
  if (mode === 'stay') {{ e.preventDefault(); document.getElementById('out').textContent =
      'got ' + new FormData(e.target).get('a') + '/' + new FormData(e.target).get('b'); }}
  if (mode === 'hang') {{ e.preventDefault(); for (;;) {{}} }}
}});
</script></body></html>"""


def _respond(full_path: str) -> tuple[bytes, str]:
    path = full_path.split("?", 1)[0]
    body = (FORM.format(mode=path.strip("/")) if path != "/done" else
            f"<title>done</title><p id='out'>done {full_path.split('?', 1)[-1]}</p>")
    return body.encode(), "text/html"


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with page_server(_respond) as base:
        yield base


@pytest.fixture(scope="module", params=["browser", "desktop"])
def driven(request: pytest.FixtureRequest, pw: Any, site: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Any, BrowserEnv]]:
    """(env that acts, BrowserEnv that reads the page): the same object in the browser env."""
    if request.param == "browser":
        with BrowserEnv(viewport=(1024, 700), start_url=f"{site}/navigate") as env:
            yield env, env
        return
    from kimi_agent.env.desktop import DesktopEnv

    with DesktopEnv() as desktop:
        chromium = desktop.start_chromium(tmp_path_factory.mktemp("profile"), url=f"{site}/navigate")
        with BrowserEnv.attach(chromium.cdp_url) as reader:
            yield desktop, reader


def _point(reader: BrowserEnv, env: Any, selector: str) -> NormPoint:
    """The element's centre as a fraction of `env`'s screenshot (the desktop: the whole screen)."""
    box = reader.page.locator(selector).bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    if env is reader:
        w, h = reader.page.evaluate("() => [innerWidth, innerHeight]")
        return NormPoint(x=x / w, y=y / h)
    # desktop: the viewport's offset inside the full-screen window, from the page itself
    ox, oy = reader.page.evaluate("() => [screenX + (outerWidth - innerWidth), screenY + (outerHeight - innerHeight)]")
    return NormPoint(x=(ox + x) / env.width, y=(oy + y) / env.height)


def _fill(env: Any, reader: BrowserEnv) -> None:
    for selector, text in (("#a", "alice"), ("#b", "bob")):
        assert env.execute(Click(point=_point(reader, env, selector))).ok
        out = env.execute(TypeText(text=text))
        assert out.ok, out.error
        # X key events reach the page asynchronously: wait for the state, not for a time
        reader.page.wait_for_function("([s, t]) => document.querySelector(s).value === t", arg=[selector, text])


@pytest.mark.parametrize("mode", ["navigate", "stay"])
@pytest.mark.parametrize("submit", ["enter", "click"])
def test_submit_returns_and_the_page_shows_it(driven: tuple[Any, BrowserEnv], site: str, mode: str,
                                              submit: str) -> None:
    env, reader = driven
    reader.page.goto(f"{site}/{mode}")
    _fill(env, reader)
    action = Press(key="enter") if submit == "enter" else Click(point=_point(reader, env, "#go"))
    out = env.execute(action)
    assert out.ok, out.error
    if mode == "navigate":
        reader.page.wait_for_url("**/done?a=alice&b=bob")
        assert reader.page.text_content("#out") == "done a=alice&b=bob"
    else:
        reader.page.wait_for_function("() => document.getElementById('out').textContent !== ''")
        assert reader.page.text_content("#out") == "got alice/bob"
    assert env.observe().image.size[0] > 0


def test_a_page_that_stops_answering_after_an_action_gives_the_last_frame(pw: Any, site: str) -> None:
    with BrowserEnv(viewport=(1024, 700), start_url=f"{site}/stay") as env:
        before = env.observe()
        # the page hangs right after it has handled the click (not on a timer that load can make fire first)
        env.page.evaluate("() => document.addEventListener('click', () => setTimeout(() => { for (;;) {} }, 0))")
        out = env.execute(Click(point=NormPoint(x=0.5, y=0.8)))
        assert out.ok and out.settle_ms > 0
        after = env.observe()
        assert after.image is before.image  # the last good frame, shown again
        assert after.title is not None and "not answering" in after.title


def test_a_submit_that_never_returns_is_ended_by_the_watchdog(pw: Any, site: str, tmp_path: Path) -> None:
    from kimi_agent import Agent, AgentSettings
    from kimi_agent.model_runtime.backends.scripted import ScriptedBackend

    reply = "## Action:\nSubmit.\n\n## Code:\n```python\npyautogui.press('enter')\n```\n"
    with BrowserEnv(viewport=(1024, 700), start_url=f"{site}/hang") as env:
        _fill(env, env)
        agent = Agent(ScriptedBackend([reply, reply]), env, AgentSettings(out_dir=tmp_path, max_seconds=5.0))
        result = agent.run_episode("submit the form")
    assert result.status == "error"
    assert "step 1 hung in execute (press, then settle)" in result.reason
