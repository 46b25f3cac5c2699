"""Replay a trajectory: re-execute its recorded actions in a fresh environment and measure, step by
step, how far the screen is from the frame recorded then.

Only the typed actions in steps.jsonl are used (validated into the `Action` union; no code from the
run is executed); refused or failed actions are skipped, as they did nothing then either. Before
each step the screen is compared with the recorded pre-action frame, and after the last one with
the recorded final frame. `frame_difference(a, b)` is the fraction of pixels (on both images scaled
to at most `COMPARE_WIDTH` px wide, grey levels) that differ by more than `PIXEL_TOLERANCE`; a step
matches when it is at most the threshold. The replay folder (`<run>/replay-<time>/` by default)
holds `replay.json`, the replayed frames and a `report.html` with both frames side by side.

run.json and steps.jsonl are read strictly before anything is executed (`read_recorded_run`): a file
that is not JSON is an `ArtifactError` naming it, its line and column. `StepReplay.summary()` is the
one-line verdict for people: "step 1: matches (0.65% of pixels differ)".
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops
from pydantic import TypeAdapter, ValidationError

from kimi_agent.actions.types import Action
from kimi_agent.env.base import Environment
from kimi_agent.errors import ActionError, ArtifactError
from kimi_agent.frame_files import load_frame
from kimi_agent.markers import run_marks
from kimi_agent.report import frame_data_url, load_run, overlay
from kimi_agent.safety import Redactor, fill_recorded_secrets

DEFAULT_THRESHOLD = 0.02  # at most 2 % of the pixels may differ
PIXEL_TOLERANCE = 32  # grey levels (of 255) a pixel may move before it counts as different
COMPARE_WIDTH = 640
_ACTION = TypeAdapter(Action)


def frame_difference(a: Image.Image, b: Image.Image) -> float:
    """Fraction of pixels, 0..1, that differ by more than PIXEL_TOLERANCE grey levels (1.0 when the
    aspect ratios differ); both images are scaled to at most COMPARE_WIDTH px wide first."""
    if abs(a.width * b.height - b.width * a.height) > max(a.width, b.width):
        return 1.0
    w = min(COMPARE_WIDTH, a.width, b.width)
    h = max(1, round(a.height * w / a.width))
    ga = a.convert("L").resize((w, h), Image.Resampling.BILINEAR)
    gb = b.convert("L").resize((w, h), Image.Resampling.BILINEAR)
    diff = ImageChops.difference(ga, gb).point(lambda v: 255 if v > PIXEL_TOLERANCE else 0)
    return diff.histogram()[255] / (w * h)


@dataclass
class StepReplay:
    """One replayed step: `difference` is of the screen before its actions vs the recorded frame."""

    step: int
    recorded_frame: str | None
    replay_frame: str
    difference: float
    matched: bool
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> str:
        """One line for people: "step 1: matches (0.65% of pixels differ)", or "step 2: DIFFERS (...)"
        with the step's error after it. `difference` is the share of pixels that differ, not a match score."""
        verdict = "matches" if self.matched else "DIFFERS"
        line = f"step {self.step}: {verdict} ({self.difference:.2%} of pixels differ)"
        return f"{line}: {self.error}" if self.error else line


@dataclass
class ReplayResult:
    run_dir: Path
    out_dir: Path
    threshold: float
    steps: list[StepReplay]

    @property
    def matched(self) -> bool:
        return all(s.matched for s in self.steps)

    @property
    def worst(self) -> float:
        return max((s.difference for s in self.steps), default=0.0)


def recorded_actions(step: dict[str, Any], secrets: Mapping[str, str] | None = None) -> tuple[list[Action], list[str]]:
    """(actions to execute, why others are skipped) of one steps.jsonl record. Text that typed a
    secret (recorded as `<secret>NAME</secret>` or `<secret:NAME>`, never its value) is typed again
    with the value from `secrets`; without it that action is skipped."""
    known = secrets or {}
    actions: list[Action] = []
    skipped: list[str] = []
    for rec in step.get("actions") or []:
        kind = (rec.get("action") or {}).get("type", "?")
        if not rec.get("ok", True) or not rec.get("executed"):
            skipped.append(f"{kind}: not executed in the run ({rec.get('error') or 'refused'})")
            continue
        action = rec.get("action")
        text = (action or {}).get("text")
        if isinstance(text, str) and ("<secret" in text):
            try:
                action = {**action, "text": fill_recorded_secrets(text, known)}
            except KeyError as e:
                skipped.append(f"{kind}: typed the secret {e.args[0]}, which the trajectory does not hold "
                               "(pass --secret NAME=VALUE)")
                continue
        try:
            actions.append(_ACTION.validate_python(action))
        except (KeyError, ValidationError) as e:
            raise ArtifactError(f"steps.jsonl step {step.get('step')}: a recorded action is not valid: {e}") from None
    return actions, skipped


