"""The episode's live view in a real terminal (tmux), driven by the CLI with the scripted backend
on a real headless Chromium: phases with a spinner, the model's text as it streams, the finished
steps, and the confirmation question only after that step's thought and action are on screen.
`KIMI_AGENT_LIVE_VIEW_DUMP=PATH` saves the captured screens (docs/live-view.txt is one such dump).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from support.tmux import HAS_TMUX, TmuxPane

pytestmark = pytest.mark.skipif(not HAS_TMUX or shutil.which("chromium") is None, reason="needs tmux and Chromium")


def kimi(thought: str, action: str, code: str) -> str:
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


def _pane(tmp_path: Path, *args: str) -> TmuxPane:
    cli = f"{sys.executable} -m kimi_agent.cli " + " ".join(f"'{a}'" for a in args)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm-256color", "LANG": "C.UTF-8",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return TmuxPane(cli, cwd=tmp_path, env=env, width=120, height=40)


def test_live_view_streams_phases_and_asks_after_the_step_is_shown(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    lines = [{"text": kimi("An empty page. I click its middle to focus it.", "Click the middle of the page.",
                           "pyautogui.click(x=0.5, y=0.5)"), "stream_s": 4.0},
             {"text": kimi("Let the page finish whatever it does.", "Wait a moment.", "computer.wait(seconds=3)")},
             {"text": kimi("Now close this tab.", "Press ctrl+w to close the tab.", "pyautogui.hotkey('ctrl', 'w')")},
             {"text": kimi("Closing was refused; the page stays.", "Finish.",
                           "computer.terminate(status='success', answer='kept')")}]
    replies.write_text("".join(json.dumps(line) + "\n" for line in lines))
    screens: list[str] = []
    try:
        _run(tmp_path, replies, screens)
    finally:
        dump = os.environ.get("KIMI_AGENT_LIVE_VIEW_DUMP")
        if dump:
            Path(dump).write_text("\n\n----- next capture -----\n\n".join(screens) + "\n", encoding="utf-8")


def _run(tmp_path: Path, replies: Path, screens: list[str]) -> None:
    with _pane(tmp_path, "--backend", "scripted", "--replies", str(replies), "--env", "browser",
               "--url", "about:blank", "--out", "out", "tidy the browser") as pane:
        screens.append(pane.wait_for("thinking", timeout_s=90))  # the model's text streams under the spinner
        streaming = pane.wait_for("│ ## Thought", timeout_s=30)
        screens.append(streaming)
        assert "Step 1 thinking" in streaming
        screens.append(pane.wait_for("waiting (3 s)", timeout_s=60))  # computer.wait(): the live line says so
        asked = pane.wait_for("Allow it?", timeout_s=60)
        screens.append(asked)
        # the question comes after the step's thought and action, and the live line is gone meanwhile
        assert asked.index("Step 3") < asked.index("thought: Now close this tab.") < asked.index(
            "action: Press ctrl+w to close the tab.") < asked.index("The agent wants to: press ctrl+w")
        assert "Step 3 thinking" not in asked and "Step 3 acting" not in asked
        pane.send("n", "Enter")
        rc = pane.exit_code(timeout_s=90)
        final = pane.screen()
        screens.append(final)
    assert rc == 0, final
    assert "success after 3 steps" in final  # the refusal went back to the model within step 3
    assert "click at (960, 540) px" in final  # the finished step: its point in the browser's pixels
    assert "step 3: rejected, retrying: The user declined: press ctrl+w (close a window or tab)." in final
    assert "hotkey FAILED: The user declined" in final
    assert "thinking" not in final.split("success after")[1]  # the live line is cleared at the end


def test_ctrl_c_in_a_terminal_exits_130_with_the_trajectory_written(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps({"text": kimi("Give it time.", "Wait.", "computer.wait(seconds=60)")}) + "\n")
    with _pane(tmp_path, "--backend", "scripted", "--replies", str(replies), "--env", "browser",
               "--url", "about:blank", "--out", "out", "wait a minute") as pane:
        pane.wait_for("waiting (60 s)", timeout_s=90)
        pane.send("C-c")
        rc = pane.exit_code(timeout_s=60)
        final = pane.screen()
    assert rc == 130, final
    assert "user_stopped after 1 steps" in final and "Traceback" not in final
    (run_dir,) = (tmp_path / "out").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "user_stopped" and (run_dir / "report.html").is_file()


def test_the_spinner_turns_between_redraws() -> None:
    import io
    import time

    from rich.console import Console

    from kimi_agent.progress import _Current

    current = _Current(lambda text: text)
    current.set(1, "observing")
    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    frames = set()
    for _ in range(4):  # the "dots" spinner shows a new frame every 80 ms
        console.print(current)
        frames.add(console.file.getvalue().splitlines()[-1][0])  # type: ignore[attr-defined]
        time.sleep(0.1)
    assert len(frames) >= 3, frames


def test_a_step_cut_short_says_where_it_was_interrupted_not_that_the_reply_was_unusable() -> None:
    import io

    from rich.console import Console

    from kimi_agent.progress import ConsoleListener
    from kimi_agent.trajectory import StepRecord

    out = io.StringIO()
    listener = ConsoleListener(Console(file=out, width=200, force_terminal=False))
    listener.on_step(StepRecord(step=2, started_at=0.0, obs_before={}, error="interrupted in generate after 0.3 s",
                                durations_ms={"model": 300.0, "interrupted": 300.0}))
    listener.on_step(StepRecord(step=3, started_at=0.0, obs_before={}, error="the reply has no ## Code section"))
    headers = [line for line in out.getvalue().splitlines() if line.startswith("Step")]
    assert headers == ["Step 2 (interrupted in generate after 0.3 s)", "Step 3 (no usable reply)"], out.getvalue()


def test_control_characters_from_a_model_or_a_task_file_are_shown_escaped() -> None:
    import io

    from rich.console import Console

    from kimi_agent.progress import ConsoleListener, printable

    assert printable("a\x1b]0;PWNED\x07b\x9bc") == "a\\x1b]0;PWNED\\x07b\\x9bc"
    out = io.StringIO()
    ConsoleListener(Console(file=out, width=200, force_terminal=False)).on_reply(
        1, "Set the title\x1b]0;PWNED\x07.", "Click\x1b[2J OK.")
    assert "\x1b" not in out.getvalue() and "\\x1b]0;PWNED\\x07" in out.getvalue(), out.getvalue()
