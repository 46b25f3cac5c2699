"""`kimi-agent replay`: a real browser episode (the scripted backend, a test double, acts on a page
this test serves) is replayed in a fresh browser by the CLI; it matches (exit 0), and a tampered
copy whose first click misses the button differs from the recorded screens (exit 1). Without a
browser: replays on the in-memory FakeEnv, unreadable run files, and the per-step summary line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support.cli import run_cli
from support.page_server import page_server

from kimi_agent import Agent, AgentSettings
from kimi_agent.errors import ArtifactError
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.replay import (
    DEFAULT_THRESHOLD,
    StepReplay,
    frame_difference,
    read_recorded_run,
    recorded_actions,
    replay_run,
)
from kimi_agent.trajectory import read_steps

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium")

PAGE = b"""<!doctype html><html><head><title>Press</title></head><body style="margin:0;font:24px sans-serif">
<button id="b" style="position:absolute;left:100px;top:100px;width:240px;height:80px;font-size:24px"
 onclick="document.body.style.background='#3a7';this.textContent='pressed'">press me</button>
<div style="height:3000px"></div></body></html>"""


def kimi(thought: str, action: str, code: str) -> str:
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


FORM = b"""<!doctype html><html><head><title>Code</title></head><body style="margin:0;font:24px sans-serif">
<input id="code" style="position:absolute;left:100px;top:100px;width:400px;height:80px;font-size:32px"
 oninput="document.body.style.background = this.value === 'zebra-4417' ? '#3a7' : '#fff'">
