"""Run semantics (real Xvfb + Chromium, scripted replies as the model's test double): a failed setup
step is an `error` with its result written and a non-zero exit code, `--resume` reruns errors, risky
actions are not silently refused, the first screenshot shows a drawn screen, OSWorld's meta layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kimi_agent.tasks.first_frame import is_uniform, wait_until_drawn
from kimi_agent.tasks.suites import CHROME_SUITE
from kimi_agent.tasks.suites.solutions import reply, terminate

needs_desktop = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                   reason="needs Xvfb and Chromium")
ROOT = Path(__file__).parents[2]
CTRL_W = reply("Close the tab.", "Press ctrl+w.", "pyautogui.hotkey('ctrl', 'w')")


def _task(task_id: str, config: list[dict[str, object]]) -> dict[str, object]:
    return {"id": task_id, "instruction": "Open a tab.", "config": config,
            "evaluator": {"func": "exact_match", "result": {"type": "rule", "rules": {"x": 1}},
                          "expected": {"type": "rule", "rules": {"expected": {"x": 1}}}}}


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", *args, "--no-progress", "--max-steps", "3"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _replies(path: Path, *texts: str) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in texts))
    return path


def _results(out: Path) -> dict[str, dict]:
    return {r["task_id"]: r for r in json.loads((out / "results.json").read_text())["results"]}


@needs_desktop
def test_failed_setup_step_is_an_error_written_to_disk_and_resume_reruns_it(tmp_path: Path) -> None:
    src = tmp_path / "page.html"
    page = {"type": "download", "parameters": {"files": [{"url": src.as_uri(), "path": "/home/user/page.html"}]}}
    task = tmp_path / "tasks" / "t.json"
    task.parent.mkdir()
    task.write_text(json.dumps(_task("setup-fails", [page])))
    out = tmp_path / "out"
    replies = _replies(tmp_path / "r.jsonl", terminate("success"))
    # --no-sandbox: the file:// source is a file of this machine, which a sandboxed worker cannot see
    first = _cli(str(task), "--backend", "scripted", "--replies", str(replies), "--out", str(out), "--no-sandbox")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "1 task errored (not scored); rerun them with: kimi-agent run " in first.stderr
    assert first.stderr.rstrip().endswith(" --no-sandbox --no-progress --max-steps 3 --resume"), first.stderr
    result = json.loads((out / "setup-fails" / "result.json").read_text())
    assert result["status"] == "error" and result["reason"].startswith("setup failed: config[0] download")
    assert str(src) in result["reason"]
    assert (out / "setup-fails" / "result.txt").read_text() == "error\n"
    assert _results(out)["setup-fails"]["status"] == "error"
    src.write_text("<html><body>hello</body></html>")  # the cause is gone: --resume reruns the errored task
    second = _cli(str(task), "--backend", "scripted", "--replies", str(replies), "--out", str(out), "--resume",
                  "--no-sandbox")
    assert second.returncode == 0, second.stdout + second.stderr
    result = json.loads((out / "setup-fails" / "result.json").read_text())
    assert (result["status"], result["score"]) == ("success", 1.0)
    assert (out / "setup-fails" / "result.txt").read_text() == "1\n"


@needs_desktop
def test_risky_actions_run_as_in_osworld_and_refusals_are_recorded_with_confirm(tmp_path: Path) -> None:
    task = CHROME_SUITE / "suite-web-navigation.json"
    replies = _replies(tmp_path / "r.jsonl", CTRL_W, terminate("success"))
    out = tmp_path / "osworld"
    run = _cli(str(task), "--backend", "scripted", "--replies", str(replies), "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    r = _results(out)["suite-web-navigation"]
    assert r["refusals"] == [] and r["status"] == "fail"  # the tab was closed: scored, never refused
    steps = [json.loads(line) for line in (out / r["trajectory"] / "steps.jsonl").read_text().splitlines()]
    assert steps[0]["actions"][0]["ok"] is True and steps[0]["actions"][0]["action"]["keys"] == ["ctrl", "w"]
    # the first screenshot was taken once the browser had drawn
    frame = next((out / r["trajectory"] / "frames").glob("*"))
    assert not is_uniform(np.asarray(Image.open(frame).convert("RGB"))[::8, ::8])
    assert r["first_frame"]["drawn"] is True

    out = tmp_path / "confirm"
    run = _cli(str(task), "--backend", "scripted", "--replies", str(replies), "--out", str(out), "--confirm")
    r = _results(out)["suite-web-navigation"]
    assert [(x["step"], x["risk"]) for x in r["refusals"]] == [(1, r["refusals"][0]["risk"])]
    assert "needs a confirmation" in r["refusals"][0]["reason"]
    assert r["reason"].startswith("1 action(s) refused; ")


@needs_desktop
def test_osworld_meta_file_layout_and_per_domain_rates(tmp_path: Path) -> None:
    root = tmp_path / "evaluation_examples"
    for domain, name in (("chrome", "suite-web-navigation"), ("os", "suite-infeasible-language")):
        (root / "examples" / domain).mkdir(parents=True)
        shutil.copy(CHROME_SUITE / f"{name}.json", root / "examples" / domain / f"{name}.json")
    (root / "test_all.json").write_text(json.dumps({"chrome": ["suite-web-navigation"],
                                                    "os": ["suite-infeasible-language", "missing-task"]}))
    out = tmp_path / "out"
    run = _cli("--test-meta", str(root / "test_all.json"), "--domain", "os", "--backend", "solutions",
               "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((out / "results.json").read_text())
    assert {r["task_id"]: (r["domain"], r["status"]) for r in data["results"]} == {
        "suite-infeasible-language": ("os", "success"), "missing-task": ("os", "invalid")}
    assert data["domains"] == {"os": {"rate": 1.0, "scored": 1, "errored": 0, "total": 2}}
    assert "<h2>Per domain</h2>" in (out / "index.html").read_text()
    assert "os: 100% over 1 scored" in run.stdout
    # stdout is a pipe: plain lines, one per task, with the whole instruction (no table, nothing cut)
    instruction = json.loads((CHROME_SUITE / "suite-infeasible-language.json").read_text())["instruction"]
    assert len(instruction) > 60
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("suite-infeasible-language "))
    assert line.startswith("suite-infeasible-language  success  score 1  1 steps  ")
    assert line.endswith(f" s  {instruction}"), line
    assert "missing-task  invalid  score -  0 steps  0.0 s  " in run.stdout
    assert not any(ch in run.stdout for ch in "┃│━─┏┗"), run.stdout
    bad = _cli("--test-meta", str(root / "test_all.json"), "--domain", "gimp", "--out", str(out))
    assert bad.returncode == 2 and "no domain 'gimp'" in bad.stderr


@needs_desktop
def test_a_browser_that_never_answers_is_an_error_within_start_timeout(tmp_path: Path) -> None:
    # Test double: a "Chromium" that starts and never opens its debugging port (a hung or very slow
    # browser). --no-sandbox: KIMI_AGENT_CHROMIUM names a file of this machine.
    hung = tmp_path / "hung-chromium"
    hung.write_text("#!/bin/sh\nexec sleep 300\n")
    hung.chmod(0o755)
    task = CHROME_SUITE / "suite-bookmark.json"
    out = tmp_path / "out"
    replies = _replies(tmp_path / "r.jsonl", terminate("success"))
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", str(task), "--backend", "scripted", "--replies",
           str(replies), "--out", str(out), "--no-sandbox", "--no-progress", "--start-timeout", "4"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "KIMI_AGENT_CHROMIUM": str(hung)})
    assert run.returncode == 1, run.stdout + run.stderr
    result = json.loads((out / "suite-bookmark" / "result.json").read_text())
    assert result["status"] == "error"
    assert "did not answer within 4 s" in result["reason"], result["reason"]
    assert "--start-timeout" in result["reason"]
    assert result["seconds"] < 60  # the bound, not the task's 900 s budget, ended the wait
    ps = subprocess.run(["pgrep", "-f", str(hung)], capture_output=True, text=True)
    assert ps.stdout == "", "the hung browser was left running"
    bad = _cli(str(task), "--start-timeout", "0", "--out", str(out))
    assert bad.returncode == 2 and "--start-timeout" in bad.stderr

def test_wait_until_drawn_needs_a_non_uniform_stable_frame() -> None:
    blank = np.zeros((4, 4, 3), np.uint8)
    drawn = blank.copy()
    drawn[1, 1] = 255
    frames = iter([blank, blank, blank, drawn, drawn, drawn, drawn])
    got = wait_until_drawn(lambda: next(frames), cap_s=60, sleep=lambda s: None)
    assert got.drawn is True
    assert wait_until_drawn(lambda: blank, cap_s=0.05, interval_s=0.01).drawn is False
