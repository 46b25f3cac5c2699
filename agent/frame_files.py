"""Reading a run folder's screenshots safely: a run folder may be damaged or come from elsewhere, so a
frame is read only when it is a regular file (not a FIFO that would block, not a link), of a bounded
size, and decodes to a bounded number of pixels."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from PIL import Image

MAX_FRAME_BYTES = 64 * 1024 * 1024


def load_frame(path: str | Path) -> Image.Image:
    """The frame at `path` as an RGB image; `OSError` saying why when it is not a regular file, too
    large, not an image, or a decompression bomb (more pixels than PIL's `MAX_IMAGE_PIXELS` allows)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = f.read(MAX_FRAME_BYTES + 1)
    if len(data) > MAX_FRAME_BYTES:
        raise OSError(f"{path} is larger than {MAX_FRAME_BYTES // (1024 * 1024)} MiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise OSError(f"{path}: {e}") from None
