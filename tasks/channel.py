"""`Channel`: framed messages between the runner and one worker, over a Unix socket pair.

A message is a JSON object (the header) followed by zero or more binary blobs (screenshots as
raw RGB). On the wire: a 4-byte big-endian header length, the UTF-8 JSON header (which lists the
blob lengths under `_blobs`), then the blobs. Only JSON and raw bytes cross from a worker to the
runner, never pickles: a worker runs untrusted task commands, so the runner bounds every size
and treats what it reads as data. `recv` has an optional timeout; a closed peer raises
`ChannelClosed`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from typing import Any

MAX_HEADER_BYTES = 32 * 1024 * 1024
MAX_BLOB_BYTES = 256 * 1024 * 1024
MAX_BLOBS = 64
PART_TIMEOUT_S = 30.0
_LEN = struct.Struct("!I")


class ChannelClosed(ConnectionError):
    """The other end closed the channel (or sent something malformed)."""


class Channel:
    """Framed send/recv on a connected stream socket; `send` is safe from several threads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def send(self, header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()) -> None:
        body = json.dumps({**header, "_blobs": [len(b) for b in blobs]}, ensure_ascii=False).encode("utf-8")
        with self._send_lock:
            try:
                self.sock.sendall(_LEN.pack(len(body)) + body)
                for blob in blobs:
                    self.sock.sendall(blob)
            except OSError as e:
                raise ChannelClosed(f"channel closed while sending: {e}") from e

    def recv(self, timeout_s: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """The next message; raises TimeoutError after `timeout_s` without one, ChannelClosed at EOF
        or when this end was closed (by another thread: the runner shutting down)."""
        try:
            self.sock.settimeout(timeout_s)
        except OSError as e:
            raise ChannelClosed(f"channel closed: {e}") from e
        try:
            (size,) = _LEN.unpack(self._read(_LEN.size, first=True))
            try:
                self.sock.settimeout(PART_TIMEOUT_S)  # once a message has begun, the rest must follow
            except OSError as e:  # closed by another thread just now (a run being interrupted)
                raise ChannelClosed(f"channel closed: {e}") from e
            if size > MAX_HEADER_BYTES:
                raise ChannelClosed(f"message header of {size} bytes is over the {MAX_HEADER_BYTES} limit")
            try:
                header = json.loads(self._read(size).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ChannelClosed(f"malformed message header: {e}") from e
            lengths = header.pop("_blobs", []) if isinstance(header, dict) else None
            if not isinstance(header, dict) or not isinstance(lengths, list) or len(lengths) > MAX_BLOBS or not all(
                    isinstance(n, int) and 0 <= n <= MAX_BLOB_BYTES for n in lengths):
                raise ChannelClosed("malformed message header (not an object, or bad blob lengths)")
            return header, [self._read(n) for n in lengths]
        finally:
            self._clear_timeout()

    def _clear_timeout(self) -> None:
        try:
            self.sock.settimeout(None)
        except OSError:  # closed by another thread meanwhile: the channel is over, nothing to reset
            return

    def _read(self, n: int, *, first: bool = False) -> bytes:
        chunks: list[bytes] = []
        left = n
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except TimeoutError:
                if first and left == n:
                    raise
                raise ChannelClosed("the peer stopped in the middle of a message") from None
            except OSError as e:
                raise ChannelClosed(f"channel closed: {e}") from e
            if not chunk:
                raise ChannelClosed("the peer closed the channel")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()
