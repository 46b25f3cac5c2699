"""A self-contained `report.html` for one run.

The header says what ran (model, backend, environment, start URL, date, prompt version) and how it
ended; a step index links to every step; each step shows the screen the model acted on with every
pointer action drawn (click ring, drag path, scroll arrow; grey when refused), the thought, the
action, the code, what was executed, every rejected attempt and error where it happened, and the
step's time (all attempts included) by phase. The screen after the last action closes the page.
Frames are embedded as JPEG data URLs (scaled to at most 1280 px wide) so the file can be mailed
or attached to an issue; marks are SVG in the image's own pixel units.

`load_run(run_dir)` reads run.json and steps.jsonl strictly: a file that is not JSON is an
`ArtifactError` naming it (and the line and column), not a bare decoder message. When screenshots
are missing from `frames/`, the page says so at the top; `write_report` then keeps an existing
report.html that embeds more screenshots than the new one would (raising `ArtifactError` naming the
missing frames) rather than replacing it with a poorer one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from kimi_agent.errors import ArtifactError
from kimi_agent.frame_files import load_frame
from kimi_agent.markers import Mark, run_marks
from kimi_agent.trajectory import read_steps, read_text

MAX_WIDTH = 1280
_EMBEDDED = '<img src="data:'  # how every embedded screenshot starts
_e = html.escape

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1340px;padding:16px;color:#1b1b1f;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .meta{color:#333;margin-bottom:12px} .meta code{font-size:12px}
table.head td{padding:1px 12px 1px 0;vertical-align:top} table.head td:first-child{color:#666}
nav.steps{position:sticky;top:0;background:#fafafa;padding:6px 0;border-bottom:1px solid #ddd;z-index:2}
nav.steps a{display:inline-block;margin:2px;padding:2px 8px;border-radius:10px;background:#e8e8ee;color:#1b1b1f;text-decoration:none}
nav.steps a.has-error{background:#fbd5da} nav.steps a.final{background:#d5ecda}
.step{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;margin:14px 0}
.step h2{font-size:16px;margin:0 0 8px} .step h2 .t{color:#555;font-weight:normal;font-size:13px;margin-left:8px}
.shot{position:relative;display:inline-block;max-width:100%} .shot img{display:block;max-width:100%;height:auto;outline:1px solid #ccc}
.shot svg{position:absolute;inset:0;width:100%;height:100%}
.k{color:#666;font-weight:600;margin-right:6px} pre{background:#f3f3f6;padding:8px;border-radius:6px;white-space:pre-wrap;margin:6px 0}
.err{color:#b00020} .errbox{border-left:4px solid #b00020;background:#fff3f4;padding:6px 10px;margin:6px 0}
.ok{color:#0a7d32} .timing span{display:inline-block;margin-right:12px;color:#444}
.status-success{color:#0a7d32} .status-failure,.status-error{color:#b00020} .status-max_steps,.status-user_stopped{color:#a06000}
"""
_COLOURS = {True: "#e0182d", False: "#777"}


#: The backends that stand in for a model, as their runs are labelled.
TEST_DOUBLES = {"scripted": "scripted replies (test double)", "solutions": "scripted solutions of the built-in suite (test double)",
                "do-nothing": "do-nothing replies (test double)", "give-up": "give-up replies (test double)"}


def model_label(run: dict[str, Any]) -> str:
    """What produced the replies, for people: the model name, or what stood in for one."""
    backend = run.get("backend")
    model = run.get("model")
    if backend in TEST_DOUBLES:
        return TEST_DOUBLES[str(backend)]
    if isinstance(model, str) and model:
        return model
    return f"{backend} backend (model not recorded)" if backend else "not recorded"


