"""The episode report: header fields, step index, marks for every pointer action, per-step time
over all attempts, errors where they happened, and the final screen. Episodes run on the
in-memory FakeEnv with the scripted backend (a test double for the model)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from kimi_agent import Agent, AgentSettings
from kimi_agent.artifacts import write_episode_artifacts
from kimi_agent.errors import ArtifactError
from kimi_agent.export import export_osworld
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.recording import write_recording
from kimi_agent.report import load_run, model_label, render_report, step_seconds, write_report
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
    assert model_label({"backend": "solutions", "model": None}) == "scripted solutions of the built-in suite (test double)"
    assert model_label({"backend": "openai", "model": "moonshotai/Kimi-VL-A3B-Instruct"}) == \
        "moonshotai/Kimi-VL-A3B-Instruct"
    assert model_label({"backend": "native", "model": None}) == "native backend (model not recorded)"
    assert model_label({}) == "not recorded"


def _short_episode(tmp_path: Path, env: Any, kimi_reply: Any) -> Path:
    replies = [kimi_reply("a", "Click the button.", "pyautogui.click(x=0.25, y=0.5)"),
               kimi_reply("b", "Done.", "computer.terminate(status='success')")]
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=4)
    return Agent(ScriptedBackend(replies), env, settings).run_episode("click it").run_dir


def test_unreadable_run_files_are_named_with_line_and_column(tmp_path: Path, fake_env: Any,
                                                             kimi_reply: Any) -> None:
    run = _short_episode(tmp_path, fake_env, kimi_reply)
    write_episode_artifacts(run)
    before = {name: (run / name).read_bytes() for name in ("report.html", "traj.jsonl")}
    good_run_json = (run / "run.json").read_text()
    (run / "run.json").write_text("")
    with pytest.raises(ArtifactError) as err:
        write_report(run)
    assert str(err.value) == f"could not read {run / 'run.json'}: not valid JSON at line 1, column 1 (Expecting value)"
    with pytest.raises(ArtifactError, match=r"run\.json: not valid JSON at line 1, column 1"):
        write_episode_artifacts(run, strict=True)
    # after an episode (not strict) it is logged, and nothing is rewritten from unreadable inputs
    assert write_episode_artifacts(run) == {}
    assert {name: (run / name).read_bytes() for name in before} == before
    (run / "run.json").write_text(good_run_json)
    # a damaged steps.jsonl line is named by its number; a torn last line (a crash mid-append) is not an error
    lines = (run / "steps.jsonl").read_text().splitlines()
    assert len(lines) == 2
    (run / "steps.jsonl").write_text(lines[0][:-3] + "\n" + lines[1] + "\n")
    with pytest.raises(ArtifactError) as err:
        render_report(run)
    assert str(err.value).startswith(f"could not read {run / 'steps.jsonl'}: line 1 is not valid JSON at column ")
    # the library's other writers read it the same way: no traj.jsonl or recording that leaves step 1 out
    for write in (export_osworld, write_recording):
        with pytest.raises(ArtifactError, match=r"steps\.jsonl: line 1 is not valid JSON"):
            write(run)
    assert {name: (run / name).read_bytes() for name in before} == before
    (run / "steps.jsonl").write_text(lines[0] + "\n" + lines[1][:40])
    assert [s["step"] for s in load_run(run)[1]] == [1]


def test_missing_frames_never_replace_a_report_that_has_them(tmp_path: Path, fake_env: Any, kimi_reply: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    run = _short_episode(tmp_path, fake_env, kimi_reply)
    full = write_report(run).read_bytes()
    shots = full.count(b'<img src="data:')
    assert shots == 3  # two steps and the final screen
    shutil.rmtree(run / "frames")
    with pytest.raises(ArtifactError) as err:
        write_report(run)
    message = str(err.value)
    assert "3 of 3 screenshots are missing" in message and "frames/step_0001" in message, message
    assert f"kept the existing {run / 'report.html'}, which embeds 3" in message
    assert (run / "report.html").read_bytes() == full
    with pytest.raises(ArtifactError, match="screenshots are missing"):
        write_episode_artifacts(run, strict=True)
    with caplog.at_level(logging.WARNING, logger="kimi_agent.artifacts"):
        write_episode_artifacts(run)  # after an episode: logged, the report kept
    assert "screenshots are missing" in caplog.text
    assert (run / "report.html").read_bytes() == full
    # without a report to keep, one is written that says what is missing
    (run / "report.html").unlink()
    page = write_report(run).read_text()
    assert '<img src="data:' not in page
    notice = re.search(r'<div class="errbox err" id="missing-frames">(.*?)</div>', page)
    assert notice is not None and "3 of 3 screenshots are missing" in notice.group(1)
    # and rewriting it (frames still missing) replaces nothing better
    assert write_report(run).read_text() == page


def test_a_frame_that_is_a_fifo_or_a_decompression_bomb_is_missing_not_a_hang(tmp_path: Path, fake_env: Any,
                                                                              kimi_reply: Any) -> None:
    """A damaged run folder (or one from elsewhere) cannot block `report` or crash it."""
    import os

    from PIL import Image

    from kimi_agent.frame_files import load_frame

    run = _short_episode(tmp_path, fake_env, kimi_reply)
    frames = sorted((run / "frames").iterdir())
    frames[0].unlink()
    os.mkfifo(frames[0])
    Image.new("1", (20_000, 10_000)).save(frames[1])  # 200 megapixels, a few KB of PNG
    for frame, why in ((frames[0], "is not a regular file"), (frames[1], "decompression bomb")):
        with pytest.raises(OSError, match=why):
            load_frame(frame)
    html = write_report(run).read_text()  # returns at once: those screenshots are left out
    assert html.count('<img src="data:') < 3  # two steps and the final screen, when all are readable
