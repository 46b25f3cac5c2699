"""The wall-clock budget holds inside a step: a phase that never returns ends the episode as `error`.

Test doubles: a backend whose generation blocks forever, and the fake environment with an
`execute` that blocks forever (a page that never answers). The watchdog interrupts the main
thread when `max_seconds` runs out and the reason names the phase that hung.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from kimi_agent import Agent, AgentSettings, EpisodeInterrupted
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.report import write_report
from kimi_agent.trajectory import read_run, read_steps


def _never(call: Any) -> str:
    threading.Event().wait()  # a generation that never returns
    raise AssertionError("unreachable")


def test_a_generation_that_never_returns_ends_the_episode(tmp_path: Path, fake_env: Any) -> None:
    settings = AgentSettings(out_dir=tmp_path, max_seconds=1.0)
    result = Agent(ScriptedBackend(_never), fake_env, settings).run_episode("wait forever")
    assert result.status == "error"
    assert "step 1 hung in generate" in result.reason and "1 s" in result.reason
    assert read_run(result.run_dir)["status"] == "error"
    [step] = read_steps(result.run_dir)  # the hung step is still recorded, with the time it hung
    assert step["durations_ms"]["interrupted"] >= 500, step["durations_ms"]
    assert step["error"].startswith("interrupted in generate after "), step["error"]
    assert "interrupted in generate after" in write_report(result.run_dir).read_text()


def test_an_action_that_never_returns_ends_the_episode(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    def hang(*args: Any, **kwargs: Any) -> Any:
        threading.Event().wait()

    fake_env.execute = hang
    replies = [kimi_reply("submit", "Press Enter", "pyautogui.press('enter')")]
    result = Agent(ScriptedBackend(replies), fake_env, AgentSettings(out_dir=tmp_path, max_seconds=1.0)).run_episode("go")
    assert result.status == "error" and "hung in execute (press, then settle)" in result.reason
    steps = read_steps(result.run_dir)
    assert steps[0]["parsed"]["actions"][0]["type"] == "press"


def test_ctrl_c_is_still_the_user_stopping(tmp_path: Path, fake_env: Any) -> None:
    def interrupt(call: Any) -> str:
        raise KeyboardInterrupt

    with pytest.raises(EpisodeInterrupted) as stopped:
        Agent(ScriptedBackend(interrupt), fake_env, AgentSettings(out_dir=tmp_path)).run_episode("stop")
    result = stopped.value.result
    assert result.status == "user_stopped"
    assert read_steps(result.run_dir)[0]["error"].startswith("interrupted in generate after ")
