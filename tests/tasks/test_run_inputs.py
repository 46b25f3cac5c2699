"""`kimi-agent run` with inputs it cannot use: one `error:` line naming the input, exit code 2, no
--out folder and no worker started (these return in about a second); and the run's end after
Ctrl-C (`run_live`): the stopped tasks are `interrupted`, neither scored nor errored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from kimi_agent.options import BackendName
from kimi_agent.tasks.cli import RUN_BACKENDS
from kimi_agent.tasks.report import results_lines
from kimi_agent.tasks.runner import (
    INTERRUPTED,
    RunSummary,
    TaskResult,
    keep_interrupted,
    read_result,
    run_live,
)
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.suites import CHROME_SUITE

ROOT = Path(__file__).parents[2]
FONT = str(CHROME_SUITE / "suite-font-size.json")


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kimi_agent.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _refused(r: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The run exited 2 with its last stderr line `error: ...` holding `expected`, and no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == "", r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr
    for text in expected:
        assert text in last, last
    return last


def test_an_out_that_is_a_file_or_cannot_be_created_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    _refused(_cli("run", FONT, "--backend", "solutions", "--out", str(afile)), f"--out {afile}", "is a file")
    assert afile.read_text() == "mine"
    _refused(_cli("run", FONT, "--backend", "solutions", "--out", str(afile / "sub")), f"--out {afile / 'sub'}")
    _refused(_cli("run", FONT, "--backend", "solutions", "--out", "/proc/kimi-agent-x"), "--out /proc/kimi-agent-x",
             "cannot be created")


def test_a_vm_run_without_the_bridge_environment_is_refused_before_out_is_made(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", FONT, "--backend", "solutions", "--vm", "http://127.0.0.1:1",
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KIMI_AGENT_OSWORLD_VENV": str(tmp_path / "no-venv")})
    _refused(r, f"no OSWorld bridge environment at {tmp_path / 'no-venv'}")
    assert not out.exists()


def test_a_model_that_cannot_be_loaded_is_refused_before_out_is_touched(tmp_path: Path) -> None:
    """The native model is loaded before any worker starts: an earlier run's results in --out stay."""
    out = tmp_path / "out"
    earlier = _write(out / "suite-font-size" / "result.json", '{"status": "success"}')
    empty = tmp_path / "empty-model"
    empty.mkdir()
    afile = _write(tmp_path / "model-file", "x")
    _refused(_cli("run", FONT, "--model", str(empty), "--out", str(out)), f"{empty} has no config.json")
    _refused(_cli("run", FONT, "--model", str(afile), "--out", str(out)), f"{afile} is a file, not a folder")
    assert earlier.read_text() == '{"status": "success"}'
    assert [p.name for p in out.iterdir()] == ["suite-font-size"]  # no .workers, no results.json
    fresh = tmp_path / "fresh"
    _refused(_cli("run", FONT, "--model", str(empty), "--out", str(fresh)), "has no config.json")
    assert not fresh.exists()


def test_a_task_path_that_does_not_exist_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "nonexistent" / "task.json"
    _refused(_cli("run", FONT, str(missing), "--backend", "solutions", "--out", str(out)), str(missing),
             "no such task file or folder")
    assert not out.exists()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["malformed-file", "folder-of-invalid-files", "meta-ids-missing", "unsupported"])
