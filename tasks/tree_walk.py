"""Walking, copying and removing folder trees that a sandboxed task could write: by file descriptors,
never following a link, with bounded depth, entries and open descriptors.

    for e in walk_tree(staged, max_depth=64, max_entries=100_000):   # TreeTooLarge past either
        e.rel, e.name, e.dir_fd, e.st
    notes = copy_tree(staged, final, max_depth=64, max_entries=100_000, max_bytes=8 << 30)
    remove_tree(staged)                                                # any depth, one folder open

A task's folder leaves its worker's sandbox as a copy (`copy_tree`) into a folder only the runner
writes: regular files and folders only, without set-id bits. Moving the folder itself would keep it
reachable by a task process whose working folder (or an open descriptor) is inside it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
COPY_CHUNK = 1 << 20
MAX_NOTES = 50  # notes copy_tree returns at most (then the first ones, a count and the last)


class TreeTooLarge(Exception):
    """A tree nested deeper, or holding more entries, than a walk allows (one sentence)."""


@dataclass(frozen=True)
class Entry:
    """One entry of a walk: `rel` is its path below the top ("a/b/name"), `dir_fd` its folder's
    descriptor (valid until the walk moves on), `st` its lstat."""

    rel: str
    name: str
    dir_fd: int
    st: os.stat_result


def walk_tree(top: Path, *, max_depth: int, max_entries: int) -> Iterator[Entry]:
    """Every entry below `top`, depth first, a folder before its contents, holding at most one
    descriptor per level; raises TreeTooLarge past `max_depth` levels or `max_entries` entries, and
    OSError when `top` is not a folder. Entries that vanish meanwhile are skipped."""
    top_fd = os.open(top, DIR_FLAGS)
    stack: list[tuple[int, str, Any]] = []  # (folder descriptor, its path below top, its os.scandir)
    try:
        stack.append((top_fd, "", os.scandir(top_fd)))
        count = 0
        while stack:
            fd, rel, it = stack[-1]
            item = next(it, None)
            if item is None:
                it.close()
                os.close(fd)
                stack.pop()
                continue
            count += 1
            if count > max_entries:
                raise TreeTooLarge(f"more than {max_entries} files and folders")
            try:
                st = os.stat(item.name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield Entry(rel + item.name, item.name, fd, st)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if len(stack) >= max_depth:
                raise TreeTooLarge(f"folders nested more than {max_depth} deep")
            try:
                child = os.open(item.name, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # gone, or swapped for a non-folder
                    continue
                raise
            try:
                stack.append((child, f"{rel}{item.name}/", os.scandir(child)))
            except OSError:
                os.close(child)
                raise
    finally:
        for fd, _, it in stack:
            it.close()
            os.close(fd)


def kind_of(mode: int) -> str:
    """What an entry of this `st_mode` is, in words ("symbolic link", "FIFO", ...)."""
    kinds = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _copy_file(name: str, dir_fd: int, target: Path, limit: int) -> int:
    """Copy regular file `name` of folder `dir_fd` to a new file `target` (mode kept, set-id bits
    dropped), at most `limit` bytes and at most its size when opened; returns the bytes copied.
    OSError when it is no longer a regular file or `target` exists."""
    src = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"no longer a regular file ({kind_of(st.st_mode)})")
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode) & 0o777)
        try:
            left = min(st.st_size, limit)
            while left > 0 and (chunk := os.read(src, min(COPY_CHUNK, left))):
                os.write(dst, chunk)
                left -= len(chunk)
            return min(st.st_size, limit) - left
        finally:
            os.close(dst)
    finally:
        os.close(src)


def copy_tree(src: Path, dst: Path, *, max_depth: int, max_entries: int, max_bytes: int) -> list[str]:
    """Copy `src`'s folders and regular files into the new folder `dst` (created here; only this
    process writes there): links, FIFOs, sockets and devices are left out, set-id bits dropped, files
    cut at `max_bytes` in all, the walk stopped at its bounds. Returns notes on what was left out or
    changed ("left out <rel> (<kind>)", "dropped the set-id bits of <rel>", ...; at most MAX_NOTES + 1,
    the last one kept). OSError when `src` is not a folder."""
    dst.mkdir(mode=0o755)
    notes: list[str] = []
    copied = 0
    try:
        for e in walk_tree(src, max_depth=max_depth, max_entries=max_entries):
            mode = e.st.st_mode
            target = dst / e.rel
            try:
                if stat.S_ISDIR(mode):
                    target.mkdir(mode=0o755)
                elif not stat.S_ISREG(mode):
                    notes.append(f"left out {e.rel} ({kind_of(mode)})")
                    continue
                elif copied >= max_bytes:
                    notes.append(f"left out {e.rel} (over {max_bytes >> 20} MiB in all)")
                    continue
                else:
                    n = _copy_file(e.name, e.dir_fd, target, max_bytes - copied)
                    copied += n
                    if n < e.st.st_size:
                        notes.append(f"cut {e.rel} at {n} of its {e.st.st_size} bytes")
                if mode & (stat.S_ISUID | stat.S_ISGID):
                    notes.append(f"dropped the set-id bits of {e.rel}")
            except OSError as err:
                notes.append(f"left out {e.rel} ({err.strerror or err})")
    except TreeTooLarge as err:
        notes.append(f"stopped copying: {err}")
    if len(notes) > MAX_NOTES:  # a task's result stays small whatever it planted
        notes[MAX_NOTES - 1:] = [f"... and {len(notes) - MAX_NOTES + 1} more like these", notes[-1]]
    return notes


def remove_tree(path: Path) -> None:
    """Remove `path` (a folder and everything below it, or a file or link) at any depth, holding one
    folder descriptor at a time and never following a link. Climbing back up checks each folder is
    the one it went down from; OSError when the tree changed under it (e.g. a folder moved away)."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        path.unlink(missing_ok=True)
        return
    fd = os.open(path, DIR_FLAGS)
    trail: list[tuple[str, int, int]] = []  # (name of each folder gone into, its parent's dev and inode)
    try:
        while True:
            child = None
            with os.scandir(fd) as it:
                for item in it:
                    if item.is_dir(follow_symlinks=False):
                        try:
                            child = os.open(item.name, DIR_FLAGS, dir_fd=fd)
                        except OSError as e:
                            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                                raise
                            if e.errno != errno.ENOENT:
                                os.unlink(item.name, dir_fd=fd)  # swapped for a link or a file
                            continue
                        here = os.fstat(fd)
                        trail.append((item.name, here.st_dev, here.st_ino))
                        break
                    try:
                        os.unlink(item.name, dir_fd=fd)
                    except FileNotFoundError:
                        continue
            if child is not None:
                os.close(fd)
                fd = child
                continue
            if not trail:
                break
            name, dev, ino = trail.pop()
            parent = os.open("..", DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            up = os.fstat(fd)
            if (up.st_dev, up.st_ino) != (dev, ino):
                raise OSError(errno.ESTALE, "a folder was moved while its tree was being removed", str(path))
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)
