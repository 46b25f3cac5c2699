"""The task run's pages: index.html (run metadata, per-domain totals, a table that really sorts
and filters in Chromium) and each task's report.html (score and the evaluator's inputs); an
infeasible task is explained, not "success" next to "the model reported failure"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.tasks.report import write_outputs
from kimi_agent.tasks.run_pages import index_html, is_infeasible, outcome_text, task_page_html
from kimi_agent.tasks.runner import RunSummary, TaskResult, write_result

INFEASIBLE_EVAL = {"score": 1.0, "note": None,
                   "metrics": [{"func": "infeasible", "score": 1.0, "result": "failure", "expected": None, "note": None}]}
URL_EVAL = {"score": 0.0, "note": None,
            "metrics": [{"func": "is_expected_active_tab", "score": 0.0, "result": "http://127.0.0.1:8000/a.html",
                         "expected": {"type": "url", "url": "http://127.0.0.1:8000/pricing.html"}, "note": None}]}


def _run(out: Path) -> RunSummary:
    """Four finished tasks in two domains, each with a task folder, result.json and a run.json."""
    results = [
        TaskResult(task_id="infeasible-klingon", domain="chrome", instruction="Switch to Klingon", status="success",
                   score=1.0, steps=1, seconds=12.5, episode_status="failure", reason="the model reported failure",
                   evaluation=INFEASIBLE_EVAL),
        TaskResult(task_id="open-pricing", domain="chrome", instruction="Open the pricing page", status="fail",
                   score=0.0, steps=4, seconds=40.0, episode_status="success", reason="the model reported success",
                   evaluation=URL_EVAL),
        TaskResult(task_id="list-files", domain="os", instruction="List the files", status="success", score=1.0,
                   steps=2, seconds=3.0, episode_status="success", reason="the model reported success",
                   evaluation={"score": 1.0, "metrics": [{"func": "exact_match", "score": 1.0, "result": "a b",
                                                          "expected": "a b", "note": None}], "note": None}),
        TaskResult(task_id="crashed", domain="os", instruction="Crash", status="error", steps=1, seconds=7.0,
                   reason="Chromium exited during the episode (exit code 1)"),
    ]
    for i, r in enumerate(results):
        run_dir = out / r.task_id / f"20260101-00000{i}_run"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({
            "backend": "openai", "model": "moonshotai/Kimi-VL-A3B-Instruct",
            "started_at": f"2026-01-01T00:00:0{i}", "settings": {"max_steps": 15}}))
        (run_dir / "report.html").write_text("<html></html>")
        r.trajectory = f"{r.task_id}/{run_dir.name}"
        write_result(out, r)
    return RunSummary(out_dir=out, results=results)


def test_index_shows_run_metadata_domain_totals_and_reports(tmp_path: Path) -> None:
    summary = _run(tmp_path)
    page = index_html(summary)
    for cell in ("<td>model</td><td>moonshotai/Kimi-VL-A3B-Instruct</td>", "<td>backend</td><td>openai</td>",
                 "<td>date</td><td>2026-01-01 00:00:00</td>", "<td>step budget</td><td>15 steps per task</td>"):
        assert cell in page
    # per domain: rate, succeeded, scored, errored, not run, tasks
    assert "<tr><td>chrome</td><td>50.0%</td><td>1</td><td>2</td><td>0</td><td>0</td><td>2</td></tr>" in page
    assert "<tr><td>os</td><td>50.0%</td><td>1</td><td>2</td><td>1</td><td>0</td><td>2</td></tr>" in page
    assert "<tr><th>all</th><th>50.0%</th><th>2</th><th>4</th><th>1</th><th>0</th><th>4</th></tr>" in page
    assert 'href="open-pricing/report.html">task</a>' in page
    assert f'href="{summary.results[1].trajectory}/report.html">episode</a>' in page
    assert "<script>" in page and "src=" not in page and "<link" not in page  # no external assets


def test_infeasible_tasks_are_explained(tmp_path: Path) -> None:
    summary = _run(tmp_path)
    infeasible, pricing = summary.results[:2]
    assert is_infeasible(infeasible) and not is_infeasible(pricing)
    assert outcome_text(infeasible) == ("infeasible task: the model reported that it cannot be done (FAIL), "
                                        "the right answer")
    missed = infeasible.model_copy(update={"status": "fail", "score": 0.0, "reason": "the model reported success"})
    assert outcome_text(missed).startswith("infeasible task: the right ending is to report failure (FAIL), but "
                                           "the model reported success")
    page = index_html(summary)
    row = page[page.index("<td>infeasible-klingon</td>"):]
    row = row[:row.index("</tr>")]
    assert "success" in row and "the model reported failure" not in row and "infeasible task" in row


def test_task_page_shows_the_score_and_the_evaluators_inputs(tmp_path: Path) -> None:
    summary = _run(tmp_path)
    write_outputs(summary)
    pricing = (tmp_path / "open-pricing" / "report.html").read_text()
    assert "<td>score</td><td>0</td>" in pricing
    assert "<td>is_expected_active_tab</td><td>0.0</td>" in pricing
    assert "http://127.0.0.1:8000/a.html" in pricing and "http://127.0.0.1:8000/pricing.html" in pricing
    assert "href='20260101-000001_run/report.html'" in pricing and "href='../index.html'" in pricing
    crashed = task_page_html(tmp_path, summary.results[3])
    assert "Not scored: Chromium exited during the episode" in crashed and "<td>score</td><td>not scored</td>" in crashed
    assert (tmp_path / "index.html").is_file() and (tmp_path / "results.json").is_file()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium")
def test_index_table_sorts_and_filters_in_chromium(tmp_path: Path, headless_browser: Any) -> None:
    write_outputs(_run(tmp_path))
    page = headless_browser.new_page()
    try:
        page.goto((tmp_path / "index.html").as_uri())
        ids = "() => Array.from(document.querySelectorAll('#tasks tbody tr')).filter(r => !r.hidden)" \
              ".map(r => r.cells[0].textContent)"
        assert page.evaluate(ids) == ["infeasible-klingon", "open-pricing", "list-files", "crashed"]
        assert page.locator("#shown").text_content() == "4 of 4 tasks"
        page.locator("#tasks th", has_text="seconds").click()  # ascending, numerically
        assert page.evaluate(ids) == ["list-files", "crashed", "infeasible-klingon", "open-pricing"]
        page.locator("#tasks th", has_text="seconds").click()  # then descending
        assert page.evaluate(ids) == ["open-pricing", "infeasible-klingon", "crashed", "list-files"]
        page.select_option("#domain", "os")
        assert page.evaluate(ids) == ["crashed", "list-files"]
        page.select_option("#status", "error")
        assert page.evaluate(ids) == ["crashed"] and page.locator("#shown").text_content() == "1 of 4 tasks"
        page.select_option("#domain", "")
        page.select_option("#status", "")
        page.fill("#q", "pricing")
        assert page.evaluate(ids) == ["open-pricing"]
    finally:
        page.close()


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None or shutil.which("ffprobe") is None,
                    reason="needs Xvfb, Chromium and ffmpeg")
def test_a_real_run_leaves_osworlds_files_and_the_pages_in_the_task_folder(tmp_path: Path) -> None:
    from kimi_agent.tasks import RunSettings, run_tasks
    from kimi_agent.tasks.suites import CHROME_SUITE
    from kimi_agent.tasks.suites.solutions import solution_backend

    summary = run_tasks([CHROME_SUITE / "suite-web-navigation.json"], solution_backend,
                        RunSettings(workers=1, max_steps=6, out_dir=tmp_path), progress=False)
    (r,) = summary.results
    assert (r.status, r.score) == ("success", 1.0)
    task_dir = tmp_path / r.task_id
    assert (task_dir / "result.txt").read_text() == "1\n"
    traj = [json.loads(x) for x in (task_dir / "traj.jsonl").read_text().splitlines()]
    assert len(traj) == r.steps and traj[-1]["action"] == "DONE"
    assert all((task_dir / x["screenshot_file"]).is_file() for x in traj)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,width,nb_read_frames", "-of", "json", str(task_dir / "recording.mp4")],
                           capture_output=True, text=True, check=True, timeout=60)
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and stream["width"] == 1280 and int(stream["nb_read_frames"]) >= r.steps
    page = (task_dir / "report.html").read_text()
    assert "<td>is_expected_active_tab</td><td>1.0</td>" in page and "<video src='recording.mp4'" in page
    index = (tmp_path / "index.html").read_text()
    assert "scripted solutions of the built-in suite (test double)" in index  # not "scripted replies"
    assert "<td>backend</td><td>solutions</td>" in index and "<td>step budget</td><td>6 steps per task</td>" in index
