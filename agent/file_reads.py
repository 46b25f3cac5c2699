"""Bounded reads of files that untrusted parties may have written or planted (run folders a sandboxed
task wrote, task files, damaged runs): only a regular file is read, so a FIFO cannot block the reader
nor a device feed it forever, and at most a given number of bytes."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFileError(OSError):
    """The path is a FIFO, socket, device or folder."""


class FileTooLargeError(OSError):
    """The file holds more than the bytes its reader allows."""


def read_regular_file(path: str | Path, max_bytes: int, *, follow_links: bool = False) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes`. It is opened non-blocking (a FIFO
    never blocks the open) and checked with fstat before any read; without `follow_links` a symbolic
    link is refused (OSError ELOOP). Raises `NotRegularFileError`, `FileTooLargeError` or the
    OSError of the open or read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
        chunks, size = [], 0
        while size <= max_bytes and (chunk := os.read(fd, min(2**20, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise FileTooLargeError(f"{path} is larger than {max_bytes} bytes")
    return b"".join(chunks)