def test_no_runnable_task_is_one_line_exit_2_and_no_results(case: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if case == "malformed-file":
        args = [str(_write(tmp_path / "bad.json", "{nope"))]
    elif case == "folder-of-invalid-files":
        _write(tmp_path / "tasks" / "a.json", '{"id": "a"}')
        _write(tmp_path / "tasks" / "b.json", "[]")
        args = [str(tmp_path / "tasks")]
    elif case == "meta-ids-missing":
        _write(tmp_path / "evaluation_examples" / "examples" / "chrome" / "other.json", "{}")
        args = ["--test-meta", str(_write(tmp_path / "evaluation_examples" / "test_all.json",
                                          json.dumps({"chrome": ["nothere", "gone"]})))]
    else:  # needs the internet, which this run does not allow
        args = [str(ROOT / "tests" / "fixtures" / "osworld" / "chrome" / "06fe7178-4491-4589-810f-2e2bc9502122.json")]
    r = _cli("run", *args, "--backend", "solutions", "--out", str(out))
    kind = "unsupported" if case == "unsupported" else "invalid"
    _refused(r, "no task can run", kind, "nothing was run")
    skipped = [line for line in r.stderr.splitlines() if line.startswith("skipping ")]
    assert len(skipped) == {"folder-of-invalid-files": 2, "meta-ids-missing": 2}.get(case, 1), r.stderr
    assert not out.exists()


def test_an_unreadable_replies_file_and_an_unknown_backend_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "nonexistent.jsonl"
    _refused(_cli("run", str(CHROME_SUITE), "--backend", "scripted", "--replies", str(missing), "--out", str(out)),
             f"cannot read replies file {missing}")
    _refused(_cli("run", str(CHROME_SUITE), "--backend", "scripted", "--replies",
                  str(_write(tmp_path / "r.jsonl", "{not json\n")), "--out", str(out)), "r.jsonl:1: not JSON")
    _refused(_cli("run", str(CHROME_SUITE), "--backend", "scripted", "--replies",
                  str(_write(tmp_path / "empty.jsonl", "\n")), "--out", str(out)), "empty.jsonl holds no replies")
    last = _refused(_cli("run", str(CHROME_SUITE), "--backend", "nope", "--out", str(out)), "--backend must be")
    for name in RUN_BACKENDS:
        assert repr(name) in last, last
    assert "'solutions'" in last and "'do-nothing'" in last and "not 'nope'" in last
    assert not out.exists()


def test_run_backends_cover_every_model_backend() -> None:
    assert set(get_args(BackendName)) <= set(RUN_BACKENDS)


def test_osworld_inventory_of_a_missing_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    _refused(_cli("osworld", "inventory", str(missing)), str(missing), "no such task file or folder")


# ---------------------------------------------------------------- after Ctrl-C

def _result(task_id: str, status: Any, **kw: Any) -> TaskResult:
    return TaskResult(task_id=task_id, status=status, instruction=f"do {task_id}", domain="chrome", **kw)


def test_ctrl_c_leaves_unfinished_tasks_interrupted_not_scored_nor_errored(tmp_path: Path) -> None:
    """Two tasks scored (a success and an error), then Ctrl-C: the two others are `interrupted`,
    the rate is over the two scored tasks, and no path names a folder that does not exist."""
    (tmp_path / "a").mkdir()
    results = {"a": _result("a", "success", score=1.0, path=str(tmp_path / "a")),
               "b": _result("b", "error", reason="boom", path=str(tmp_path / "b"))}

    def body(view: Any) -> None:
        raise KeyboardInterrupt

    summary = run_live(tmp_path, ["a", "b", "c", "d"], results, False, body,
                       lambda task_id: _result(task_id, "error", reason=INTERRUPTED,
                                               path=str(tmp_path / task_id)))
    by_id = {r.task_id: r for r in summary.results}
    assert summary.interrupted
    assert [r.task_id for r in summary.scored] == ["a", "b"] and summary.success_rate == 0.5
    assert [r.task_id for r in summary.errored] == ["b"]
    assert [(r.task_id, r.status, r.score) for r in summary.unfinished] == [("c", "interrupted", None),
                                                                           ("d", "interrupted", None)]
    assert by_id["a"].path == str(tmp_path / "a")
    assert by_id["b"].path == by_id["c"].path == by_id["d"].path == ""  # no such folders
    data = json.loads((tmp_path / "results.json").read_text())
    assert (data["scored"], data["errored"], data["unfinished"], data["interrupted"]) == (2, 1, 2, True)
    assert data["domains"]["chrome"] == {"rate": 0.5, "scored": 2, "errored": 1, "total": 4}


def test_a_task_running_at_ctrl_c_keeps_its_partial_trajectory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staged = tmp_path / "staging" / "t1"
    run_dir = staged / "20260101-000000_do-it"
    (run_dir / "frames").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    (run_dir / "steps.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"ste')  # a torn last line
    out.mkdir()
    spec = TaskSpec.model_validate({"id": "t1", "instruction": "do it", "evaluator": {"func": "infeasible"}})
    r = keep_interrupted(out, staged, spec, "chrome", worker=1, seconds=3.25)
    assert (r.status, r.reason, r.steps, r.worker, r.score) == ("interrupted", INTERRUPTED, 2, 1, None)
    assert r.trajectory == "t1/20260101-000000_do-it" and (out / r.trajectory / "frames").is_dir()
    assert r.path == str(out / "t1") and not staged.exists()
    on_disk = read_result(out / "t1")
    assert on_disk is not None and on_disk.status == "interrupted"
    nothing = keep_interrupted(out, tmp_path / "staging" / "t2", spec.model_copy(update={"id": "t2"}), "chrome",
                               worker=0, seconds=1.0)  # it had not written anything yet
    assert nothing.status == "interrupted" and nothing.trajectory is None


def test_results_lines_are_whole_and_one_per_task(tmp_path: Path) -> None:
    long = "Open the settings page and " + "then scroll down a little further " * 6 + "and stop.\nPlease."
    summary = RunSummary(tmp_path, [_result("t1", "success", score=1.0, steps=3, seconds=12.34).model_copy(
        update={"instruction": long}), _result("t2", "interrupted")])
    lines = results_lines(summary)
    assert lines[0] == f"t1  success  score 1  3 steps  12.3 s  {' '.join(long.split())}"
    assert lines[1] == "t2  interrupted  score -  0 steps  0.0 s  do t2"
    hostile = RunSummary(tmp_path, [_result("t3", "fail").model_copy(update={"instruction": "Go\x1b]0;PWNED\x07 now"})])
    assert results_lines(hostile) == ["t3  fail  score -  0 steps  0.0 s  Go\\x1b]0;PWNED\\x07 now"]  # no escape


def test_task_folders_of_another_run_in_out_are_named(tmp_path: Path) -> None:
    from kimi_agent.tasks.cli import other_task_folders

    for name in ("t1", "old-a", "old-b"):
        _write(tmp_path / name / "result.json", "{}")
    (tmp_path / ".workers").mkdir()
    (tmp_path / "not-a-task").mkdir()
    summary = RunSummary(tmp_path, [_result("t1", "success", score=1.0)])
    assert other_task_folders(summary) == ["old-a", "old-b"]