def frame_data_url(path: Path) -> tuple[str, int, int] | None:
    """(JPEG data URL, width, height) of a frame scaled to at most MAX_WIDTH px, or None if unreadable."""
    try:
        im = load_frame(path)
    except OSError:  # missing, not a regular file, not an image, too large
        return None
    if im.width > MAX_WIDTH:
        im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def overlay(marks: list[Mark], width: int, height: int) -> str:
    """An SVG (viewBox in image pixels) with one `<g class="mark mark-KIND">` per pointer action."""
    r = max(8.0, width / 90)
    parts = []
    for m in marks:
        c = _COLOURS[m.ok]
        pts = [(x * width, y * height) for x, y in m.points]
        title = f"<title>{_e(m.label)}{'' if m.ok else ' (refused)'}</title>"
        if m.kind == "drag":
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            body = (f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="3" stroke-dasharray="8 5"/>'
                    f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="{r / 2:.1f}" fill="none" stroke="{c}" stroke-width="3"/>'
                    + _arrowhead(pts[-2], pts[-1], r, c))
        elif m.kind == "scroll" and m.direction is not None:
            (x, y), (dx, dy) = pts[0], m.direction
            end = (x + dx * r * 5, y + dy * r * 5)
            body = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r / 2:.1f}" fill="none" stroke="{c}" stroke-width="3"/>'
                    f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{end[0]:.1f}" y2="{end[1]:.1f}" stroke="{c}" stroke-width="4"/>'
                    + _arrowhead((x, y), end, r, c))
        else:
            x, y = pts[0]
            body = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="none" stroke="{c}" stroke-width="3"/>'
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}"/>')
        parts.append(f'<g class="mark mark-{m.kind}">{title}{body}</g>')
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' preserveAspectRatio='none'>"
            + "".join(parts) + "</svg>")


def _arrowhead(a: tuple[float, float], b: tuple[float, float], size: float, colour: str) -> str:
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    pts = [b, (b[0] - size * math.cos(angle - 0.5), b[1] - size * math.sin(angle - 0.5)),
           (b[0] - size * math.cos(angle + 0.5), b[1] - size * math.sin(angle + 0.5))]
    return f'<polygon points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="{colour}"/>'


def _shot(run_dir: Path, frame: str | None, marks: list[Mark], alt: str) -> str:
    data = frame_data_url(run_dir / frame) if frame else None
    if data is None:
        return f'<p class="err">frame {_e(frame or "(none)")} missing</p>'
    url, w, h = data
    return f'<div class="shot"><img src="{url}" width="{w}" height="{h}" alt="{_e(alt)}">{overlay(marks, w, h)}</div>'


def step_seconds(step: dict[str, Any]) -> float:
    """Wall time of a step's phases, all attempts included (s)."""
    return sum((step.get("durations_ms") or {}).values()) / 1000


def _step_errors(step: dict[str, Any]) -> list[str]:
    errors = [a["error"] for a in step.get("attempts") or [] if a.get("error")] + \
        [a["error"] for a in step.get("actions") or [] if a.get("error")]
    if step.get("error") and step["error"] not in errors:  # e.g. "interrupted in generate after 1.0 s"
        errors.append(str(step["error"]))
    return errors


def _step_html(run_dir: Path, step: dict[str, Any], marks: list[Mark]) -> str:
    parsed = step.get("parsed") or {}
    n = step["step"]
    attempts = step.get("attempts") or []
    tries = f", {len(attempts)} attempts" if len(attempts) > 1 else ""
    parts = [f'<section class="step" id="step-{n}"><h2>Step {n}<span class="t">{step_seconds(step):.1f} s{tries}</span></h2>',
             _shot(run_dir, (step.get("obs_before") or {}).get("file"), marks, f"step {n}")]
    for att in attempts:
        if att.get("error"):
            parts.append(f'<div class="errbox"><span class="err">attempt rejected ({_e(att.get("kind") or "")}, '
                         f'T={att.get("temperature")}, model {att.get("model_ms", 0) / 1000:.1f} s):</span> '
                         f'{_e(att["error"])}<details><summary>reply</summary><pre>{_e(att.get("reply", ""))}</pre>'
                         "</details></div>")
    if parsed.get("thought"):
        parts.append(f'<p><span class="k">Thought</span>{_e(parsed["thought"])}</p>')
    if parsed.get("action_text"):
        parts.append(f'<p><span class="k">Action</span>{_e(parsed["action_text"])}</p>')
    if parsed.get("code"):
        parts.append(f"<pre>{_e(parsed['code'])}</pre>")
    for a in step.get("actions") or []:
        cls = "ok" if a.get("ok", True) else "err"
        where = "; ".join(f"model {m} → norm ({p[0]:.4f}, {p[1]:.4f})" + (f" → exec ({x[0]:.0f}, {x[1]:.0f}) px" if x else "")
                          for m, p, x in _zip_points(a))
        error = f' <span class="err">{_e(a["error"])}</span>' if a.get("error") else ""
        parts.append(f'<p class="{cls}"><span class="k">{_e(a["action"]["type"])}</span>'
                     f'{_e(", ".join(a.get("executed") or []))} {_e(where)}{error}</p>')
    if step.get("error") and not attempts:
        parts.append(f'<div class="errbox err">{_e(step["error"])}</div>')
    timing = "".join(f"<span>{_e(k)} {v:.1f} ms</span>" for k, v in (step.get("durations_ms") or {}).items())
    parts.append(f'<div class="timing">{timing}</div></section>')
    return "\n".join(parts)


