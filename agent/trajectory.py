"""Trajectory folders: `runs/<YYYYmmdd-HHMMSS>_<slug>/` with run.json, steps.jsonl and frames/.

`steps.jsonl` gets one line per step as soon as the step ends (flushed), so a crash loses nothing
before it; `run.json` is rewritten atomically at start and end. Frames are encoded by a background
thread (PNG at zlib level 1, or JPEG) so no encoding sits on the step's path; `close()` drains the
queue, and it also runs at interpreter exit, so a frame submitted is a frame written.
Every string written passes through the redactor (secret values become `<secret:NAME>`); one
UTF-8 cannot encode (a lone surrogate) is written with a visible backslash escape (`utf8_safe`),
so no string can lose a step.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import queue
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from kimi_agent.errors import ArtifactError
from kimi_agent.file_reads import FileTooLargeError, NotRegularFileError, read_regular_file
from kimi_agent.safety import Redactor

if TYPE_CHECKING:
    from PIL import Image

SCHEMA_VERSION = 1
FrameFormat = Literal["png", "jpeg"]


class Attempt(BaseModel):
    """One generation of a step; every attempt but the last was rejected."""

    reply: str
    temperature: float
    model_ms: float
    error: str | None = None
    kind: str | None = None  # ReplyError kind, or "action" / "safety" for execution refusals


class ActionRecord(BaseModel):
    """One executed (or refused) action with its coordinates in every frame."""

    action: dict[str, Any]
    model_xy: list[list[float]] = Field(default_factory=list, description="as the model wrote them")
    norm_xy: list[list[float]] = Field(default_factory=list, description="fractions of the screenshot")
    exec_xy: list[list[float]] = Field(default_factory=list, description="executor pixels")
    executed: list[str] = Field(default_factory=list)
    ok: bool = True
    error: str | None = None
    exec_ms: float = 0.0
    settle_ms: float = 0.0
    safety: dict[str, Any] | None = None


class StepRecord(BaseModel):
    """One line of steps.jsonl."""

    step: int
    started_at: float
    obs_before: dict[str, Any]
    obs_after: dict[str, Any] | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    reply: dict[str, Any] | None = None
    parsed: dict[str, Any] | None = None
    actions: list[ActionRecord] = Field(default_factory=list)
    durations_ms: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    terminal: str | None = None


def slugify(text: str, max_len: int = 40) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = "-".join(words)[:max_len].strip("-")
    return slug or "episode"


class FrameWriter:
    """Encodes and writes frames on one background thread; `close()` waits for every frame."""

    def __init__(self, *, fmt: FrameFormat = "png", jpeg_quality: int = 90) -> None:
        self.fmt: FrameFormat = fmt
        self.jpeg_quality = jpeg_quality
        self._queue: queue.Queue[tuple[Image.Image, Path] | None] = queue.Queue()
        self._errors: list[str] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kimi-frame-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def suffix(self) -> str:
        return ".jpg" if self.fmt == "jpeg" else ".png"

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def submit(self, image: Image.Image, path: Path) -> None:
        if self._closed:
            raise RuntimeError("frame writer is closed")
        self._queue.put((image, path))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                image, path = item
                tmp = path.with_name(path.name + ".part")
                if self.fmt == "jpeg":
                    image.convert("RGB").save(tmp, format="JPEG", quality=self.jpeg_quality)
                else:
                    image.save(tmp, format="PNG", compress_level=1)
                os.replace(tmp, path)
            except OSError as e:  # disk full, permissions: recorded, reported by the trajectory
                self._errors.append(f"{item[1] if item else '?'}: {e}")
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Write every queued frame, then stop the thread. Idempotent; safe under Ctrl-C."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt:  # a second Ctrl-C must not lose the frames already taken
                continue
        atexit.unregister(self.close)


class Trajectory:
    """One run folder. Write `run.json` with `write_run`, steps with `append_step`, then `close()`."""

    def __init__(self, root: str | Path, instruction: str, *, redactor: Redactor | None = None,
                 frame_format: FrameFormat = "png", started: datetime | None = None) -> None:
        stamp = (started or datetime.now()).strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{stamp}_{slugify(instruction)}"
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        self.path = path
        self.frames_dir = path / "frames"
        self.frames_dir.mkdir()
        self.redact = redactor or Redactor()
        self.writer = FrameWriter(fmt=frame_format)
        self._steps = (path / "steps.jsonl").open("a", encoding="utf-8")
        self._run: dict[str, Any] = {}

    def frame(self, image: Image.Image, step: int, which: str) -> str:
        """Queue `image` for writing; returns its path relative to the run folder."""
        rel = f"frames/step_{step:04d}_{which}{self.writer.suffix}"
        self.writer.submit(image, self.path / rel)
        return rel

    def write_run(self, **fields: Any) -> None:
        """Merge `fields` into run.json and rewrite it atomically."""
        self._run.update(fields)
        self._run.setdefault("schema_version", SCHEMA_VERSION)
        self._run["updated_at"] = time.time()
        tmp = self.path / "run.json.part"
        tmp.write_text(json.dumps(utf8_safe(self.redact.data(self._run)), indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.path / "run.json")

    def append_step(self, record: StepRecord) -> None:
        data = self.redact.data(record.model_dump(mode="json"))
        line = json.dumps(data, ensure_ascii=False, default=str)
        if not _encodes(line):  # a lone surrogate somewhere: written as visible text, the step is kept
            line = json.dumps(utf8_safe(data), ensure_ascii=False, default=str)
        self._steps.write(line + "\n")
        self._steps.flush()

    def close(self) -> None:
        """Flush every frame and the steps file (idempotent)."""
        self.writer.close()
        if not self._steps.closed:
            self._steps.close()
        if self.writer.errors:
            self.write_run(frame_errors=self.writer.errors)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_safe(obj: Any) -> Any:
    """`obj` (JSON-like data) with every string UTF-8 cannot encode (one holding a lone surrogate,
    such as a model's '\\udcff') written with backslash escapes as plain text ('\\\\udcff'), so
    a record that holds one is still written and reads back as text."""
    if isinstance(obj, str):
        return obj if _encodes(obj) else obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {utf8_safe(k): utf8_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [utf8_safe(v) for v in obj]
    return obj


def read_steps(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's steps.jsonl (none when it is missing). A torn last line (a crash
    mid-write: no newline after it) is skipped; any other line that is not a step record (a JSON
    object with an integer "step") is an `ArtifactError` naming the file, the line and the column."""
    path = Path(run_dir) / "steps.jsonl"
    if not path.exists():
        return []
    text = read_text(path)
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):  # torn by a crash while it was appended
                continue
            raise ArtifactError(f"could not read {path}: line {number} is not valid JSON at column "
                                f"{e.colno} ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ArtifactError(f"could not read {path}: line {number} is not a step record "
                                "(a JSON object with an integer \"step\")")
        out.append(record)
    return out


MAX_READ_BYTES = 64 * 2**20  # the most `read_text` reads (a run folder may be written by a sandboxed task)


def read_text(path: Path, *, max_bytes: int = MAX_READ_BYTES) -> str:
    """`path`'s UTF-8 text (newlines as `Path.read_text` gives them); `ArtifactError` naming it when
    it cannot be read, is not UTF-8, is over `max_bytes`, or is not a regular file: a symbolic link,
    FIFO or device is never opened for reading (O_NOFOLLOW | O_NONBLOCK, then fstat), so a planted
    FIFO cannot hang the reader nor a link make it read another file."""
    try:
        data = read_regular_file(path, max_bytes)
    except NotRegularFileError:
        raise ArtifactError(f"could not read {path}: not a regular file") from None
    except FileTooLargeError:
        raise ArtifactError(f"could not read {path}: larger than {max_bytes / 2**20:g} MiB") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ArtifactError(f"could not read {path}: a symbolic link, not a file") from None
        raise ArtifactError(f"could not read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"could not read {path}: not UTF-8 text (byte {e.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
