"""Export a run as OSWorld's `traj.jsonl` (one line per step, the post-action frame per line)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kimi_agent.trajectory import read_steps


def osworld_action(step: dict[str, Any]) -> str:
    """What OSWorld logs as `action`: the executed code, or DONE / FAIL / WAIT."""
    parsed = step.get("parsed") or {}
    actions = parsed.get("actions") or []
    if actions and actions[-1].get("type") == "done":
        return "DONE" if actions[-1].get("status") == "success" else "FAIL"
    if actions and all(a.get("type") == "wait" for a in actions):
        return "WAIT"
    return str(parsed.get("code") or "")


def export_osworld(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write `traj.jsonl` (OSWorld's lib_run_single format) into the run folder, or at `out`;
    `screenshot_file` paths are relative to the folder the file is in. Returns its path."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / "traj.jsonl"
    lines = []
    for step in read_steps(run_dir):
        parsed = step.get("parsed") or {}
        frame = (step.get("obs_after") or step.get("obs_before") or {}).get("file")
        action = osworld_action(step)
        lines.append(json.dumps({
            "step_num": step["step"],
            "action_timestamp": step.get("started_at"),
            "action": action,
            "natural_language_action": parsed.get("action_text"),
            "response": (step.get("reply") or {}).get("text"),
            "reward": 0,
            "done": action in ("DONE", "FAIL"),
            "info": {"error": step.get("error"), "executed": [e for a in step.get("actions", []) for e in a.get("executed", [])]},
            "screenshot_file": None if frame is None else os.path.relpath(run_dir / frame, path.parent),
        }, ensure_ascii=False))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
