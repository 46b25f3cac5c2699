"""The HTML pages of a task run: `index.html` for the run and `<task id>/report.html` per task.

`index_html(summary)` gives the run's metadata (model, backend, date, step budget, read from the
episodes' run.json), totals per domain (OSWorld's examples/<domain>/), and one table of tasks that
sorts by any column and filters by text, status and domain (a small inline script, no external
assets). `task_page_html(out, result)` shows a task's score and the evaluator's inputs (each
metric's function, the value its getter returned, the expected value), refusals, and links to
the episode's report, recording and OSWorld's traj.jsonl. An infeasible task (OSWorld's
`infeasible` evaluator: the right ending is the agent reporting failure, FAIL) says so, instead
of "success" next to "the model reported failure".
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from kimi_agent.errors import ArtifactError
from kimi_agent.report import model_label
from kimi_agent.tasks.runner import RunSummary, TaskResult, trajectory_problem
from kimi_agent.trajectory import read_text

_e = html.escape
TASK_PAGE = "report.html"
RUN_JSON_LIMIT = 4 * 2**20  # bytes of an episode's run.json read for the index (written in the sandbox)

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1b1b1f}
td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th.sort{cursor:pointer;user-select:none} th.sort:after{content:" \\2195";color:#aaa}
.success .st{color:#0a7d32} .fail .st{color:#b00020} .error .st{color:purple} .unsupported .st,.invalid .st,.interrupted .st{color:#a06000}
.meta td:first-child{color:#666} .filters{margin:12px 0} .filters *{margin-right:8px}
pre{background:#f3f3f6;padding:6px;border-radius:6px;white-space:pre-wrap;max-height:240px;overflow:auto;margin:0}
"""

_SCRIPT = """
(function(){
  const table = document.getElementById('tasks'), body = table.tBodies[0];
  const q = document.getElementById('q'), st = document.getElementById('status'), dom = document.getElementById('domain');
  function filter(){
    const text = q.value.toLowerCase();
    let shown = 0;
    for (const row of body.rows){
      const ok = (!text || row.textContent.toLowerCase().includes(text)) &&
                 (!st.value || row.dataset.status === st.value) && (!dom.value || row.dataset.domain === dom.value);
      row.hidden = !ok; shown += ok;
    }
    document.getElementById('shown').textContent = shown + ' of ' + body.rows.length + ' tasks';
  }
  [q, st, dom].forEach(el => el.addEventListener('input', filter));
  table.querySelectorAll('th.sort').forEach((th, col) => th.addEventListener('click', () => {
    const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc'; th.dataset.dir = dir;
    const key = row => row.cells[col].dataset.v ?? row.cells[col].textContent;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return dir === 'asc' ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }));
  filter();
})();
"""


def is_infeasible(r: TaskResult) -> bool:
    """Whether the task was scored by OSWorld's `infeasible` evaluator."""
    metrics = (r.evaluation or {}).get("metrics")
    return isinstance(metrics, list) and bool(metrics) and isinstance(metrics[0], dict) and \
        metrics[0].get("func") == "infeasible"


def outcome_text(r: TaskResult) -> str:
    """The result's reason as people should read it next to its status."""
    if not is_infeasible(r):
        return r.reason
    if r.score == 1.0:
        return "infeasible task: the model reported that it cannot be done (FAIL), the right answer"
    return f"infeasible task: the right ending is to report failure (FAIL), but {r.reason or 'it did not'}"


def run_metadata(summary: RunSummary) -> dict[str, str]:
    """Model, backend, date and step budget of the run, from its episodes' run.json files."""
    runs = []
    for r in summary.results:
        if (trajectory := _trajectory(r)) is not None:
            try:  # a regular file of bounded size only: a planted FIFO or link is skipped
                run = json.loads(read_text(summary.out_dir / trajectory / "run.json", max_bytes=RUN_JSON_LIMIT))
            except (ArtifactError, ValueError, RecursionError):
                continue
            if isinstance(run, dict):
                runs.append(run)
    if not runs:
        return {"model": "no episode ran", "backend": "-", "date": "-", "step budget": "-"}
    first = min(runs, key=lambda run: str(run.get("started_at", "")))
    budgets = sorted({str((run.get("settings") or {}).get("max_steps", "?")) for run in runs})
    return {"model": ", ".join(sorted({model_label(run) for run in runs})),
            "backend": ", ".join(sorted({str(run.get("backend")) for run in runs})),
            "date": str(first.get("started_at", "-")).replace("T", " "),
            "step budget": ", ".join(budgets) + " steps per task"}


