"""How much of this machine's disk a folder holds: what a sandboxed worker wrote to the host folders
bound into its sandbox (its home, its staged task folders, its log), which no memory limit covers.

    used = disk_use(Path("runs/tasks/.workers/w0-1"), max_entries=100_000)
    used.bytes, used.entries, used.truncated

Allocated blocks count (a sparse file holds only what it wrote); links are never followed. The walk
stops at `max_entries` (a task that makes millions of empty files is itself over a limit, and the
walk stays bounded: about a second for 100,000 entries).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiskUse:
    """bytes: allocated (st_blocks x 512); entries: files, folders and others seen; truncated: the
    walk stopped at its cap (then both are lower bounds)."""

    bytes: int
    entries: int
    truncated: bool


def disk_use(folder: Path, max_entries: int) -> DiskUse:
    """What `folder` and everything below it hold (a folder that is gone holds nothing); entries that
    vanish during the walk are skipped."""
    total, entries = 0, 0
    todo = [str(folder)]
    while todo:
        try:
            it = os.scandir(todo.pop())
        except OSError:  # gone, or no longer a folder
            continue
        with it:
            for entry in it:
                entries += 1
                if entries > max_entries:
                    return DiskUse(total, entries, True)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
    return DiskUse(total, entries, False)
