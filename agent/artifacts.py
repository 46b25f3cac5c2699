"""The files every finished episode leaves in its run folder, written in one place.

`write_episode_artifacts(run_dir, task_dir=None)` writes `report.html` (self-contained), OSWorld's
`traj.jsonl` and the recording (`recording.mp4`, or `recording.webp` without ffmpeg); the CLI, the
task runner and the library all call it after an episode, so a run folder looks the same whoever
made it. With `task_dir` (the runner's `<out>/<task id>/`, which holds the run folder), OSWorld's
files `traj.jsonl` (its screenshot paths relative to the task folder) and `recording.mp4`
(hard-linked, or copied across file systems) are also placed directly in the task folder. A file that cannot be written is logged and skipped: the trajectory
itself (`steps.jsonl`, frames) is already on disk and is never touched here. With `strict=True`
(`kimi-agent report`, where writing them is the whole point) every file is still tried, then one
`ArtifactError` names each that could not be written and why (e.g. a run.json that is not JSON, or
screenshots missing while report.html holds them).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from kimi_agent.errors import ArtifactError

log = logging.getLogger("kimi_agent.artifacts")
#: The files OSWorld expects directly in a task's result folder.
TASK_FILES = ("traj.jsonl", "recording.mp4", "recording.webp")
RECORDINGS = ("recording.mp4", "recording.webp")


def write_episode_artifacts(run_dir: str | Path, task_dir: str | Path | None = None, *,
                            strict: bool = False) -> dict[str, Path]:
    """Write the run folder's derived files (and place OSWorld's in `task_dir`); returns
    {name: path} of those written in the run folder. A file that cannot be written is logged and
    skipped, or with `strict` reported by one `ArtifactError` after the others were written."""
    from kimi_agent.export import export_osworld
    from kimi_agent.recording import write_recording
    from kimi_agent.report import load_run, missing_frames, write_report

    run_dir = Path(run_dir)
    try:  # unreadable inputs: write nothing (a partial traj.jsonl or recording would replace a whole one)
        _, steps = load_run(run_dir)
    except ArtifactError as e:
        if strict:
            raise
        log.warning("could not write the report, traj.jsonl or recording of %s: %s", run_dir, e)
        return {}
    missing = missing_frames(run_dir, steps)
    written: dict[str, Path] = {}
    failed: list[str] = []
    makers: tuple[tuple[str, Callable[[Path], Path | None]], ...] = (
        ("report.html", write_report), ("traj.jsonl", export_osworld), ("recording", write_recording))
    for name, make in makers:
        if name == "recording" and missing and any((run_dir / n).is_file() for n in RECORDINGS):
            log.warning("kept the existing recording of %s: %d screenshot(s) are missing from it", run_dir, len(missing))
            continue
        try:
            made = make(run_dir)
        except (OSError, ValueError, ArtifactError) as e:
            if strict:
                failed.append(f"could not write {run_dir / name}: {e}")
            else:
                log.warning("could not write %s/%s: %s", run_dir, name, e)
            continue
        if made is not None:
            written[Path(made).name] = Path(made)
    if task_dir is not None:
        _place_task_files(run_dir, Path(task_dir), written)
    if failed:
        raise ArtifactError("; ".join(failed))
    return written


def _place_task_files(run_dir: Path, task_dir: Path, written: dict[str, Path]) -> None:
    """OSWorld's traj.jsonl (its screenshot paths relative to the task folder) and the recording,
    each written to a fresh temporary file that replaces its name: never through a link."""
    from kimi_agent.export import export_osworld

    for name in TASK_FILES:
        if name not in written:
            continue
        try:
            if name == "traj.jsonl":
                tmp = _fresh_temp(task_dir / name)
                try:
                    export_osworld(run_dir, out=tmp)
                    os.replace(tmp, task_dir / name)
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                place(written[name], task_dir / name)
        except (OSError, ArtifactError) as e:
            log.warning("could not place %s in %s: %s", name, task_dir, e)


def _fresh_temp(dest: Path) -> Path:
    """A new empty file next to `dest` under a random name (O_CREAT|O_EXCL|O_NOFOLLOW: never an
    existing file or link), for a write that then replaces `dest`."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(tmp)


def place(src: Path, dest: Path) -> None:
    """Put `src` (a regular file, not a link) at `dest`, replacing `dest` itself (a link there is
    replaced, never written through): a hard link, or a copy where links cannot be made."""
    if dest.parent.resolve() / dest.name == src.parent.resolve() / src.name:
        return
    if not stat.S_ISREG(os.lstat(src).st_mode):
        raise OSError(f"{src} is not a regular file")
    tmp = _fresh_temp(dest)
    try:
        tmp.unlink()
        try:
            os.link(src, tmp, follow_symlinks=False)  # fails if anything took the name meanwhile
        except OSError:
            with open(src, "rb", opener=_no_follow) as fin, open(tmp, "xb", opener=_no_follow) as fout:
                shutil.copyfileobj(fin, fout)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
