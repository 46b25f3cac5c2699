"""The files every finished episode leaves in its run folder, written in one place.

`write_episode_artifacts(run_dir)` writes `report.html` (self-contained) and OSWorld's
`traj.jsonl`; the CLI, the task runner and the library all call it after an episode, so a run
folder looks the same whoever made it. A file that cannot be written is logged and skipped: the
trajectory itself (`steps.jsonl`, frames) is already on disk and is never touched here.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("kimi_agent.artifacts")


def write_episode_artifacts(run_dir: str | Path) -> dict[str, Path]:
    """Write the run folder's derived files; returns {name: path} of those written."""
    from kimi_agent.export import export_osworld
    from kimi_agent.report import write_report

    run_dir = Path(run_dir)
    written: dict[str, Path] = {}
    for name, make in (("report.html", write_report), ("traj.jsonl", export_osworld)):
        try:
            made = make(run_dir)
        except (OSError, ValueError) as e:
            log.warning("could not write %s/%s: %s", run_dir, name, e)
            continue
        written[name] = Path(made) if made is not None else run_dir / name
    return written
