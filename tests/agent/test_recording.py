"""Recordings: real ffmpeg (H.264 checked with ffprobe), the Pillow WebP fallback, the marks drawn,
and OSWorld's files placed in a task folder. Episodes run on the in-memory FakeEnv (a 1920x1080
screen) with the scripted backend (a test double for the model)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kimi_agent import Agent, AgentSettings
from kimi_agent.artifacts import write_episode_artifacts
from kimi_agent.errors import ArtifactError
from kimi_agent.markers import Mark, run_marks, step_marks
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.recording import (
    OK_COLOUR,
    REFUSED_COLOUR,
    RecordingFrame,
    output_size,
    recording_frames,
    render_frame,
    write_recording,
)
from kimi_agent.trajectory import read_steps

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg (Debian package ffmpeg)")


def _episode(tmp_path: Path, fake_env: Any, kimi_reply: Any, *, done: bool = False) -> Path:
    """Three pointer steps (click, drag, scroll); then the step budget ends it, or a done step."""
    replies = [kimi_reply("a", "click", "pyautogui.click(x=0.25, y=0.5)"),
               kimi_reply("b", "drag", "pyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(0.6, 0.7, duration=0.1)"),
               kimi_reply("c", "scroll", "pyautogui.scroll(-5, x=0.5, y=0.5)")]
    if done:
        replies.append(kimi_reply("d", "done", "computer.terminate(status='success')"))
    settings = AgentSettings(out_dir=tmp_path / "runs", max_steps=len(replies))
    return Agent(ScriptedBackend(replies), fake_env, settings).run_episode("draw things").run_dir


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)["streams"][0]


@needs_ffmpeg
def test_mp4_has_one_frame_per_step_plus_the_final_screen(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply)
    path = write_recording(run)
    assert path == run / "recording.mp4"
    info = _probe(path)
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (1280, 720)  # 1920x1080 scaled down, even
    assert int(info["nb_read_frames"]) == 3 + 1  # three steps, then the screen after the last action
    frames = recording_frames(run)
    assert [f.caption for f in frames] == ["step 1: click", "step 2: drag", "step 3: scroll down 5", "final screen"]
    assert frames[-1].path.name == "step_0003_after.png"


@needs_ffmpeg
def test_a_done_step_adds_no_extra_frame(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply, done=True)
    assert int(_probe(write_recording(run))["nb_read_frames"]) == 4  # its pre-action frame is the final screen
    assert recording_frames(run)[-1].caption == "step 4: done"


def test_webp_when_ffmpeg_is_missing(tmp_path: Path, fake_env: Any, kimi_reply: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ffmpeg on PATH...
    monkeypatch.setattr("kimi_agent.recording.os.access", lambda *_: False)  # ...nor in /usr/bin
    path = write_recording(run)
    assert path == run / "recording.webp" and not (run / "recording.mp4").exists()
    with Image.open(path) as im:
        assert im.format == "WEBP" and im.n_frames == 4 and im.size == (1280, 720)
    with pytest.raises(ArtifactError, match="needs ffmpeg"):
        write_recording(run, encoder="mp4")


@needs_ffmpeg
def test_a_failing_ffmpeg_is_a_typed_error_and_leaves_no_file(tmp_path: Path, fake_env: Any, kimi_reply: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply)
    monkeypatch.setattr("kimi_agent.recording.find_ffmpeg", lambda: shutil.which("false"))
    with pytest.raises(ArtifactError, match="ffmpeg exited with 1"):
        write_recording(run)
    assert not list(run.glob("*recording*"))
    written = write_episode_artifacts(run)  # the other files are still written; the failure is logged
    assert set(written) == {"report.html", "traj.jsonl"}


@pytest.mark.parametrize("encoder", ["mp4", "webp"])
def test_a_frame_that_is_not_an_image_is_named_and_no_recording_is_left(tmp_path: Path, fake_env: Any,
                                                                       kimi_reply: Any, encoder: str) -> None:
    if encoder == "mp4" and shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    run = _episode(tmp_path, fake_env, kimi_reply)
    bad = recording_frames(run)[1].path  # the screen the second step acted on
    bad.write_text("hello")
    with pytest.raises(ArtifactError) as err:
        write_recording(run, encoder=encoder)  # type: ignore[arg-type]
    assert str(err.value).startswith(f"{bad} is not a readable image (") and "ffmpeg" not in str(err.value)
    assert not list(run.glob("*recording*"))


def test_marks_for_clicks_drag_paths_and_scrolls(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply)
    click, drag, scroll = (m[0] for m in run_marks(read_steps(run)))
    assert click == Mark("click", ((0.25, 0.5),), True, "click")
    assert drag.kind == "drag" and drag.points == ((0.1, 0.1), (0.6, 0.7))
    assert scroll.kind == "scroll" and scroll.direction == (0.0, 1.0) and scroll.points == ((0.5, 0.5),)
    # no point of its own: from where the pointer last was; a refused action is marked, not ok
    step = {"actions": [{"action": {"type": "drag", "start": None, "end": {"x": 0.9, "y": 0.9}}, "norm_xy": [[0.9, 0.9]]},
                        {"action": {"type": "scroll", "direction": "left", "amount": 3}, "norm_xy": []},
                        {"action": {"type": "click", "button": "right"}, "norm_xy": [[0.3, 0.3]], "ok": False}]}
    d, s, c = step_marks(step, (0.2, 0.2))
    assert d.points == ((0.2, 0.2), (0.9, 0.9)) and s.points == ((0.9, 0.9),) and s.direction == (-1.0, 0.0)
    assert (c.ok, c.label) == (False, "right click")


def test_marks_are_drawn_on_the_frames(tmp_path: Path) -> None:
    Image.new("RGB", (1920, 1080), (255, 255, 255)).save(tmp_path / "f.png")
    size = output_size(1920, 1080)
    marks = (Mark("click", ((0.25, 0.5),), True), Mark("click", ((0.75, 0.5),), False),
             Mark("scroll", ((0.5, 0.25),), True, direction=(0.0, 1.0)))
    image = render_frame(RecordingFrame(tmp_path / "f.png", marks, "step 1"), size)
    assert image.getpixel((320, 360)) == OK_COLOUR  # the dot at the click point
    assert image.getpixel((960, 360)) == REFUSED_COLOUR
    assert image.getpixel((640, 180 + 40)) == OK_COLOUR  # the scroll arrow's shaft, pointing down
    assert image.getpixel((640, 180 - 40)) == (255, 255, 255)
    assert image.getpixel((5, 5)) == (0, 0, 0)  # the caption band


def test_output_size_is_even_and_at_most_1280_wide() -> None:
    assert output_size(1920, 1080) == (1280, 720)
    assert output_size(1366, 769) == (1280, 720)
    assert output_size(801, 601) == (800, 600)


@needs_ffmpeg
def test_task_folder_gets_osworlds_files(tmp_path: Path, fake_env: Any, kimi_reply: Any) -> None:
    run = _episode(tmp_path, fake_env, kimi_reply)
    task_dir = run.parent
    written = write_episode_artifacts(run, task_dir=task_dir)
    assert set(written) == {"report.html", "traj.jsonl", "recording.mp4"}
    assert (task_dir / "recording.mp4").read_bytes() == (run / "recording.mp4").read_bytes()
    lines = [json.loads(x) for x in (task_dir / "traj.jsonl").read_text().splitlines()]
    assert [x["step_num"] for x in lines] == [1, 2, 3]
    for line in lines:  # OSWorld reads the screenshots relative to the task folder
        assert (task_dir / line["screenshot_file"]).is_file()
    inner = [json.loads(x) for x in (run / "traj.jsonl").read_text().splitlines()]
    assert inner[0]["screenshot_file"] == "frames/step_0001_after.png"