def _trajectory(r: TaskResult) -> str | None:
    """The result's trajectory where it is a relative path inside its task's folder (`<task id>/<run
    folder>`), else None: a worker's result is untrusted, and pages link it and read its run.json."""
    if not r.trajectory or trajectory_problem(r.task_id, r.trajectory) is not None:
        return None
    return r.trajectory


def _number(v: Any) -> str:
    """A score as a number (as Python prints it: 1.0); anything else (a worker's result is untrusted)
    as escaped text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return _e(str(v))


def _links(out: Path, r: TaskResult) -> str:
    links = []
    task_dir = out / r.task_id
    if (task_dir / TASK_PAGE).exists() or (task_dir / "result.json").exists():
        links.append(f'<a href="{_e(r.task_id)}/{TASK_PAGE}">task</a>')
    trajectory = _trajectory(r)
    if trajectory and (out / trajectory / "report.html").exists():
        links.append(f'<a href="{_e(trajectory)}/report.html">episode</a>')
    elif trajectory:
        links.append(f'<a href="{_e(trajectory)}/">trajectory</a>')
    return " ".join(links)


def index_html(summary: RunSummary) -> str:
    """The run's index page (see the module docstring)."""
    meta = run_metadata(summary)
    rows = []
    for r in summary.results:
        score = "" if r.score is None else f"{r.score:g}"
        rows.append(
            f"<tr class='{r.status}' data-status='{r.status}' data-domain='{_e(r.domain)}'>"
            f"<td>{_e(r.task_id)}</td><td>{_e(r.domain or '-')}</td><td>{_e(r.instruction)}</td>"
            f"<td class='st'>{r.status}</td><td data-v='{'' if r.score is None else r.score}'>{score}</td>"
            f"<td>{r.steps}</td><td data-v='{r.seconds:.3f}'>{r.seconds:.1f}</td><td>{_e(outcome_text(r))}</td>"
            f"<td>{_links(summary.out_dir, r)}</td></tr>")
    statuses = sorted({r.status for r in summary.results})
    domains = sorted({r.domain for r in summary.results})
    head = "".join(f"<th class='sort'>{c}</th>" for c in
                   ("task", "domain", "instruction", "status", "score", "steps", "seconds", "reason", "reports"))
    meta_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta.items())
    stopped = "<p><b>The run was interrupted</b>; unfinished tasks are marked interrupted (neither scored nor errored), and --resume reruns them.</p>" \
        if summary.interrupted else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>kimi-agent task run</title>"
            f"<style>{_CSS}</style></head><body>"
            f"<h1>Task run: {summary.success_rate:.0%} success over {len(summary.scored)} scored tasks</h1>{stopped}"
            f"<table class='meta'>{meta_rows}</table>" + _domain_table(summary) +
            "<div class='filters'><input id='q' type='search' placeholder='filter tasks'>"
            "<select id='status'><option value=''>every status</option>"
            + "".join(f"<option>{s}</option>" for s in statuses) + "</select>"
            "<select id='domain'><option value=''>every domain</option>"
            + "".join(f"<option value='{_e(d)}'>{_e(d or '-')}</option>" for d in domains) + "</select>"
            "<span id='shown'></span></div>"
            f"<table id='tasks'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<script>{_SCRIPT}</script></body></html>\n")


