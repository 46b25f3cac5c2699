"""The episode loop on a fake environment: funnel, budgets, Ctrl-C, safety, secrets, trajectory."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kimi_agent import Agent, AgentSettings, EpisodeInterrupted
from kimi_agent.errors import ConfigError, ModelUnavailableError
from kimi_agent.loop import Listener
from kimi_agent.model_runtime.backends import make_backend
from kimi_agent.model_runtime.backends.scripted import ScriptCall, ScriptedBackend
from kimi_agent.safety import SafetySettings
from kimi_agent.trajectory import read_run, read_steps

DONE = "computer.terminate(status='success', answer='ok')"


def _settings(tmp_path: Path, **kw: Any) -> AgentSettings:
    return AgentSettings(out_dir=tmp_path / "runs", **kw)


def test_success_writes_trajectory(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    replies = [kimi_reply("I see the page", "Click the Save button", "pyautogui.click(x=0.5, y=0.25)"),
               kimi_reply("Saved", "Finish", DONE)]
    result = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path)).run_episode("save the file")
    assert result.status == "success" and result.answer == "ok" and result.steps == 2
    run = read_run(result.run_dir)
    assert run["status"] == "success" and len(run["prompt_sha256"]) == 64 and run["backend"] == "scripted"
    assert result.run_dir.name.endswith("_save-the-file")
    steps = read_steps(result.run_dir)
    assert len(steps) == 2
    act = steps[0]["actions"][0]
    assert act["model_xy"] == [[0.5, 0.25]] and act["norm_xy"] == [[0.5, 0.25]] and act["exec_xy"] == [[960.0, 270.0]]
    assert steps[0]["parsed"]["action_text"] == "Click the Save button"
    assert set(steps[0]["durations_ms"]) >= {"observe", "preprocess", "model", "parse", "execute", "settle"}
    for rel in (steps[0]["obs_before"]["file"], steps[0]["obs_after"]["file"]):
        assert (result.run_dir / rel).stat().st_size > 0
    assert steps[1]["obs_before"]["file"] == steps[0]["obs_after"]["file"]  # one frame, written once


def test_bad_point_is_rejected_retried_and_the_budget_ends_as_error(tmp_path: Path, fake_env: Any,
                                                                   kimi_reply: Any) -> None:
    bad = kimi_reply("The button is there", "Click the button", "pyautogui.click(x=0.0, y=0.0)")
    backend = ScriptedBackend([bad] * 10)
    settings = _settings(tmp_path, max_attempts=2, max_failures=3)
    result = Agent(backend, fake_env, settings).run_episode("click it")
    assert result.status == "error" and "3 consecutive failures" in result.reason and "corner" in result.reason
    assert fake_env.executed == []
    temps = [c.sampling.temperature for c in backend.calls]
    assert temps == [0.0, 0.3, 0.0]  # retries raise the temperature; a new step starts from the setting
    feedback = backend.calls[1].messages[-1]["content"][1]["text"]
    assert "could not be carried out" in feedback and "top-left corner" in feedback
    steps = read_steps(result.run_dir)
    assert [len(s["attempts"]) for s in steps] == [2, 1]
    assert all(a["kind"] == "degenerate" for s in steps for a in s["attempts"])


def test_off_screen_then_good_point_recovers(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    replies = [kimi_reply("x", "Click", "pyautogui.click(x=5000, y=5000)"),
               kimi_reply("x", "Click", "pyautogui.click(x=0.3, y=0.6)"), kimi_reply("done", "Finish", DONE)]
    result = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path)).run_episode("click")
    assert result.status == "success" and result.failures == 1 and len(fake_env.executed) == 1


def test_ctrl_c_in_run_writes_the_report_then_stops_the_script(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    class StopAtStep2(Listener):
        def on_step_start(self, step: int) -> None:
            if step == 2:
                raise KeyboardInterrupt  # as Ctrl-C in a callback would

    replies = [kimi_reply("go", "Click", "pyautogui.click(x=0.2, y=0.5)")] * 3
    agent = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path), listener=StopAtStep2())
    with pytest.raises(EpisodeInterrupted) as stopped:
        agent.run("click twice")
    result = stopped.value.result
    assert (result.status, result.steps) == ("user_stopped", 2)  # the step it was starting counts
    assert result.report is not None and result.report.is_file() and (result.run_dir / "traj.jsonl").is_file()


def test_ctrl_c_writes_run_json_and_every_frame(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    def script(call: ScriptCall) -> str:
        if call.index == 3:
            raise KeyboardInterrupt
        return kimi_reply("go", "Click", f"pyautogui.click(x=0.{call.index + 1}, y=0.5)")

    with pytest.raises(EpisodeInterrupted) as stopped:  # a KeyboardInterrupt: a script's loop stops
        Agent(ScriptedBackend(script), fake_env, _settings(tmp_path)).run_episode("loop forever")
    assert isinstance(stopped.value, KeyboardInterrupt)
    result = stopped.value.result
    assert result.status == "user_stopped" and str(result.run_dir) in str(stopped.value)
    run = read_run(result.run_dir)
    assert run["status"] == "user_stopped" and run["steps"] == 4
    steps = read_steps(result.run_dir)
    assert len(steps) == 4
    files = {s["obs_before"]["file"] for s in steps} | {s["obs_after"]["file"] for s in steps if s["obs_after"]}
    assert len(files) == 4
    for rel in files:
        assert (result.run_dir / rel).stat().st_size > 0
    assert not list((result.run_dir / "frames").glob("*.part"))


def test_max_steps_and_backend_errors_end_with_a_reason(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    loop = kimi_reply("again", "Wait", "computer.wait(seconds=0)")
    result = Agent(ScriptedBackend([loop] * 5), fake_env, _settings(tmp_path, max_steps=3)).run_episode("wait")
    assert result.status == "max_steps" and result.steps == 3
    result = Agent(ScriptedBackend([]), fake_env, _settings(tmp_path)).run_episode("nothing")
    assert result.status == "error" and "ran out of replies" in result.reason


def test_secrets_are_typed_but_redacted(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    secret = "hunter2-very-secret"
    replies = [kimi_reply(f"I type {secret}", "Type the password", "pyautogui.write('<secret>pw</secret>')"),
               kimi_reply("done", "Finish", DONE)]
    settings = _settings(tmp_path, safety=SafetySettings(secrets={"pw": secret}))
    result = Agent(ScriptedBackend(replies), fake_env, settings).run_episode(f"log in with {secret}")
    assert result.status == "success"
    assert fake_env.executed[0].text == secret
    for name in ("run.json", "steps.jsonl"):
        text = (result.run_dir / name).read_text()
        assert secret not in text and "<secret:pw>" in text


def test_risky_actions_need_confirmation(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    replies = [kimi_reply("close", "Close the window", "pyautogui.hotkey('alt', 'f4')"), kimi_reply("ok", "Finish", DONE)]
    result = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path)).run_episode("close")
    assert result.status == "success" and fake_env.executed == [] and result.failures == 1
    asked: list[str] = []
    agent = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path),
                  confirm=lambda q: asked.append(q) is None)
    assert agent.run_episode("close").status == "success"
    assert len(fake_env.executed) == 1 and "alt+f4" in asked[0]
    fake_env.password_focused = True
    typing = [kimi_reply("t", "Type", "pyautogui.write('abc')"), kimi_reply("ok", "Finish", DONE)]
    result = Agent(ScriptedBackend(typing), fake_env, _settings(tmp_path)).run_episode("type")
    steps = read_steps(result.run_dir)
    assert steps[0]["actions"][0]["safety"]["risk"] == "type into a password field"
    yes = _settings(tmp_path, safety=SafetySettings(confirm_risky=False))
    assert Agent(ScriptedBackend(typing), fake_env, yes).run_episode("type").failures == 0


def test_an_allowlist_is_refused_outside_the_browser_and_held_keys_end_with_the_episode(
        tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    """The library path refuses what the CLI refuses: SafetySettings(allowed_urls=...) with a desktop
    (the model could type any URL), before any run folder; keys held down in one episode are not
    counted in the next (the environment released them)."""
    listed = _settings(tmp_path, safety=SafetySettings(allowed_urls=["http://127.0.0.1:8765"]))
    with pytest.raises(ConfigError, match="allowed_urls holds only in the browser environment, not in 'desktop'"):
        Agent(ScriptedBackend([kimi_reply("ok", "Finish", DONE)]), fake_env, listed).run_episode("x")
    assert not list(tmp_path.glob("runs/*"))
    hold = [kimi_reply("h", "Hold ctrl", "pyautogui.keyDown('ctrl')"), kimi_reply("ok", "Finish", DONE)]
    agent = Agent(ScriptedBackend([*hold, kimi_reply("w", "Type w", "pyautogui.write('w')"),
                                   kimi_reply("ok", "Finish", DONE)]), fake_env, _settings(tmp_path))
    assert agent.run_episode("hold").status == "success" and agent.safety.held == {"ctrlleft"}
    result = agent.run_episode("type w")  # not ctrl+w: the first episode's ctrl was released
    assert result.failures == 0 and fake_env.executed[-1].type == "type_text"


def test_ask_user(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    ask = kimi_reply("?", "Ask", "computer.ask_user(question='Which account?')")
    result = Agent(ScriptedBackend([ask]), fake_env, _settings(tmp_path)).run_episode("log in")
    assert result.status == "failure" and "nobody can answer" in result.reason
    backend = ScriptedBackend([ask, kimi_reply("ok", "Finish", DONE)])
    agent = Agent(backend, fake_env, _settings(tmp_path), ask=lambda q: "the work one")
    assert "computer.ask_user" in agent.prompt.system
    assert agent.run_episode("log in").status == "success"
    assert "The user answered: the work one" in backend.calls[1].messages[-1]["content"][1]["text"]


def test_scripted_backend_reads_jsonl(tmp_path: Path, kimi_reply: Any) -> None:
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(kimi_reply("a", "b", DONE)) + "\n" + json.dumps({"text": "second"}) + "\n")
    backend = make_backend("scripted", path)
    assert backend.name == "scripted" and len(backend._replies) == 2  # type: ignore[attr-defined]
    paced = tmp_path / "paced.jsonl"
    paced.write_text(json.dumps({"text": "slow reply", "stream_s": 0.2}) + "\n")
    pieces: list[str] = []
    reply = ScriptedBackend(paced).generate([], [], AgentSettings().sampling, on_text=pieces.append)
    assert reply.text == "slow reply" and "".join(pieces) == "slow reply" and len(pieces) == 2  # 8-char pieces
    paced.write_text(json.dumps({"text": "x", "stream_s": "soon"}) + "\n")
    with pytest.raises(ConfigError, match=r"paced.jsonl:1: stream_s must be a number"):
        ScriptedBackend(paced)


def test_transformers_backend_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # not installed
    with pytest.raises(ModelUnavailableError, match=r"4\.48\.2-4\.51\.x.*kimi-agent\[reference\]"):
        make_backend("transformers", tmp_path)
    fake = type(sys)("transformers")
    fake.__version__ = "5.23.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", fake)
    with pytest.raises(ModelUnavailableError, match=r"transformers 5\.23\.0 is installed"):
        make_backend("transformers", tmp_path)


class _Events(Listener):
    """Records every listener call, in order, as short strings."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.text = ""

    def on_step_start(self, step: int) -> None:
        self.events.append(f"start {step}")

    def on_phase(self, step: int, phase: str, detail: str = "") -> None:
        self.events.append(f"{step} {phase}" + (f" {detail}" if detail else ""))

    def on_text(self, piece: str) -> None:
        self.text += piece
        if self.events[-1] != "text":
            self.events.append("text")

    def on_reply(self, step: int, thought: str, action: str) -> None:
        self.events.append(f"reply {step}: {thought} / {action}")

    def on_retry(self, step: int, error: str) -> None:
        self.events.append(f"retry {step}")

    def on_step(self, record: Any) -> None:
        self.events.append(f"end {record.step}")


