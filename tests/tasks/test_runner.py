"""The runner: parallel workers that do not interfere, crash handling, SIGKILL + --resume."""

from __future__ import annotations

import json
import os
import shlex
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
    assert font.host["network"] == nav.host["network"] == "loopback only"  # no --allow-network
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


def test_ctrl_c_marks_unfinished_tasks_interrupted_keeps_partial_folders_and_resume_runs_them(
        tmp_path: Path) -> None:
    """SIGINT while the second of three tasks waits for its model (a scripted reply that streams
    for 4 s): exit 130; the first task stays scored, the second is `interrupted` with the folder its
    worker had written, the third `interrupted` "not started" with no folder; the rate is over the
    one scored task. `--resume` then runs the two others and leaves the first alone."""
    from kimi_agent.tasks.runner import INTERRUPTED, NOT_STARTED
    from kimi_agent.tasks.suites.solutions import terminate

    out = tmp_path / "out"
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps({"text": terminate("failure"), "stream_s": 4}) + "\n")
    first, running, queued = "suite-infeasible-language", "suite-web-navigation", "suite-font-size"
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", *(str(CHROME_SUITE / f"{t}.json") for t in
                                                          (first, running, queued)),
           "--backend", "scripted", "--replies", str(replies), "--workers", "1", "--max-steps", "2",
           "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(f".workers/*/tasks/{running}/*/run.json")):
        time.sleep(0.1)
    assert (out / first / "result.json").is_file(), "the first task was not finished when the second started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    data = json.loads((out / "results.json").read_text())
    assert (data["interrupted"], data["scored"], data["errored"], data["unfinished"]) == (True, 1, 0, 2)
    assert data["success_rate"] == 1.0
    by_id = _results(out)
    assert by_id[first]["status"] == "success"
    kept = by_id[running]
    assert (kept["status"], kept["reason"], kept["score"]) == ("interrupted", INTERRUPTED, None)
    assert Path(kept["path"]) == out / running and (out / kept["trajectory"] / "run.json").is_file()
    assert json.loads((out / running / "result.json").read_text())["status"] == "interrupted"
    assert (by_id[queued]["status"], by_id[queued]["reason"], by_id[queued]["path"]) == ("interrupted",
                                                                                         NOT_STARTED, "")
    assert not (out / queued).exists()
    lines = stdout.splitlines()
    assert any(line.startswith(f"{running}  interrupted  score -") for line in lines), stdout
    assert "chrome: 100% over 1 scored (0 errored, 2 interrupted)" in stdout
    assert "100% success over 1 scored tasks" in stdout
    assert "interrupted: the results above are partial (2 tasks not finished" in stderr
    resume_line = stderr.strip().splitlines()[-1]  # the command that finishes the run, ready to paste
    assert resume_line.endswith(shlex.join(["kimi-agent", *cmd[3:], "--resume"])), resume_line
    mtime = (out / first / "result.json").stat().st_mtime_ns
    rerun = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    by_id = _results(out)
    assert {t: by_id[t]["status"] for t in (running, queued)} == {running: "fail", queued: "fail"}
    assert (out / first / "result.json").stat().st_mtime_ns == mtime  # the scored task was not rerun


def test_a_home_folder_that_a_process_still_fills_is_removed_once_it_stops(tmp_path: Path) -> None:
    """A desktop process (openbox filling ~/.cache/fontconfig on a slow machine) adds files while
    the host resets its home: the removal tries again instead of failing the task."""
    import threading
    import time

    from kimi_agent.tasks.host import _remove_tree

    tree = tmp_path / "home" / ".cache" / "fontconfig"
    tree.mkdir(parents=True)
    stop = time.monotonic() + 0.5
    written = []

    def writer() -> None:
        while time.monotonic() < stop:
            try:
                tree.mkdir(parents=True, exist_ok=True)
                (tree / f"cache-{len(written)}").write_bytes(b"x" * 64)
                written.append(1)
            except OSError:
                pass  # the folder was removed under us: the next round makes it again
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    _remove_tree(tmp_path / "home", attempts=10)
    t.join()
    _remove_tree(tmp_path / "home")  # whatever the writer made after the first removal
    assert not (tmp_path / "home").exists() and len(written) > 10