def _domain_table(summary: RunSummary) -> str:
    rows = []
    for d, v in summary.domain_rates().items():
        rs = [r for r in summary.results if r.domain == d]
        succeeded = sum(r.status == "success" for r in rs)
        not_run = sum(r.status in ("unsupported", "invalid", "interrupted") for r in rs)
        rows.append(f"<tr><td>{_e(d or '-')}</td><td>{v['rate']:.1%}</td><td>{succeeded}</td><td>{v['scored']:g}</td>"
                    f"<td>{v['errored']:g}</td><td>{not_run}</td><td>{v['total']:g}</td></tr>")
    total = summary.results
    rows.append(f"<tr><th>all</th><th>{summary.success_rate:.1%}</th><th>{sum(r.status == 'success' for r in total)}</th>"
                f"<th>{len(summary.scored)}</th><th>{len(summary.errored)}</th>"
                f"<th>{sum(r.status in ('unsupported', 'invalid', 'interrupted') for r in total)}</th>"
                f"<th>{len(total)}</th></tr>")
    return ("<h2>Per domain</h2><table class='domains'><tr><th>domain</th><th>success rate</th><th>succeeded</th>"
            "<th>scored</th><th>errored</th><th>not run</th><th>tasks</th></tr>" + "".join(rows) + "</table><h2>Tasks</h2>")


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, indent=1, ensure_ascii=False, default=str)
    return f"<pre>{_e(text)}</pre>"


def task_page_html(out: Path, r: TaskResult) -> str:
    """`<out>/<task id>/report.html`: the task's score and the evaluator's inputs, with links."""
    ev = r.evaluation or {}
    metrics = ev.get("metrics")
    metric_rows = "".join(
        f"<tr><td>{_e(str(m.get('func')))}</td><td>{_number(m.get('score'))}</td><td>{_value(m.get('result'))}</td>"
        f"<td>{_value(m.get('expected'))}</td><td>{_e(str(m.get('note') or ''))}</td></tr>"
        for m in (metrics if isinstance(metrics, list) else []) if isinstance(m, dict))
    evaluation = ("<p>Not scored: " + _e(r.reason) + "</p>") if not ev else (
        f"<p>score <b>{_number(ev.get('score'))}</b>{' — ' + _e(str(ev['note'])) if ev.get('note') else ''}</p>"
        "<table class='eval'><tr><th>metric</th><th>score</th><th>result (what the getter returned)</th>"
        f"<th>expected</th><th>note</th></tr>{metric_rows}</table>")
    task_dir = out / r.task_id
    media = ""
    if (task_dir / "recording.mp4").exists():
        media = "<video src='recording.mp4' controls width='960'></video>"
    elif (task_dir / "recording.webp").exists():
        media = "<img src='recording.webp' width='960' alt='recording'>"
    links = [f"<a href='{_e(n)}'>{_e(n)}</a>" for n in ("result.json", "traj.jsonl", "recording.mp4")
             if (task_dir / n).exists()]
    trajectory = _trajectory(r)
    if trajectory and (out / trajectory / "report.html").exists():
        rel = trajectory.split("/", 1)[1]  # inside the task's folder (checked by _trajectory)
        links.insert(0, f"<a href='{_e(rel)}/report.html'>the episode, step by step</a>")
    refusals = "".join(f"<li>step {_e(str(x.get('step')))}: {_e(str(x.get('risk')))} — "
                       f"{_e(str(x.get('reason')))}</li>" for x in r.refusals)
    rows = [("task", r.task_id), ("domain", r.domain or "-"), ("instruction", r.instruction), ("status", r.status),
            ("score", "not scored" if r.score is None else f"{r.score:g}"), ("reason", outcome_text(r)),
            ("episode", f"{r.episode_status or '-'} after {r.steps} steps, {r.seconds:.1f} s")]
    meta = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{_e(r.task_id)}: {r.status}</title><style>{_CSS}</style></head><body class='{r.status}'>"
            f"<p><a href='../index.html'>all tasks</a></p><h1>{_e(r.task_id)}: <span class='st'>{r.status}</span></h1>"
            f"<table class='meta'>{meta}</table><h2>Evaluation</h2>{evaluation}"
            + (f"<h2>Refused actions</h2><ul>{refusals}</ul>" if refusals else "")
            + f"<h2>Recording</h2>{media or '<p>none</p>'}<p>{' · '.join(links)}</p></body></html>\n")
