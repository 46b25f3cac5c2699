"""Run outputs: the final results table, results.json/.csv and index.html (both with the success
rate per domain, OSWorld's examples/<domain>/ folder). The live progress view is
`tasks/run_progress.py` (`ProgressView`, re-exported here for the runner)."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from rich.table import Table
from rich.text import Text

from kimi_agent.tasks.run_progress import ProgressView
from kimi_agent.tasks.runner import RunSummary, TaskResult, write_json_atomic

_STYLE = {"success": "green", "fail": "red", "error": "magenta", "unsupported": "yellow", "invalid": "yellow"}
__all__ = ["COLUMNS", "ProgressView", "index_html", "results_table", "write_outputs"]
COLUMNS = ("task_id", "domain", "instruction", "status", "score", "steps", "seconds", "reason", "trajectory")


def results_table(summary: RunSummary) -> Table:
    table = Table(title=f"results ({summary.success_rate:.0%} success over {len(summary.scored)} scored tasks)")
    for col in ("task", "instruction", "status", "score", "steps", "seconds"):
        table.add_column(col, overflow="fold")
    for r in summary.results:
        table.add_row(r.task_id, r.instruction[:60], Text(r.status, style=_STYLE[r.status]),
                      "" if r.score is None else f"{r.score:g}", str(r.steps), f"{r.seconds:.1f}")
    return table


def _report_link(out: Path, r: TaskResult) -> str | None:
    if r.trajectory is None:
        return None
    for name in ("report.html", "run.json"):
        if (out / r.trajectory / name).exists():
            return f"{r.trajectory}/{name}"
    return r.trajectory


def index_html(summary: RunSummary) -> str:
    rows = []
    for r in summary.results:
        link = _report_link(summary.out_dir, r)
        cell = f'<a href="{html.escape(link)}">trajectory</a>' if link else ""
        rows.append(
            f"<tr class='{r.status}'><td>{html.escape(r.task_id)}</td><td>{html.escape(r.instruction)}</td>"
            f"<td>{r.status}</td><td>{'' if r.score is None else f'{r.score:g}'}</td><td>{r.steps}</td>"
            f"<td>{r.seconds:.1f}</td><td>{html.escape(r.reason)}</td><td>{cell}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>kimi-agent task run</title><style>"
            "body{font:14px sans-serif;margin:24px} td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
            "text-align:left;vertical-align:top} .success td:nth-child(3){color:green} .fail td:nth-child(3)"
            "{color:#b00} .error td:nth-child(3){color:purple}</style></head><body>"
            f"<h1>Task run: {summary.success_rate:.0%} success over {len(summary.scored)} scored tasks</h1>"
            + _domain_table(summary) +
            "<table><tr><th>task</th><th>instruction</th><th>status</th><th>score</th><th>steps</th>"
            "<th>seconds</th><th>reason</th><th>report</th></tr>" + "".join(rows) + "</table></body></html>")


def _domain_table(summary: RunSummary) -> str:
    rows = "".join(f"<tr><td>{html.escape(d or '-')}</td><td>{v['rate']:.1%}</td><td>{v['scored']:g}</td>"
                   f"<td>{v['errored']:g}</td><td>{v['total']:g}</td></tr>"
                   for d, v in summary.domain_rates().items())
    return ("<h2>Per domain</h2><table class='domains'><tr><th>domain</th><th>success rate</th><th>scored</th>"
            f"<th>errored</th><th>tasks</th></tr>{rows}</table><h2>Tasks</h2>")


def write_outputs(summary: RunSummary) -> None:
    out = summary.out_dir
    data = {"success_rate": summary.success_rate, "scored": len(summary.scored),
            "errored": len(summary.errored), "domains": summary.domain_rates(),
            "results": [r.model_dump(mode="json") for r in summary.results]}
    write_json_atomic(out / "results.json", data)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in summary.results:
        writer.writerow(r.model_dump(mode="json"))
    _write_text(out / "results.csv", buf.getvalue())
    _write_text(out / "index.html", index_html(summary))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
