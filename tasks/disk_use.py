"""How much of this machine's disk a folder holds: what a sandboxed worker wrote to the host folders
bound into its sandbox (its home, its staged task folders, its log), which no memory limit covers.

    used = disk_use(Path("runs/tasks/.workers/w0-1"), max_entries=100_000, max_depth=64)
    used.bytes, used.entries, used.problem

Allocated blocks count (a sparse file holds only what it wrote); links are never followed; the walk
goes by file descriptors (tasks/tree_walk.py), so no path length hides a folder. It stops at its
bounds, and a folder it cannot read is a problem too: a worker's tree that cannot be measured is
treated as over its limit (about a second for 100,000 entries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kimi_agent.tasks.tree_walk import TreeTooLarge, walk_tree


@dataclass(frozen=True)
class DiskUse:
    """bytes: allocated (st_blocks x 512); entries: files, folders and others seen; problem: why the
    walk stopped early (its bounds, an unreadable folder; then both counts are lower bounds), or None."""

    bytes: int
    entries: int
    problem: str | None = None


def disk_use(folder: Path, *, max_entries: int, max_depth: int) -> DiskUse:
    """What `folder` and everything below it hold (a folder that is gone holds nothing)."""
    total, entries = 0, 0
    try:
        for e in walk_tree(folder, max_depth=max_depth, max_entries=max_entries):
            entries += 1
            total += e.st.st_blocks * 512
    except FileNotFoundError:
        if entries == 0 and not folder.exists():
            return DiskUse(0, 0)
        return DiskUse(total, entries, "a folder vanished while it was measured")
    except TreeTooLarge as e:
        return DiskUse(total, entries, str(e))
    except OSError as e:
        return DiskUse(total, entries, f"{e.filename or folder} cannot be read: {e.strerror or e}")
    return DiskUse(total, entries)
