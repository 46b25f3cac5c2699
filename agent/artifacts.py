"""The files every finished episode leaves in its run folder, written in one place.

`write_episode_artifacts(run_dir, task_dir=None)` writes `report.html` (self-contained), OSWorld's
`traj.jsonl` and the recording (`recording.mp4`, or `recording.webp` without ffmpeg); the CLI, the
task runner and the library all call it after an episode, so a run folder looks the same whoever
made it. With `task_dir` (the runner's `<out>/<task id>/`, which holds the run folder), OSWorld's
files `traj.jsonl` (its screenshot paths relative to the task folder) and `recording.mp4`
(hard-linked, or copied across file systems) are also placed directly in the task folder. A file that cannot be written is logged and skipped: the trajectory
itself (`steps.jsonl`, frames) is already on disk and is never touched here.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from kimi_agent.errors import ArtifactError

log = logging.getLogger("kimi_agent.artifacts")
#: The files OSWorld expects directly in a task's result folder.
TASK_FILES = ("traj.jsonl", "recording.mp4", "recording.webp")


def write_episode_artifacts(run_dir: str | Path, task_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the run folder's derived files (and place OSWorld's in `task_dir`); returns
    {name: path} of those written in the run folder."""
    from kimi_agent.export import export_osworld
    from kimi_agent.recording import write_recording
    from kimi_agent.report import write_report

    run_dir = Path(run_dir)
    written: dict[str, Path] = {}
    makers: tuple[tuple[str, Callable[[Path], Path | None]], ...] = (
        ("report.html", write_report), ("traj.jsonl", export_osworld), ("recording", write_recording))
    for name, make in makers:
        try:
            made = make(run_dir)
        except (OSError, ValueError, ArtifactError) as e:
            log.warning("could not write %s/%s: %s", run_dir, name, e)
            continue
        if made is not None:
            written[Path(made).name] = Path(made)
    if task_dir is not None:
        _place_task_files(run_dir, Path(task_dir), written)
    return written


def _place_task_files(run_dir: Path, task_dir: Path, written: dict[str, Path]) -> None:
    """OSWorld's traj.jsonl (its screenshot paths relative to the task folder) and the recording."""
    from kimi_agent.export import export_osworld

    for name in TASK_FILES:
        if name not in written:
            continue
        try:
            if name == "traj.jsonl":
                export_osworld(run_dir, out=task_dir / name)
            else:
                place(written[name], task_dir / name)
        except OSError as e:
            log.warning("could not place %s in %s: %s", name, task_dir, e)


def place(src: Path, dest: Path) -> None:
    """Put `src` at `dest` (replacing it): a hard link, or a copy where links cannot be made."""
    if dest.resolve() == src.resolve():
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