</body></html>"""


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with page_server(lambda path: (FORM if path.endswith("form.html") else PAGE, "text/html")) as base:
        yield f"{base}/press.html"


@pytest.fixture(scope="module")
def recorded(page_url: str, pw: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kimi_agent.env.browser import BrowserEnv

    replies = [kimi("A button.", "Press it.", "pyautogui.click(x=0.1719, y=0.175)"),  # (220, 140) of 1280x800
               kimi("It is green now.", "Scroll down.", "pyautogui.scroll(-3, x=0.5, y=0.5)"),
               kimi("Scrolled.", "Type a key.", "pyautogui.press('a')")]
    with BrowserEnv(headless=True, viewport=(1280, 800), start_url=page_url) as env:
        result = Agent(ScriptedBackend(replies), env,
                       AgentSettings(out_dir=tmp_path_factory.mktemp("runs"), max_steps=3)).run_episode("press it")
    assert result.status == "max_steps", result.reason
    return result.run_dir


def _replay(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("kimi-agent")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "COLUMNS")}
    return subprocess.run([str(script), "replay", str(run_dir), *args], env=env, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


@needs_chromium
def test_replay_of_an_unchanged_run_matches(recorded: Path, tmp_path: Path) -> None:
    r = _replay(recorded, "--out", str(tmp_path / "replay"))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "replay" / "replay.json").read_text())
    assert data["matched"] is True and data["threshold"] == DEFAULT_THRESHOLD
    assert [s["step"] for s in data["steps"]] == [1, 2, 3, 4]  # three steps, then the final screen
    assert all(s["difference"] <= DEFAULT_THRESHOLD for s in data["steps"])
    assert data["steps"][0]["executed"] and data["steps"][1]["executed"]
    report = (tmp_path / "replay" / "report.html").read_text()
    assert "every step matches" in report and report.count("<section") == 4
    assert (tmp_path / "replay" / "report.html").as_posix() in r.stdout


@needs_chromium
def test_replay_of_a_tampered_run_differs(recorded: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(recorded, tampered)
    steps = read_steps(tampered)
    click = steps[0]["actions"][0]
    click["action"]["point"] = {"x": 0.9, "y": 0.9}  # the click now misses the button
    click["norm_xy"] = [[0.9, 0.9]]
    (tampered / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    r = _replay(tampered, "--out", str(tmp_path / "replay"))
    assert r.returncode == 1, r.stdout + r.stderr
    data = json.loads((tmp_path / "replay" / "replay.json").read_text())
    first, second = data["steps"][:2]
    assert first["matched"] is True  # the page before any action is the same
    assert second["matched"] is False and second["difference"] > 0.5  # not green: most of the screen differs
    assert "step 2: DIFFERS" in r.stderr
    assert "the screen differs" in (tmp_path / "replay" / "report.html").read_text()


def test_replay_and_report_refuse_a_folder_that_is_not_a_run_or_does_not_exist(tmp_path: Path) -> None:
    r = _replay(tmp_path)
    assert r.returncode == 2 and "is not a run folder" in r.stderr
    gone = tmp_path / "no-such-run"
    for command in ("replay", "report"):
        r = run_cli(command, str(gone), tmp_path=tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == f"error: {gone} does not exist", (command, r.stderr)


def test_replay_refuses_an_out_that_cannot_be_a_folder_before_any_environment_starts(
        tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _fake_run(tmp_path, fake_env, kimi_reply)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    r = _replay(run, "--out", str(afile))
    assert r.returncode == 2 and r.stderr.strip() == f"error: --out {afile} is a file, not a folder; pass a folder.", r
    assert afile.read_text() == "mine"
    with pytest.raises(ArtifactError, match=r"the replay's folder .*afile cannot be made: Not a directory"):
        replay_run(run, type(fake_env)(), out_dir=afile)  # the library: a typed error, not an OSError


def test_report_and_replay_of_a_task_folder_name_the_run_folder_inside(tmp_path: Path) -> None:
    task = tmp_path / "out" / "suite-web-form"  # what `kimi-agent run` writes: the episode is one level down
    episode = task / "20261129-070000_sign-up"
    episode.mkdir(parents=True)
    (episode / "steps.jsonl").write_text("")
    for command in ("replay", "report"):
        r = run_cli(command, str(task), tmp_path=tmp_path)
        assert r.returncode == 2, (command, r.stderr)
        assert r.stderr.strip() == f"error: {task} is not a run folder, but holds one: {episode}", (command, r.stderr)


def test_recorded_actions_are_typed_and_refusals_are_skipped() -> None:
    step = {"step": 1, "actions": [
        {"action": {"type": "click", "point": {"x": 0.5, "y": 0.5}}, "executed": ["mouse.click"], "ok": True},
        {"action": {"type": "hotkey", "keys": ["ctrl", "w"]}, "executed": [], "ok": False, "error": "refused"},
        {"action": {"type": "type_text", "text": "<secret>pw</secret>"}, "executed": ["typed"], "ok": True}]}
    actions, skipped = recorded_actions(step)
    assert [a.type for a in actions] == ["click"]
    assert skipped == ["hotkey: not executed in the run (refused)",
                       "type_text: typed the secret pw, which the trajectory does not hold (pass --secret NAME=VALUE)"]
    actions, skipped = recorded_actions(step, {"pw": "hunter2"})
    assert [a.type for a in actions] == ["click", "type_text"] and actions[1].text == "hunter2"  # type: ignore[union-attr]
    assert len(skipped) == 1


@needs_chromium
def test_replay_types_a_secret_given_on_the_command_line_and_never_writes_it(page_url: str, pw: Any,
                                                                             tmp_path: Path) -> None:
    """A run that typed a secret into a text field (the page turns green when it is right):
    replayed without the secret that typing is skipped and the screen differs; with `--secret` it
    is typed (green again, the screens match), and neither replay.json nor the report holds it."""
    from kimi_agent.env.browser import BrowserEnv
    from kimi_agent.safety import SafetySettings

    form = page_url.replace("press.html", "form.html")
    replies = [kimi("A field.", "Click the field.", "pyautogui.click(x=0.1719, y=0.175)"),
               kimi("Focused.", "Type the code.", "pyautogui.write('<secret>code</secret>')"),
               kimi("Typed.", "Done.", "computer.terminate(status='success')")]
    with BrowserEnv(headless=True, viewport=(1280, 800), start_url=form) as env:
        settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=3,
                                 safety=SafetySettings(secrets={"code": "zebra-4417"}))
        run = Agent(ScriptedBackend(replies), env, settings).run_episode("type the code").run_dir
    assert "zebra-4417" not in (run / "steps.jsonl").read_text()
    without = _replay(run, "--out", str(tmp_path / "without"))
    data = json.loads((tmp_path / "without" / "replay.json").read_text())
    assert without.returncode == 1 and "typed the secret code" in json.dumps(data)
    given = _replay(run, "--out", str(tmp_path / "with"), "--secret", "code=zebra-4417")
    assert given.returncode == 0, given.stdout + given.stderr
    for f in (tmp_path / "with").rglob("*"):
        if f.suffix in (".json", ".html"):
            assert "zebra-4417" not in f.read_text(), f


def test_frame_difference_fraction() -> None:
    white = Image.new("RGB", (200, 100), "white")
    half = white.copy()
    half.paste((0, 0, 0), (0, 0, 100, 100))
    assert frame_difference(white, white.copy()) == 0.0
    assert frame_difference(white, half) == pytest.approx(0.5, abs=0.02)
    assert frame_difference(white, Image.new("RGB", (100, 100), "white")) == 1.0  # another aspect ratio


def _fake_run(tmp_path: Path, env: Any, kimi_reply: Any) -> Path:
    replies = [kimi_reply("a", "Click.", "pyautogui.click(x=0.25, y=0.5)"),
               kimi_reply("b", "Press enter.", "pyautogui.press('enter')"),
               kimi_reply("c", "Done.", "computer.terminate(status='success')")]
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=4)
    return Agent(ScriptedBackend(replies), env, settings).run_episode("click and press").run_dir


def test_step_summary_says_how_much_of_the_screen_differs() -> None:
    assert StepReplay(1, "a.png", "b.png", 0.0065, True).summary() == "step 1: matches (0.65% of pixels differ)"
    assert StepReplay(2, "a.png", "b.png", 0.632, False, error="the click failed").summary() == \
        "step 2: DIFFERS (63.20% of pixels differ): the click failed"


def test_replay_on_a_fake_env_matches_step_by_step(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _fake_run(tmp_path, fake_env, kimi_reply)
    fresh = type(fake_env)()  # a new screen, in its first state
    result = replay_run(run, fresh, out_dir=tmp_path / "replay")
    assert result.matched and [a.type for a in fresh.executed] == ["click", "press"]
    assert [s.summary() for s in result.steps] == [f"step {n}: matches (0.00% of pixels differ)" for n in (1, 2, 3)]


def test_replay_names_an_unreadable_run_file_before_executing_anything(tmp_path: Path, fake_env: Any,
                                                                       kimi_reply: Any) -> None:
    run = _fake_run(tmp_path, fake_env, kimi_reply)
    good = (run / "run.json").read_text()
    (run / "run.json").write_text('{"instruction": "click", ')
    fresh = type(fake_env)()
    for call in (lambda: read_recorded_run(run), lambda: replay_run(run, fresh, out_dir=tmp_path / "replay")):
        with pytest.raises(ArtifactError) as err:
            call()
        assert str(err.value).startswith(f"could not read {run / 'run.json'}: not valid JSON at line 1, column 26 ")
    assert fresh.executed == [] and not (tmp_path / "replay").exists()
    (run / "run.json").write_text(good)
    lines = (run / "steps.jsonl").read_text().splitlines(keepends=True)
    (run / "steps.jsonl").write_text(lines[0] + "{oops\n" + "".join(lines[1:]))
    with pytest.raises(ArtifactError, match=r"steps\.jsonl: line 2 is not valid JSON at column 2"):
        replay_run(run, fresh, out_dir=tmp_path / "replay")
    assert fresh.executed == []


def test_a_recorded_frame_that_is_not_an_image_is_a_differing_step_not_a_crash(tmp_path: Path, fake_env: Any,
                                                                               kimi_reply: Any) -> None:
    run = _fake_run(tmp_path, fake_env, kimi_reply)
    first = sorted((run / "frames").iterdir())[0]
    first.write_text("hello")  # damaged: text where a PNG was
    result = replay_run(run, type(fake_env)(), out_dir=tmp_path / "replay")
    assert not result.matched
    bad = [s for s in result.steps if s.recorded_frame == f"frames/{first.name}"]
    assert bad and bad[0].error is not None and bad[0].error.startswith("the recorded frame is not a readable image")
    assert (tmp_path / "replay" / "report.html").is_file() and (tmp_path / "replay" / "replay.json").is_file()
