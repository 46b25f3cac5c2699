"""The library API: `Agent(...).run()` returns the steps and writes the report; `await arun()`
runs a real browser episode inside asyncio; every public name is documented."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.page_server import page_server

import kimi_agent
from kimi_agent import Agent, AgentSettings, EpisodeResult, ScriptedBackend

DONE = "computer.terminate(status='success', answer='ok')"


def test_run_returns_the_steps_and_writes_report_and_traj(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    replies = [kimi_reply("I see the page", "Click the Save button", "pyautogui.click(x=0.5, y=0.25)"),
               kimi_reply("Saved", "Finish", DONE)]
    result = Agent(ScriptedBackend(replies), fake_env, AgentSettings(out_dir=tmp_path)).run("save the file")
    assert isinstance(result, EpisodeResult) and result.success and result.steps == 2
    first, last = result.history
    assert (first.step, first.thought, first.action) == (1, "I see the page", "Click the Save button")
    assert first.code == "pyautogui.click(x=0.5, y=0.25)" and first.attempts == 1
    (click,) = first.actions
    assert click.type == "click" and click.norm_xy == [(0.5, 0.25)] and click.exec_xy == [(960.0, 270.0)]
    assert first.points == [(960.0, 270.0)]
    assert {"observe", "model", "execute", "settle", "record"} <= set(first.timings_ms)
    assert first.frame_before is not None and first.frame_before.is_file()
    assert first.frame_after is not None and first.frame_after.is_file()
    assert last.terminal == "done" and last.frame_before == first.frame_after
    assert result.frames == [first.frame_before, first.frame_after]
    assert result.report == result.run_dir / "report.html" and result.report.is_file()
    traj = [json.loads(line) for line in (result.run_dir / "traj.jsonl").read_text().splitlines()]
    assert [t["action"] for t in traj] == ["pyautogui.click(x=0.5, y=0.25)", "DONE"]
    quiet = Agent(ScriptedBackend(replies), fake_env, AgentSettings(out_dir=tmp_path / "q")).run(
        "save", artifacts=False)
    assert quiet.report is None and not (quiet.run_dir / "report.html").exists()
    bare = Agent(ScriptedBackend(replies), fake_env, AgentSettings(out_dir=tmp_path / "b")).run_episode("save")
    assert len(bare.history) == 2 and not (bare.run_dir / "report.html").exists()  # the runner's entry point


SCRIPT = r"""
import asyncio, json, sys

from kimi_agent import Agent, AgentSettings, Listener, ScriptedBackend
from kimi_agent.env.browser import BrowserEnv

DONE = "computer.terminate(status='success', answer='ok')"
replies = ["## Thought\nA big button.\n## Action\nPress it.\n## Code\n```python\npyautogui.click(x=0.5, y=0.5)\n```",
           "## Thought\nIt says clicked.\n## Action\nFinish.\n## Code\n```python\n" + DONE + "\n```"]
seen = []


class Phases(Listener):
    def on_phase(self, step, phase, detail=""):
        seen.append(phase)


