"""Text no writer or terminal can take (notes/redteam-replies.md F4, F6): lone surrogates from a
reply must not lose a step or the report, and escape sequences must not reach the terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kimi_agent import Agent, AgentSettings
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.progress import ConsoleListener, ask_on_terminal, confirm_on_terminal
from kimi_agent.result import EpisodeResult
from kimi_agent.trajectory import StepRecord, Trajectory, read_steps

ESCAPES = "\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m \x1b[2K\rDONE"


def test_a_lone_surrogate_in_a_reply_is_refused_and_every_step_and_the_report_are_written(
        tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    replies = [
        kimi_reply("t", "Click", "pyautogui.click(x=0.5, y=0.5)"),
        # a plain-ASCII reply whose string literal is a lone surrogate
        kimi_reply("t", "Finish", "computer.terminate(status='success', answer='bad \\udcff answer')"),
        # an endpoint's JSON "\ud800": the raw reply text itself holds one
        kimi_reply("bad \ud800 thought", "Finish", "computer.terminate(status='success', answer='ok')"),
        kimi_reply("t", "Finish", "computer.terminate(status='success', answer='ok')"),
    ]
    agent = Agent(ScriptedBackend(replies), fake_env, AgentSettings(out_dir=tmp_path / "runs", max_attempts=3))
    result = agent.run("click, then finish")
    assert result.status == "success" and result.answer == "ok" and result.steps == 2
    steps = read_steps(result.run_dir)
    assert [s["step"] for s in steps] == [1, 2]
    attempts = steps[1]["attempts"]
    assert [a["kind"] for a in attempts] == ["bad_text", "bad_text", None]
    assert "'answer' of computer.terminate holds U+DCFF" in attempts[0]["error"]
    assert "bad \\ud800 thought" in attempts[1]["reply"]  # written as visible text, not lost
    assert result.report is not None and result.report.is_file()
    assert "\\ud800" in result.report.read_text(encoding="utf-8")


def test_the_step_writer_keeps_a_record_that_holds_a_lone_surrogate(tmp_path: Path) -> None:
    traj = Trajectory(tmp_path, "write it")
    traj.append_step(StepRecord(step=1, started_at=0.0, obs_before={"title": "page \udcff"}, error="x\ud800y"))
    traj.write_run(answer="a\udcffb")
    traj.close()
    [step] = read_steps(traj.path)
    assert step["obs_before"]["title"] == "page \\udcff" and step["error"] == "x\\ud800y"
    assert json.loads((traj.path / "run.json").read_text(encoding="utf-8"))["answer"] == "a\\udcffb"


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300, force_terminal=False), out


def test_the_answer_and_reason_are_printed_without_escape_sequences(tmp_path: Path) -> None:
    console, out = _console()
    result = EpisodeResult(status="success", reason=f"the model reported success {ESCAPES}", answer=ESCAPES,
                           steps=1, failures=0, duration_s=1.0, run_dir=tmp_path)
    ConsoleListener(console).summary(result)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "answer: \\x1b]0;PWNED\\x07\\x1b[31mRED" in text, text


def test_the_models_question_and_a_confirmation_are_asked_without_escape_sequences(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("builtins.input", lambda *args: "y")
    console, out = _console()
    assert ask_on_terminal("\x1b]0;OWNED\x1b\\\x1b[2J\x1b[HType your sudo password:", console=console) == "y"
    assert confirm_on_terminal(f"The agent wants to: type '{ESCAPES}'. Allow it?", console=console)
    text = out.getvalue()
    assert "\x1b" not in text and "\\x1b[2J\\x1b[HType your sudo password:" in text, text


def test_bidi_controls_are_printed_as_escapes() -> None:
    """U+202E in a model's answer would visually reorder the summary line (re-test N6)."""
    from kimi_agent.progress import printable

    assert printable("ok \u202egnp.exe\u2066x\u2069") == "ok \\u202egnp.exe\\u2066x\\u2069"