def _zip_points(a: dict[str, Any]) -> list[tuple[Any, list[float], list[float] | None]]:
    norm = a.get("norm_xy") or []
    model = a.get("model_xy") or []
    exe = a.get("exec_xy") or []
    return [(model[i] if i < len(model) else "?", p, exe[i] if i < len(exe) else None) for i, p in enumerate(norm)]


def final_frame(steps: list[dict[str, Any]]) -> str | None:
    """The frame after the last action: the last step's post-action frame, else its pre-action one
    (a step that only reported done acted on nothing)."""
    if not steps:
        return None
    last = steps[-1]
    return (last.get("obs_after") or {}).get("file") or (last.get("obs_before") or {}).get("file")


def _header(run_dir: Path, run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    status = str(run.get("status", "unknown"))
    env: dict[str, Any] = run["env"] if isinstance(run.get("env"), dict) else {}
    geometry = env.get("geometry") or {}
    size = f" ({geometry.get('shot_width')}x{geometry.get('shot_height')})" if geometry.get("shot_width") else ""
    first = (steps[0].get("obs_before") or {}) if steps else {}
    kind = env.get("kind") or run.get("env_kind")
    start_url = run.get("start_url") or first.get("url") or ("none: a desktop episode starts on the screen as it is"
                                                             if kind == "desktop" else "not recorded")
    accounted = sum(step_seconds(s) for s in steps)
    rows = [
        ("model", model_label(run)),
        ("backend", str(run.get("backend") or "not recorded") + (f" at {run['endpoint']}" if run.get("endpoint") else "")),
        ("environment", f"{kind or 'not recorded'}{size}"),
        ("start URL", str(start_url)),
        ("date", _date(run)),
        ("prompt", f"version {run.get('prompt_version', '?')} (sha256 {str(run.get('prompt_sha256', ''))[:12]})"),
        ("time", f"{run.get('duration_s', '?')} s in all; the steps account for {accounted:.1f} s"),
    ]
    table = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    answer = f" — answer: {_e(str(run['answer']))}" if run.get("answer") else ""
    return (f"<h1>{_e(str(run.get('instruction', run_dir.name)))}</h1>"
            f'<div class="meta"><b class="status-{_e(status)}">{_e(status)}</b> — {_e(str(run.get("reason", "")))}{answer}'
            f" · {len(steps)} steps, {run.get('failures', 0)} rejected</div>"
            f'<table class="head meta">{table}</table>')


def _date(run: dict[str, Any]) -> str:
    started = run.get("started_at")
    if not started:
        return "not recorded"
    try:
        return datetime.fromisoformat(str(started)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(started)


def _nav(steps: list[dict[str, Any]], final: bool) -> str:
    links = [f'<a href="#step-{s["step"]}" class="{"has-error" if _step_errors(s) else ""}" '
             f'title="{step_seconds(s):.1f} s">{s["step"]}</a>' for s in steps]
    if final:
        links.append('<a href="#final" class="final">final screen</a>')
    return f'<nav class="steps"><span class="k">Steps</span>{"".join(links)}</nav>'


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run.json, steps.jsonl's records) of a run folder; a missing file reads as empty, a torn last
    line of steps.jsonl (a crash mid-write: no newline after it) is skipped. `ArtifactError` naming the file, line and
    column when one cannot be read or is not the JSON a run folder holds."""
    run_dir = Path(run_dir)
    run_path = run_dir / "run.json"
    run: Any = {}
    if run_path.exists():
        try:
            run = json.loads(read_text(run_path))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"could not read {run_path}: not valid JSON at line {e.lineno}, column {e.colno} "
                                f"({e.msg})") from None
        if not isinstance(run, dict):
            raise ArtifactError(f"could not read {run_path}: expected a JSON object, got {type(run).__name__}")
    return run, read_steps(run_dir)


def referenced_frames(steps: list[dict[str, Any]]) -> list[str]:
    """The screenshots the report shows, in page order (each step's screen, then the final one; a
    frame shown twice, e.g. a step's screen that is also the final one, is listed twice)."""
    frames = [(s.get("obs_before") or {}).get("file") for s in steps] + [final_frame(steps)]
    return [f for f in frames if isinstance(f, str) and f]


def missing_frames(run_dir: str | Path, steps: list[dict[str, Any]]) -> list[str]:
    """Those of `referenced_frames` that are not in the run folder."""
    return [f for f in referenced_frames(steps) if not (Path(run_dir) / f).is_file()]


def _names(frames: list[str], most: int = 5) -> str:
    unique = list(dict.fromkeys(frames))
    shown = ", ".join(unique[:most])
    return shown + (f" and {len(unique) - most} more" if len(unique) > most else "")


def _missing_notice(missing: list[str], total: int) -> str:
    if not missing:
        return ""
    n = len(missing)
    return (f'<div class="errbox err" id="missing-frames"><b>{n} of {total} screenshot{"s" if total != 1 else ""} '
            f"{'is' if n == 1 else 'are'} missing</b> from the run folder ({_e(_names(missing))}): "
            "those steps are shown without their screen.</div>")


def render_report(run_dir: str | Path) -> str:
    """The HTML text of the run folder's report (see the module docstring)."""
    run_dir = Path(run_dir)
    run, steps = load_run(run_dir)
    return _render(run_dir, run, steps)


def _render(run_dir: Path, run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    final = final_frame(steps)
    notice = _missing_notice(missing_frames(run_dir, steps), len(referenced_frames(steps)))
    body = [_header(run_dir, run, steps), notice, _nav(steps, final is not None)]
    body += [_step_html(run_dir, s, marks) for s, marks in zip(steps, run_marks(steps), strict=True)]
    if final is not None:
        body.append('<section class="step" id="final"><h2>Final screen<span class="t">after the last action</span></h2>'
                    f"{_shot(run_dir, final, [], 'final screen')}</section>")
    title = _e(f"kimi-agent: {run.get('instruction', run_dir.name)}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style>"
            f"</head><body>{chr(10).join(body)}</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write `report.html` into the run folder and return its path. With screenshots missing from
    `frames/`, the page says how many; but an existing report.html that embeds more screenshots than
    the new page would is kept, and `ArtifactError` names the missing frames."""
    run_dir = Path(run_dir)
    path = run_dir / "report.html"
    run, steps = load_run(run_dir)
    page = _render(run_dir, run, steps)
    missing = missing_frames(run_dir, steps)
    if missing and path.is_file():
        kept = read_text(path).count(_EMBEDDED)
        if kept > page.count(_EMBEDDED):
            raise ArtifactError(
                f"{len(missing)} of {len(referenced_frames(steps))} screenshots are missing from {run_dir} "
                f"({_names(missing)}); kept the existing {path}, which embeds {kept}. Restore the frames to "
                "rewrite it, or delete report.html to write one without them.")
    tmp = path.with_name(".report.html.part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
