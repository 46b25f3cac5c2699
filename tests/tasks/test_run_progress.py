"""The runner's live progress view: counts, success so far, one row per running task."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from rich.console import Console

from kimi_agent.tasks.run_progress import ProgressView
from kimi_agent.tasks.runner import TaskResult


@dataclass
class _Worker:
    """The fields the runner's `worker_pool.Worker` gives the view."""

    index: int
    task_id: str | None
    started: float = 0.0
    step: str = ""
    step_no: int = 0
    phase: str = ""
    display: str = ":9"
    label: str = ""  # a VM worker's VM
    memory_mb: int | None = None


def _view(total: int, *, terminal: bool) -> tuple[ProgressView, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, width=140, force_terminal=terminal, color_system=None)
    return ProgressView(total=total, enabled=True, console=console), buf


def test_counts_and_rows_of_running_tasks() -> None:
    view, buf = _view(6, terminal=True)
    view.workers = {0: _Worker(0, "chrome-dnt", time.time() - 12, "step 2: Click the toggle", 3, "acting (click)",
                               memory_mb=612),
                    1: _Worker(1, None)}
    view.finished(TaskResult(task_id="ok-task", status="success", score=1.0, steps=3, seconds=4.2))
    view.finished(TaskResult(task_id="bad-task", status="error", reason="worker died", steps=1, seconds=9))
    view.finished(TaskResult(task_id="odd-task", status="unsupported", reason="needs a VM"))
    assert view.counts() == {"done": 3, "running": 1, "queued": 2, "scored": 2, "succeeded": 1, "errored": 1}
    view.console.print(view.render())
    text = buf.getvalue()
    assert "tasks 3/6 done · 1 running · 2 queued" in text
    assert "success 1/2 scored (50%) · 1 error" in text
    (row,) = [line for line in text.splitlines() if "chrome-dnt" in line]
    assert "acting (click)" in row and "step 2: Click the toggle" in row and " 3 " in row and "12 s" in row
    assert row.rstrip().endswith("612 MiB")
    assert "bad-task" in text and "worker died" in text


def test_a_vm_workers_row_names_its_vm() -> None:
    view, buf = _view(1, terminal=True)
    view.workers = {2: _Worker(2, "030eeff7", time.time(), "reset", label="http://10.0.0.5:5000")}
    view.console.print(view.render())
    (row,) = [line for line in buf.getvalue().splitlines() if "030eeff7" in line]
    assert "2 http://10.0.0.5:5000" in row


def test_not_a_terminal_prints_one_line_per_finished_task() -> None:
    view, buf = _view(2, terminal=False)
    with view.live():
        view.finished(TaskResult(task_id="first", status="success", score=1.0, steps=2, seconds=1.0))
        view.refresh()
        view.finished(TaskResult(task_id="second", status="fail", score=0.0, steps=5, seconds=2.0,
                                 reason="the model reported failure"))
    lines = buf.getvalue().splitlines()
    assert lines[0].split()[:2] == ["success", "first"]
    assert lines[1].split()[:2] == ["fail", "second"]
    assert "the evaluator scored it 0 (the model reported failure)" in lines[1]
    assert lines[2].startswith("tasks 2/2 done · 0 running · 0 queued")


def test_each_workers_spinner_turns_between_redraws() -> None:
    view, buf = _view(1, terminal=True)
    view.workers = {0: _Worker(0, "t1", time.time(), "thinking")}
    frames = set()
    for _ in range(4):  # the "dots" spinner shows a new frame every 80 ms
        view.console.print(view.render())
        (row,) = [line for line in buf.getvalue().splitlines() if "t1" in line][-1:]
        frames.add(row.strip()[0])
        time.sleep(0.1)
    assert len(frames) >= 3, frames