def test_listener_sees_every_phase_and_the_reply_before_the_confirmation(tmp_path: Path, fake_env: Any,
                                                                          kimi_reply: Any) -> None:
    replies = [kimi_reply("A window.", "Click OK", "pyautogui.click(x=0.5, y=0.5)"),
               kimi_reply("Wait for it.", "Wait", "computer.wait(seconds=0.01)"),
               kimi_reply("Close it.", "Close the window", "pyautogui.hotkey('alt', 'f4')"),
               kimi_reply("Done.", "Finish", DONE)]
    listener = _Events()
    agent = Agent(ScriptedBackend(replies), fake_env, _settings(tmp_path), listener=listener,
                  confirm=lambda q: listener.events.append("confirm") is None)
    assert agent.run_episode("click ok").status == "success"
    assert listener.events == [
        "1 observing",
        "start 1", "1 thinking", "text", "reply 1: A window. / Click OK", "1 acting click", "1 settling",
        "1 observing", "end 1",
        "start 2", "2 thinking", "text", "reply 2: Wait for it. / Wait", "2 waiting 0.01 s", "2 observing", "end 2",
        "start 3", "3 thinking", "text", "reply 3: Close it. / Close the window", "confirm", "3 acting hotkey",
        "3 settling", "3 observing", "end 3",
        "start 4", "4 thinking", "text", "reply 4: Done. / Finish", "end 4"]
    assert listener.text == "".join(replies)


def test_run_says_it_is_writing_the_report_after_the_last_step(tmp_path: Path, fake_env: Any,
                                                               kimi_reply: Any) -> None:
    listener = _Events()
    agent = Agent(ScriptedBackend([kimi_reply("Done.", "Finish", DONE)]), fake_env, _settings(tmp_path),
                  listener=listener)
    result = agent.run("finish")
    assert listener.events[-2:] == ["end 1", "1 writing report, recording"]
    assert result.report is not None and result.report.is_file()
