"""Run outputs: the final results table, results.json/.csv, index.html (both with the success rate
per domain, OSWorld's examples/<domain>/ folder) and each task's report.html (the pages themselves
are tasks/run_pages.py). The live progress view is `tasks/run_progress.py` (`ProgressView`,
re-exported here for the runner)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.table import Table
from rich.text import Text

from kimi_agent.progress import printable
from kimi_agent.tasks.loader import id_problem
from kimi_agent.tasks.run_pages import TASK_PAGE, index_html, task_page_html
from kimi_agent.tasks.run_progress import ProgressView
from kimi_agent.tasks.runner import RunSummary, write_bytes_atomic, write_json_atomic

_STYLE = {"success": "green", "fail": "red", "error": "magenta", "unsupported": "yellow", "invalid": "yellow",
          "interrupted": "yellow"}
__all__ = ["COLUMNS", "ProgressView", "index_html", "results_lines", "results_table", "write_outputs"]
COLUMNS = ("task_id", "domain", "instruction", "status", "score", "steps", "seconds", "reason", "trajectory")


def results_table(summary: RunSummary) -> Table:
    """The results as a table for a terminal (instructions cut at 60 characters)."""
    table = Table(title=f"results ({summary.success_rate:.0%} success over {len(summary.scored)} scored tasks)")
    for col in ("task", "instruction", "status", "score", "steps", "seconds"):
        table.add_column(col, overflow="fold")
    for r in summary.results:
        table.add_row(r.task_id, printable(r.instruction)[:60], Text(r.status, style=_STYLE[r.status]),
                      "" if r.score is None else f"{r.score:g}", str(r.steps), f"{r.seconds:.1f}")
    return table


def results_lines(summary: RunSummary) -> list[str]:
    """The results as plain lines for output that is not a terminal, one per task, never cut:
    `<task id>  <status>  score <score or ->  <steps> steps  <seconds> s  <instruction>`."""
    lines = []
    for r in summary.results:
        score = "-" if r.score is None else f"{r.score:g}"
        instruction = printable(" ".join(r.instruction.split()))  # one line, whole
        lines.append(f"{r.task_id}  {r.status}  score {score}  {r.steps} steps  {r.seconds:.1f} s  {instruction}")
    return lines


def write_outputs(summary: RunSummary) -> None:
    out = summary.out_dir
    data = {"success_rate": summary.success_rate, "scored": len(summary.scored),
            "errored": len(summary.errored), "interrupted": summary.interrupted,
            "unfinished": len(summary.unfinished), "domains": summary.domain_rates(),
            "results": [r.model_dump(mode="json") for r in summary.results]}
    write_json_atomic(out / "results.json", data)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in summary.results:
        writer.writerow(r.model_dump(mode="json"))
    _write_text(out / "results.csv", buf.getvalue())
    for r in summary.results:
        if r.status == "invalid" or id_problem(r.task_id) is not None:  # names no folder of its own
            continue
        task_dir = out / r.task_id
        if not task_dir.is_symlink() and (task_dir / "result.json").is_file():
            _write_text(task_dir / TASK_PAGE, task_page_html(out, r))
    _write_text(out / "index.html", index_html(summary))


def _write_text(path: Path, text: str) -> None:
    """Through a fresh temporary file that replaces `path`: never through a link planted in a task folder."""
    write_bytes_atomic(path, text.encode("utf-8"))