async def main(url, out):
    ticks = 0
    stop = asyncio.Event()

    async def ticker():  # the event loop keeps running while the episode does
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    background = asyncio.create_task(ticker())
    agent = Agent(ScriptedBackend(replies), lambda: BrowserEnv(viewport=(800, 600), start_url=url),
                  AgentSettings(out_dir=out, max_steps=4), listener=Phases())
    try:
        result = await agent.arun("press the button")
        text = await asyncio.get_running_loop().run_in_executor(
            agent._worker(), lambda: agent.env.page.inner_text("#b"))  # the page, on the env's thread
    finally:
        await agent.aclose()
        stop.set()
        await background
    print(json.dumps({"status": result.status, "reason": result.reason, "text": text, "ticks": ticks,
                      "report": str(result.report), "xy": result.history[0].actions[0].exec_xy, "seen": seen}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
PAGE = """<!doctype html><title>counter</title><button id="b" style="position:absolute;left:0;top:0;
width:100%;height:100%" onclick="this.textContent = 'clicked ' + (++window.n)">press</button>
<script>window.n = 0</script>"""


def test_arun_drives_a_real_browser_inside_asyncio(tmp_path: Path) -> None:
    """A user's asyncio script (its own process: no other Playwright or event loop around)."""
    script = tmp_path / "agent_in_asyncio.py"
    script.write_text(SCRIPT)
    with page_server(lambda path: (PAGE.encode(), "text/html; charset=utf-8")) as base:
        env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        r = subprocess.run([sys.executable, str(script), base + "/", str(tmp_path / "runs")], capture_output=True,
                           text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "success", out["reason"]
    assert out["text"] == "clicked 1" and out["ticks"] > 0
    assert Path(out["report"]).is_file() and out["xy"] == [[400.0, 300.0]]
    assert {"thinking", "acting", "settling"} <= set(out["seen"])


def test_help_explains_the_hooks_and_every_public_name_has_a_docstring() -> None:
    doc = inspect.getdoc(Agent) or ""
    for hook in ("confirm:", "ask:", "listener:", "arun", "run_episode"):
        assert hook in doc, hook
    missing = []
    for name in kimi_agent.__all__:
        obj = getattr(kimi_agent, name)
        if not inspect.isclass(obj) and not inspect.isfunction(obj):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                public = not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
                if public and not (member.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []


@pytest.mark.parametrize("env_arg", ["instance", "factory"])
def test_env_may_be_given_or_made_on_first_use(env_arg: str, tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    made: list[Any] = []

    def make() -> Any:
        made.append(fake_env)
        return fake_env

    agent = Agent(ScriptedBackend([kimi_reply("x", "Finish", DONE)]), fake_env if env_arg == "instance" else make,
                  AgentSettings(out_dir=tmp_path))
    assert made == []
    assert agent.run("finish").success and agent.env is fake_env
    assert len(made) == (1 if env_arg == "factory" else 0)
    agent.close()


def test_wrong_arguments_are_type_errors_naming_them_at_construction(fake_env: Any, tmp_path: Path) -> None:
    from kimi_agent.errors import ConfigError

    done = "## Thought\nx\n## Action\nFinish.\n## Code\n```python\ncomputer.terminate(status='success')\n```"
    cases = [(lambda: Agent("nope", fake_env), "backend must be a model backend"),  # type: ignore[arg-type]
             (lambda: Agent(ScriptedBackend([done]), None), "env must be an environment"),  # type: ignore[arg-type]
             (lambda: Agent(ScriptedBackend([done]), fake_env, {"max_steps": 3}),  # type: ignore[arg-type]
              r"settings must be AgentSettings\(\.\.\.\), got dict \(pass AgentSettings\(\*\*settings\)\)"),
             (lambda: Agent(ScriptedBackend([done]), fake_env, confirm=True), "confirm must be a function"),  # type: ignore[arg-type]
             (lambda: Agent(ScriptedBackend([done]), fake_env, listener=print), "listener must be a kimi_agent.Listener")]  # type: ignore[arg-type]
    for make, message in cases:
        with pytest.raises(TypeError, match=message):
            make()
    with pytest.raises(ConfigError, match=r"replies\[1\]: expected a string or an object with a 'text' string, got int"):
        ScriptedBackend([done, 1])  # type: ignore[list-item]
    agent = Agent(ScriptedBackend([{"text": done, "stream_s": 0.2}]), fake_env, AgentSettings(out_dir=tmp_path))
    for empty in ("", "   "):
        with pytest.raises(ConfigError, match="the instruction must say what the agent should do"):
            agent.run(empty)
    assert not any(tmp_path.iterdir())  # nothing was started or written for them
    assert agent.run_episode("finish").status == "success"  # the JSONL object form works as a list item too


def test_library_logs_reach_no_stream_unless_the_application_asks(tmp_path: Path) -> None:
    code = ("import logging, kimi_agent\n"
            "logging.getLogger('kimi_agent.loop').error('episode failed')\n"
            "from kimi_agent.logs import log_to_stderr\n"
            "log_to_stderr(); log_to_stderr()\n"
            "logging.getLogger('kimi_agent.artifacts').warning('shown once')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "shown once\n"
