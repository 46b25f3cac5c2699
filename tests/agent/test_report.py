"""The episode report: header fields, step index, marks for every pointer action, per-step time
over all attempts, errors where they happened, and the final screen. Episodes run on the
in-memory FakeEnv with the scripted backend (a test double for the model)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kimi_agent import Agent, AgentSettings
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.report import model_label, render_report, step_seconds
from kimi_agent.trajectory import read_steps


def _episode(tmp_path: Path, env: Any, kimi_reply: Any) -> Path:
    replies = [
        "I will click somewhere.",  # no Code block: rejected, the step is retried
        kimi_reply("a", "Click the button.", "pyautogui.click(x=0.25, y=0.5)"),
        kimi_reply("b", "Drag the slider.", "pyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(0.6, 0.7)"),
        kimi_reply("c", "Scroll down.", "pyautogui.scroll(-5, x=0.5, y=0.5)"),  # this env cannot scroll
        kimi_reply("d", "Press enter instead.", "pyautogui.press('enter')"),
        kimi_reply("e", "Done.", "computer.terminate(status='success')"),
    ]
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=8)
    return Agent(ScriptedBackend(replies), env, settings).run_episode("drag the slider").run_dir


def test_report_header_index_marks_timings_errors_and_final_screen(tmp_path: Path, fake_env: Any,
                                                                    kimi_reply: Any) -> None:
    fake_env.fail_types = ("scroll",)
    run = _episode(tmp_path, fake_env, kimi_reply)
    page = render_report(run)
    steps = read_steps(run)
    # header: who answered, where, when, which prompt; never "model None"
    text = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may spell anything
    assert "scripted replies (test double)" in page and "None" not in text
    assert "<td>environment</td><td>desktop (1920x1080)</td>" in page
    run_json = json.loads((run / "run.json").read_text())
    assert f"<td>date</td><td>{run_json['started_at'].replace('T', ' ')}</td>" in page
    assert f"version {run_json['prompt_version']}" in page
    # a step index linking to every step and the final screen
    nav = re.search(r'<nav class="steps">(.*?)</nav>', page).group(1)
    assert re.findall(r'href="#(step-\d+|final)"', nav) == [f"step-{s['step']}" for s in steps] + ["final"]
    for s in steps:
        assert f'id="step-{s["step"]}"' in page
    assert page.count('id="final"') == 1
    # marks: a click ring, a drag path, a scroll arrow (refused: grey)
    assert page.count('class="mark mark-click"') == 1 + 0  # step 1's click (enter has no point)
    assert page.count('class="mark mark-drag"') == 1 and page.count('class="mark mark-scroll"') == 1
    scroll = re.search(r'<g class="mark mark-scroll"><title>([^<]*)</title>(.*?)</g>', page)
    assert scroll.group(1) == "scroll down 5 (refused)" and 'stroke="#777"' in scroll.group(2)
    # step 1 took two attempts: its time includes both, and the rejection is shown in place
    first = steps[0]
    assert len(first["attempts"]) == 2
    section = page[page.index('id="step-1"'):page.index('id="step-2"')]
    assert f"{step_seconds(first):.1f} s, 2 attempts" in section
    assert "attempt rejected" in section and "I will click somewhere." in section
    assert step_seconds(first) * 1000 >= sum(a["model_ms"] for a in first["attempts"])
    # the scroll error sits in step 3, next to its action
    section3 = page[page.index('id="step-3"'):page.index('id="step-4"')]
    assert "scroll is not supported here" in section3


def test_model_label_never_says_none() -> None:
    assert model_label({"backend": "scripted", "model": None}) == "scripted replies (test double)"
    assert model_label({"backend": "openai", "model": "moonshotai/Kimi-VL-A3B-Instruct"}) == \
        "moonshotai/Kimi-VL-A3B-Instruct"
    assert model_label({"backend": "native", "model": None}) == "native backend (model not recorded)"
    assert model_label({}) == "not recorded"
