"""`kimi-agent run` in a real terminal (tmux): the live view shows each running task with its step
and phase under the done / running / queued counts, and the results table at the end."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from support.tmux import HAS_TMUX, TmuxPane

from kimi_agent.tasks.cgroups import probe as cgroup_probe

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tasks" / "suites" / "chrome"

pytestmark = pytest.mark.skipif(not HAS_TMUX or shutil.which("Xvfb") is None, reason="needs tmux, Xvfb, Chromium")


def test_run_shows_each_task_step_and_phase_live(tmp_path: Path) -> None:
    tasks = [str(SUITE / "suite-web-navigation.json"), str(SUITE / "suite-do-not-track.json")]
    cmd = (f"{sys.executable} -m kimi_agent.cli run {' '.join(tasks)} --backend solutions --workers 1 "
           f"--max-steps 6 --out {tmp_path / 'out'} --no-sandbox")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm-256color", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with TmuxPane(cmd, cwd=tmp_path, env=env, width=160, height=40) as pane:
        live = pane.wait_for("1 running · 1 queued", timeout_s=180)
        assert "tasks 0/2 done" in live and "success 0/0 scored" in live
        header = next(line for line in live.splitlines() if "worker" in line and "phase" in line)
        assert header.split() == ["worker", "task", "step", "phase", "last", "step", "time", "memory"]
        row = _task_row_with_a_phase(pane)
        assert "suite-" in row
        if cgroup_probe() is None:  # the worker's memory now, from its cgroup
            assert re.search(r" \d+ MiB$", row.rstrip()), row
        screen = pane.wait_for("tasks 1/2 done · 1 running · 0 queued", timeout_s=240)
        assert "success 1/1 scored (100%)" in screen and "suite-web-navigation" in screen
        rows = [line for line in screen.splitlines() if "suite-do-not-track" in line]
        assert rows, screen
        rc = pane.exit_code(timeout_s=300)
        final = pane.screen()
    assert rc == 0, final
    assert "success over 2 scored tasks" in final and "1 running" not in final


PHASES = ("observing", "thinking", "acting", "waiting", "settling")


def _task_row_with_a_phase(pane: TmuxPane, timeout_s: float = 240.0) -> str:
    """The first screen line showing a running task in one of the loop's phases."""
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = pane.screen()
        for line in screen.splitlines():
            if "suite-" in line and any(f" {p}" in line for p in PHASES):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no task row with a phase; the screen was:\n{screen}")


def test_ctrl_c_ends_a_run_with_its_partial_results(tmp_path: Path) -> None:
    """Ctrl-C in the terminal once the first of two tasks is scored: exit 130, one line saying the
    results are partial, the scored task kept, the other an `error` "interrupted", and results.json,
    results.csv and index.html written, with no traceback from the sandboxed workers."""
    import json

    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap (the runner's default sandbox)")
    tasks = [str(SUITE / "suite-web-navigation.json"), str(SUITE / "suite-do-not-track.json")]
    out = tmp_path / "out"
    cmd = (f"{sys.executable} -m kimi_agent.cli run {' '.join(tasks)} --backend solutions --workers 1 "
           f"--max-steps 6 --out {out}")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm-256color", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with TmuxPane(cmd, cwd=tmp_path, env=env, width=160, height=40) as pane:
        pane.wait_for("tasks 1/2 done", timeout_s=240)
        pane.send("C-c")
        rc = pane.exit_code(timeout_s=120)
        final = pane.screen()
    assert rc == 130, final
    assert "interrupted: the results above are partial" in final and "Traceback" not in final
    data = json.loads((out / "results.json").read_text())
    assert data["interrupted"] is True
    by_id = {r["task_id"]: r for r in data["results"]}
    assert by_id["suite-web-navigation"]["status"] == "success"
    assert by_id["suite-do-not-track"]["status"] == "interrupted"
    assert by_id["suite-do-not-track"]["reason"] == "interrupted (Ctrl-C) before it finished"
    assert (out / "results.csv").is_file() and (out / "index.html").is_file()
