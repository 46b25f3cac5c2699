"""Reading a run folder's screenshots safely: a run folder may be damaged or come from elsewhere, so a
frame is read only when it is a regular file (not a FIFO that would block, not a link), of a bounded
size, and decodes to a bounded number of pixels."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from kimi_agent.file_reads import FileTooLargeError, read_regular_file

MAX_FRAME_BYTES = 64 * 1024 * 1024


def load_frame(path: str | Path) -> Image.Image:
    """The frame at `path` as an RGB image; `OSError` saying why when it is not a regular file, too
    large, not an image, or a decompression bomb (more pixels than PIL's `MAX_IMAGE_PIXELS` allows)."""
    try:
        data = read_regular_file(path, MAX_FRAME_BYTES)
    except FileTooLargeError:
        raise OSError(f"{path} is larger than {MAX_FRAME_BYTES // (1024 * 1024)} MiB") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise OSError(f"{path}: {e}") from None
