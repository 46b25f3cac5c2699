"""The runner: parallel workers that do not interfere, crash handling, SIGKILL + --resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks.suites import CHROME_SUITE
from kimi_agent.tasks.suites.solutions import CrashingBackend, solution_backend

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                reason="needs Xvfb and Chromium")

CHROME = Path(__file__).parents[1] / "fixtures" / "osworld" / "chrome"
ROOT = Path(__file__).parents[2]


def _results(out: Path) -> dict[str, dict]:
    return {r["task_id"]: r for r in json.loads((out / "results.json").read_text())["results"]}


def test_two_workers_in_parallel_do_not_interfere(tmp_path: Path) -> None:
    tasks = [CHROME_SUITE / "suite-font-size.json", CHROME_SUITE / "suite-web-navigation.json",
             CHROME / "06fe7178-4491-4589-810f-2e2bc9502122.json"]
    summary = run_tasks(tasks, solution_backend, RunSettings(workers=2, max_steps=6, out_dir=tmp_path), progress=False)
    by_id = {r.task_id: r for r in summary.results}
    font, nav = by_id["suite-font-size"], by_id["suite-web-navigation"]
    assert (font.status, font.score, nav.status, nav.score) == ("success", 1.0, "success", 1.0)
    assert by_id["06fe7178-4491-4589-810f-2e2bc9502122"].status == "unsupported"
    assert {font.worker, nav.worker} == {0, 1}
    assert font.host and nav.host
    # each worker is its own sandbox: the same display number and /home/user inside, different worlds
    assert font.host["sandbox"] == nav.host["sandbox"] == "bwrap"
    assert font.host["worker_dir"] != nav.host["worker_dir"]
    assert font.host["home"] == nav.host["home"] == "/home/user"
    # each finished episode's result.json sits next to its trajectory, and the run outputs exist
    for r in (font, nav):
        on_disk = json.loads((tmp_path / r.task_id / "result.json").read_text())
        assert on_disk["score"] == 1.0 and r.trajectory is not None
        assert (tmp_path / r.trajectory / "run.json").exists()
    assert _results(tmp_path)["suite-web-navigation"]["score"] == 1.0
    assert "suite-font-size" in (tmp_path / "results.csv").read_text()
    assert f'href="{nav.trajectory}/' in (tmp_path / "index.html").read_text()


def test_browser_crash_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    tasks = [CHROME_SUITE / "suite-do-not-track.json", CHROME_SUITE / "suite-web-navigation.json"]
    summary = run_tasks(tasks, CrashingBackend(("suite-do-not-track",)),
                        RunSettings(workers=1, max_steps=4, out_dir=tmp_path), progress=False)
    crashed, after = summary.results
    assert crashed.status == "error" and "Chromium exited during the episode" in crashed.reason
    assert crashed.score is None
    assert (after.status, after.score) == ("success", 1.0)


def test_sigkill_then_resume_loses_nothing_and_reruns_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tasks = [str(CHROME / "3720f614-37fd-4d04-8a6b-76f54f8c222d.json"),
             str(CHROME_SUITE / "suite-infeasible-language.json"),
             str(CHROME_SUITE / "suite-web-navigation.json"),
             str(CHROME_SUITE / "suite-font-size.json")]
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", *tasks, "--backend", "solutions",
           "--workers", "1", "--max-steps", "6", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*/result.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert finished, "the runner finished no task before it was killed"
    assert len(finished) < len(tasks), "the runner finished everything before it was killed"
    time.sleep(1.0)  # the killed runner's worker stops on its parent-death signal
    rerun = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    results = _results(out)
    assert len(results) == len(tasks)
    assert all(r["status"] == "success" for r in results.values()), results
    for task_id, mtime in finished.items():  # finished episodes were not rerun
        assert (out / task_id / "result.json").stat().st_mtime_ns == mtime
