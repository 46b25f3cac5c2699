"""The runner's live progress on the terminal (rich): one line per running task (its worker, step,
phase and time so far) under a header with the overall done / running / queued counts and the
success so far.

The runner builds it as `ProgressView(total=..., enabled=...)`, sets `.workers` to its worker
table (objects with `index`, `task_id`, `started` (wall clock, s), `step` (text), and optionally
`step_no`, `phase`, `label` (the VM a worker drives) and `memory_mb` (its tree's memory now)),
calls `.finished(result)` for every result, `.refresh()` on each tick, and runs inside
`with view.live():`. On a terminal that is a rich Live display on stderr; when
stderr is not a terminal, `live()` prints one plain line per finished task instead (no redraws).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from kimi_agent.tasks.runner import SCORED_STATUSES as SCORED
from kimi_agent.tasks.runner import RunSummary, TaskResult

_STYLE = {"success": "green", "fail": "red", "error": "magenta", "unsupported": "yellow", "invalid": "yellow",
          "interrupted": "yellow"}


def phase_label(phase: str, detail: str = "") -> str:
    """A worker's phase as its row shows it: `acting (click)`, `waiting (2 s)`; bounded in length."""
    detail = detail[:40]
    return phase[:20] + (f" ({detail})" if detail else "")


class ProgressView:
    """Done/running/queued, success so far, and each running task's step and phase."""

    def __init__(self, *, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.done: list[TaskResult] = []
        self.workers: dict[int, Any] = {}
        self.console = console or Console(stderr=True, highlight=False)
        self._live: Live | None = None
        self._plain = False  # inside live() on a non-terminal: one line per finished task
        self._spinners: dict[int, Spinner] = {}  # one per worker: a spinner's frame follows its age

    # ---- what the runner calls ------------------------------------------------------------------

    def finished(self, r: TaskResult) -> None:
        """Count a finished (or skipped) task; on a non-terminal, print its line."""
        self.done.append(r)
        if self._plain:
            self.console.print(self._result_line(r), soft_wrap=True)

    @contextmanager
    def live(self) -> Iterator[None]:
        """Show the view while the block runs (a transient Live on a terminal)."""
        if not self.console.is_terminal:
            self._plain = True
            try:
                yield
            finally:
                self._plain = False
                self.console.print(self.headline(), soft_wrap=True)
            return
        with Live(self.render(), console=self.console, refresh_per_second=8, transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def refresh(self) -> None:
        """Redraw with the workers' current state (called on every runner tick)."""
        if self._live is not None:
            self._live.update(self.render())

    def print_table(self, summary: RunSummary, console: Console | None = None) -> None:
        """Print the final results table."""
        from kimi_agent.tasks.report import results_table

        (console or Console()).print(results_table(summary))

    # ---- what it shows --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """{"done", "running", "queued", "scored", "succeeded", "errored"} so far."""
        running = sum(1 for w in self.workers.values() if getattr(w, "task_id", None))
        done = len(self.done)
        scored = [r for r in self.done if r.status in SCORED]
        return {"done": done, "running": running, "queued": max(0, self.total - done - running),
                "scored": len(scored), "succeeded": sum(1 for r in scored if r.status == "success"),
                "errored": sum(1 for r in scored if r.status == "error")}

    def headline(self) -> Text:
        """`tasks 3/10 done · 2 running · 5 queued   success 2/3 scored (67%) · 0 errors`."""
        c = self.counts()
        scored = [r for r in self.done if r.status in SCORED]
        rate = sum(r.score or 0.0 for r in scored) / len(scored) if scored else 0.0
        text = Text(f"tasks {c['done']}/{self.total} done · {c['running']} running · {c['queued']} queued   ")
        text.append(f"success {c['succeeded']}/{c['scored']} scored ({rate:.0%})",
                    style="bold green" if c["scored"] and rate >= 0.5 else "bold")
        text.append(f" · {c['errored']} error{'s' if c['errored'] != 1 else ''}",
                    style="magenta" if c["errored"] else "dim")
        return text

    def render(self) -> Group:
        """The header, then one row per worker with a task (spinner, task, step, phase, time, memory)."""
        table = Table(show_header=True, box=None, pad_edge=False)
        for col, kw in (("", {}), ("worker", {}), ("task", {"overflow": "fold"}), ("step", {"justify": "right"}),
                        ("phase", {}), ("last step", {"overflow": "ellipsis", "max_width": 48}),
                        ("time", {"justify": "right"}), ("memory", {"justify": "right"})):
            table.add_column(col, **kw)
        now = time.time()
        for i, w in sorted(self.workers.items()):
            task = getattr(w, "task_id", None)
            if not task:
                continue
            started = float(getattr(w, "started", 0.0) or 0.0)
            elapsed = f"{now - started:.0f} s" if started else ""
            step_no = int(getattr(w, "step_no", 0) or 0)
            phase = str(getattr(w, "phase", "") or "") or str(getattr(w, "step", "") or "")
            last = str(getattr(w, "step", "") or "")
            label = str(getattr(w, "label", "") or "")  # a VM worker's VM
            memory = getattr(w, "memory_mb", None)  # None: no cgroup to read it from (or a VM's worker)
            spinner = self._spinners.setdefault(i, Spinner("dots", style="cyan"))
            table.add_row(spinner, escape(f"{i} {label}".strip()), escape(task), str(step_no or "-"),
                          escape(phase), escape(last if last.startswith("step ") else ""), elapsed,
                          "" if memory is None else f"{memory} MiB")
        recent = [self._result_line(r) for r in self.done[-3:]]
        return Group(self.headline(), table, *recent)

    @staticmethod
    def _result_line(r: TaskResult) -> Text:
        line = Text("  ")
        line.append(f"{r.status:<11}", style=_STYLE.get(r.status, ""))
        score = "" if r.score is None else f" score {r.score:g}"
        line.append(f"{r.task_id}{score} · {r.steps} steps · {r.seconds:.1f} s")
        if r.reason and r.status == "fail":  # e.g. "the model reported success": the check disagreed
            line.append(f" · the evaluator scored it {r.score or 0:g} ({r.reason[:100]})", style="dim")
        elif r.reason and r.status != "success":
            line.append(f" · {r.reason[:100]}", style="dim")
        return line
