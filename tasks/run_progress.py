"""The runner's live progress on the terminal (rich): done/total, success so far, each worker's task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kimi_agent.tasks.runner import RunSummary, TaskResult


class ProgressView:
    """Done/total, success rate so far, and each worker's current task and step."""

    def __init__(self, *, total: int, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self.done: list[TaskResult] = []
        self.workers: dict[int, Any] = {}
        self._live: Live | None = None

    def finished(self, r: TaskResult) -> None:
        self.done.append(r)

    def render(self) -> Group:
        scored = [r for r in self.done if r.status in ("success", "fail", "error")]
        rate = sum(r.score or 0.0 for r in scored) / len(scored) if scored else 0.0
        head = Text(f"tasks {len(self.done)}/{self.total}   success rate {rate:.0%} of {len(scored)} scored")
        table = Table(show_header=True, box=None)
        for col in ("worker", "display", "task", "current step"):
            table.add_column(col)
        for i, w in sorted(self.workers.items()):
            table.add_row(str(i), w.display, w.task_id or "-", w.step)
        return Group(head, table)

    @contextmanager
    def live(self) -> Iterator[None]:
        with Live(self.render(), refresh_per_second=4, transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def print_table(self, summary: RunSummary, console: Console | None = None) -> None:
        from kimi_agent.tasks.report import results_table

        (console or Console()).print(results_table(summary))
