"""Secrets never reach a record: typed on the desktop and in the browser, then every output is grepped.

The secrets hold what used to leak in pieces (issue 14): non-ASCII (typed through insert_text or the
clipboard), `<` (shift+comma on the desktop), a backslash (doubled by repr), both quotes, and a
2-character secret. After each episode every file of the run folder (steps.jsonl, run.json, the
HTML report), the log and the console progress are searched for each secret in every encoding a
record could hold (`Redactor.values`: as is, repr/JSON-escaped, percent-encoded in UTF-8 and
Latin-1): none may appear, and the records name the secret as `<secret:NAME>` instead.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.page_server import page_server

from kimi_agent import Agent, AgentSettings
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.progress import ConsoleListener
from kimi_agent.report import write_report
from kimi_agent.safety import Redactor, SafetySettings
from kimi_agent.trajectory import read_steps

_BASE64 = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+")  # the report's embedded frames
SECRETS = {"pw": "pä\\ss<w0rd\"'", "ascii": "hun<ter2\\\"'", "pin": "z9"}

FORM = """<!doctype html><html><head><meta charset="windows-1252"><title>Search</title></head><body>
<form action="/search" method="get"><input id="q" name="q" autofocus style="font-size:24px;width:600px"></form>
</body></html>""".encode("cp1252")


@pytest.fixture
def form_url() -> Iterator[str]:
    with page_server(lambda path: (FORM, "text/html; charset=windows-1252")) as base:
        yield f"{base}/form.html"


def _reply(code: str) -> str:
    return f"## Thought\nNext.\n\n## Action:\nDo it.\n\n## Code:\n```python\n{code}\n```\n"


def _run(env: Any, tmp_path: Path, names: list[str], caplog: pytest.LogCaptureFixture) -> tuple[Any, str]:
    replies = [_reply(f"pyautogui.write('<secret>{n}</secret>')") for n in names]
    replies += [_reply("pyautogui.press('enter')"), _reply("computer.terminate(status='success')")]
    out = io.StringIO()
    listener = ConsoleListener(Console(file=out, width=200, force_terminal=False))  # told no secret itself
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=8, safety=SafetySettings(secrets=SECRETS))
    with caplog.at_level(logging.DEBUG, logger="kimi_agent"):
        result = Agent(ScriptedBackend(replies), env, settings, listener=listener).run_episode("search")
    assert result.status == "success", result.reason
    write_report(result.run_dir)
    return result, out.getvalue() + caplog.text


def _assert_nothing_leaks(result: Any, console_and_log: str) -> None:
    files = [p for p in result.run_dir.rglob("*") if p.is_file() and p.suffix not in (".png", ".jpg")]
    assert {p.name for p in files} >= {"steps.jsonl", "run.json", "report.html"}
    texts = {p.name: _BASE64.sub("data:", p.read_text(encoding="utf-8")) for p in files}
    texts["console+log"] = console_and_log
    for name, value in SECRETS.items():
        for form in Redactor({name: value}).values:
            for where, text in texts.items():
                assert form not in text, (name, form, where)
    steps = (result.run_dir / "steps.jsonl").read_text(encoding="utf-8")
    assert "<secret:" in steps


def test_secrets_typed_in_the_browser_never_reach_a_record(pw: Any, form_url: str, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from kimi_agent.env.browser import BrowserEnv

    with BrowserEnv(viewport=(800, 600), start_url=form_url) as env:
        result, console = _run(env, tmp_path, ["pw", "pin"], caplog)
        typed = env.page.url.split("q=", 1)[1]
        assert typed == "p%E4%5Css%3Cw0rd%22%27z9"  # the page got the real text (Latin-1 form encoding)
    _assert_nothing_leaks(result, console)
    records = [a for s in read_steps(result.run_dir) for a in s["actions"]]
    assert records[0]["executed"] == ["typed <secret:pw> in 3 input call(s)"]
    assert any("<secret:pw><secret:pin>" in (s["obs_after"] or {}).get("url", "") for s in read_steps(result.run_dir))


def test_secrets_typed_on_the_desktop_never_reach_a_record(xvfb: Any, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from kimi_agent.env.desktop import DesktopEnv

    with DesktopEnv(window_manager=False) as env:
        result, console = _run(env, tmp_path, ["ascii", "pw", "pin"], caplog)
    _assert_nothing_leaks(result, console)
    executed = [a["executed"] for s in read_steps(result.run_dir) for a in s["actions"]][:3]
    assert executed[0][0].startswith("typed <secret:ascii> in ")  # write, shift+comma, write: counted, not shown
    assert executed[1][0].startswith("typed <secret:pw> in ")  # through the clipboard