def read_recorded_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run to replay, after checking that it and steps.jsonl can be read (`ArtifactError`
    naming the file, line and column otherwise; a missing run.json reads as {})."""
    run, _ = load_run(run_dir)
    return run


def replay_run(run_dir: str | Path, env: Environment, *, out_dir: str | Path | None = None,
               threshold: float = DEFAULT_THRESHOLD, secrets: Mapping[str, str] | None = None) -> ReplayResult:
    """Re-execute `run_dir`'s recorded actions in `env` and write the replay folder (see module).
    `secrets` (name -> value) types the secrets the run typed; the replay's records never hold them."""
    redact = Redactor(secrets or {})
    run_dir = Path(run_dir)
    _, steps = load_run(run_dir)  # checks run.json too, before anything is executed
    if not steps:
        raise ArtifactError(f"{run_dir} has no steps to replay (steps.jsonl missing or empty)")
    out = Path(out_dir) if out_dir is not None else run_dir / f"replay-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        (out / "frames").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(f"the replay's folder {out} cannot be made: {e.strerror or e}") from None
    result = ReplayResult(run_dir, out, threshold, [])
    for step in steps:
        obs = env.observe()
        actions, skipped = recorded_actions(step, secrets)
        entry = _compare(run_dir, out, step["step"], (step.get("obs_before") or {}).get("file"), obs.image, threshold)
        entry.skipped = skipped
        try:
            for i, action in enumerate(actions):
                outcome = env.execute(action, geometry=obs.geometry, settle=i == len(actions) - 1)
                entry.executed += [redact(call) for call in outcome.executed]
                if not outcome.ok:
                    entry.error = redact(str(outcome.error or "the action failed"))
                    break
        except ActionError as e:
            entry.error = redact(str(e))
        result.steps.append(entry)
    final = (steps[-1].get("obs_after") or {}).get("file")
    if final:
        result.steps.append(_compare(run_dir, out, len(steps) + 1, final, env.observe().image, threshold))
    write_replay(result)
    return result


def _compare(run_dir: Path, out: Path, n: int, recorded: str | None, image: Image.Image, threshold: float) -> StepReplay:
    rel = f"frames/step_{n:04d}_replay.png"
    image.save(out / rel, format="PNG", compress_level=1)
    if recorded is None or not (run_dir / recorded).exists():
        return StepReplay(n, recorded, rel, 1.0, False, error="the recorded frame is missing")
    try:
        diff = frame_difference(load_frame(run_dir / recorded), image)
    except OSError as e:  # not an image (PIL's UnidentifiedImageError), truncated, unreadable
        return StepReplay(n, recorded, rel, 1.0, False, error=f"the recorded frame is not a readable image ({e})")
    return StepReplay(n, recorded, rel, round(diff, 6), diff <= threshold)


def write_replay(result: ReplayResult) -> None:
    """`replay.json` and `report.html` in the replay folder."""
    data = {"run_dir": str(result.run_dir), "threshold": result.threshold, "matched": result.matched,
            "worst_difference": result.worst, "steps": [asdict(s) for s in result.steps]}
    tmp = result.out_dir / ".replay.json.part"
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, result.out_dir / "replay.json")
    (result.out_dir / "report.html").write_text(render_replay(result), encoding="utf-8")


def render_replay(result: ReplayResult) -> str:
    """The replay's HTML: per step the difference, the verdict, and recorded vs replayed frames."""
    e = html.escape
    run, steps = load_run(result.run_dir)
    marks = run_marks(steps)
    rows = []
    for s in result.steps:
        verdict = "match" if s.matched else "DIFFERS"
        step_marks = marks[s.step - 1] if s.step - 1 < len(marks) else []
        shots = []
        for label, base, frame in (("recorded", result.run_dir, s.recorded_frame), ("replayed", result.out_dir, s.replay_frame)):
            data = frame_data_url(base / frame) if frame else None
            img = (f'<div class="shot"><img src="{data[0]}" width="{data[1]}" height="{data[2]}" alt="{label}">'
                   f"{overlay(step_marks, data[1], data[2])}</div>") if data else "<p>missing</p>"
            shots.append(f"<figure><figcaption>{label}</figcaption>{img}</figure>")
        name = f"Step {s.step}" if s.step <= len(marks) else "Final screen"
        notes = "".join(f"<li>{e(x)}</li>" for x in [*s.skipped, *([s.error] if s.error else [])])
        rows.append(f'<section class="step {"ok" if s.matched else "bad"}" id="step-{s.step}"><h2>{name}: '
                    f'<span class="v">{verdict}</span> — {s.difference:.2%} of the screen differs</h2>'
                    f'<div class="pair">{"".join(shots)}</div><ul>{notes}</ul>'
                    f'<p class="exec">{e("; ".join(s.executed))}</p></section>')
    verdict = "every step matches" if result.matched else "the screen differs"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>replay</title><style>"
            "body{font:14px system-ui,sans-serif;margin:16px} .pair{display:flex;gap:8px} figure{margin:0;flex:1}"
            ".shot{position:relative} .shot img{width:100%;height:auto;display:block}"
            ".shot svg{position:absolute;inset:0;width:100%;height:100%} .ok .v{color:#0a7d32} .bad .v{color:#b00020}"
            ".step{border:1px solid #ddd;border-radius:8px;padding:10px;margin:12px 0} .exec{color:#555}</style></head><body>"
            f"<h1>Replay of {e(str(run.get('instruction', result.run_dir.name)))}</h1>"
            f"<p>{verdict}: worst difference {result.worst:.2%}, threshold {result.threshold:.2%} "
            f"(pixels differing by more than {PIXEL_TOLERANCE} grey levels). Run: <code>{e(str(result.run_dir))}</code></p>"
            + "".join(rows) + "</body></html>\n")
