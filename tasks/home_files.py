"""Files that setup steps write at paths a task file gives (`download`'s `files[i].path`,
`execute`'s `stdout`/`stderr`): always inside the worker's home, never through a symlink.

Outside the bubblewrap sandbox (`--no-sandbox`) the home is a folder of this machine, so a path is
checked twice: lexically (`home_relative`, also at load time) and while it is opened, one folder at
a time with `O_NOFOLLOW` relative to the folder before, so a symlink planted by an earlier step
cannot redirect the write. The bytes go to a temporary file in the target's folder that is renamed
over the target at the end: a hard link or FIFO planted at the target is replaced, not written into.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from kimi_agent.errors import SetupStepError
from kimi_agent.tasks.context import VM_HOME

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def home_relative(path: str) -> PurePosixPath | None:
    """A task file's path (`/home/user/x`, `~/x`, or relative to the home) as a path relative to
    the home, with `.` and `..` resolved lexically; None when it is elsewhere or leaves the home
    (`/tmp/x`, `/home/user/../x`, `../x`), or is the home itself."""
    if path == VM_HOME or path.startswith(VM_HOME + "/"):
        rel = path[len(VM_HOME):]
    elif path == "~" or path.startswith("~/"):
        rel = path[1:]
    elif path.startswith("/"):
        return None
    else:
        rel = path
    rel = posixpath.normpath(rel.lstrip("/") or ".")  # a `..` left over climbs above the home
    if rel in (".", "..") or rel.startswith("../"):
        return None
    return PurePosixPath(rel)


def _open_folder(parent_fd: int, name: str, field: str, path: str) -> int:
    """The folder `name` inside `parent_fd`, made if missing; SetupStepError when it is a symlink
    or not a folder."""
    with suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SetupStepError(f"{field} {path!r}: {name!r} on the way is a symlink or not a folder") from None
        raise


@contextmanager
def write_in_home(home: Path, field: str, path: str) -> Iterator[BinaryIO]:
    """A binary file to write the task's file `path` (named `field` in errors, e.g. `files[0].path`)
    inside `home`: the bytes replace the target when the block ends without an error, and are
    dropped otherwise. SetupStepError when `path` is outside the home, when a folder on the way or
    the target is a symlink, or when the target is a folder."""
    rel = home_relative(path)
    if rel is None:
        raise SetupStepError(f"{field} {path!r} is outside the home folder")
    *folders, name = rel.parts
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            inner = _open_folder(fd, folder, field, path)
            os.close(fd)
            fd = inner
        with suppress(FileNotFoundError):
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
                raise SetupStepError(f"{field} {path!r} is a {'symlink' if stat.S_ISLNK(mode) else 'folder'}")
        temp = f".kimi-write-{secrets.token_hex(8)}"
        out = os.fdopen(os.open(temp, _NEW_FILE_FLAGS, 0o666, dir_fd=fd), "wb")
        try:
            with out:
                yield out
            os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces the entry, follows nothing
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=fd)
            raise
    finally:
        os.close(fd)
