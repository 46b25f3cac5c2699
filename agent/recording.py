"""An episode's animation: one frame per step (the screen the model acted on, with its click,
drag path and scroll arrow drawn) plus the final screenshot, shown one second each.

`write_recording(run_dir)` reads steps.jsonl and frames/ after the episode (never on the step's
path) and writes `recording.mp4` with Debian's ffmpeg (H.264, yuv420p, even dimensions, at most
`MAX_WIDTH` px wide; raw RGB frames piped to one subprocess with a bounded wait), or an animated
`recording.webp` with Pillow when ffmpeg is missing. Nothing is written when the run has no frame.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont

from kimi_agent.errors import ArtifactError
from kimi_agent.frame_files import load_frame
from kimi_agent.markers import Mark, run_marks
from kimi_agent.trajectory import read_steps

MAX_WIDTH = 1280
FPS = 1  # one step per second
FFMPEG_TIMEOUT_S = 60.0  # plus PER_FRAME_TIMEOUT_S for each frame
PER_FRAME_TIMEOUT_S = 2.0
OK_COLOUR, REFUSED_COLOUR = (224, 24, 45), (128, 128, 128)
Encoder = Literal["auto", "mp4", "webp"]


@dataclass(frozen=True, slots=True)
class RecordingFrame:
    """One frame of the animation: a screenshot file, the marks drawn on it and its caption."""

    path: Path
    marks: tuple[Mark, ...]
    caption: str


def recording_frames(run_dir: str | Path) -> list[RecordingFrame]:
    """Each step's pre-action screenshot with its marks, then the screen after the last action
    (the last step's post-action frame; none extra when the last step acted on nothing)."""
    run_dir = Path(run_dir)
    steps = read_steps(run_dir)
    out: list[RecordingFrame] = []
    for step, marks in zip(steps, run_marks(steps), strict=True):
        frame = (step.get("obs_before") or {}).get("file")
        if not frame or not (run_dir / frame).exists():
            continue
        what = ", ".join(m.label for m in marks) or _action_label(step)
        out.append(RecordingFrame(run_dir / frame, tuple(marks), f"step {step['step']}: {what}"))
    final = ((steps[-1].get("obs_after") or {}).get("file")) if steps else None
    if final and (run_dir / final).exists() and run_dir / final not in {f.path for f in out}:
        out.append(RecordingFrame(run_dir / final, (), "final screen"))
    return out


def _action_label(step: dict[str, Any]) -> str:
    actions = ((step.get("parsed") or {}).get("actions")) or []
    return ", ".join(str(a.get("type")) for a in actions) or ("rejected reply" if step.get("error") else "no action")


def output_size(width: int, height: int, max_width: int = MAX_WIDTH) -> tuple[int, int]:
    """(w, h) scaled down to at most `max_width` px wide, keeping the aspect ratio, both even."""
    scale = min(1.0, max_width / width)
    w, h = max(2, int(width * scale)), max(2, round(height * scale))
    return w - w % 2, h - h % 2


def render_frame(frame: RecordingFrame, size: tuple[int, int]) -> Image.Image:
    """The screenshot scaled to `size` (w, h) px, RGB, with its marks and caption drawn."""
    image = load_frame(frame.path).resize(size, Image.Resampling.BILINEAR)
    draw_marks(image, frame.marks)
    _caption(image, frame.caption)
    return image


def draw_marks(image: Image.Image, marks: tuple[Mark, ...] | list[Mark]) -> None:
    """Draw clicks (ring and dot), drag paths (line with an arrowhead) and scroll arrows in place."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    r = max(8, w // 80)  # ring radius, px
    line = max(2, w // 400)
    for m in marks:
        colour = OK_COLOUR if m.ok else REFUSED_COLOUR
        pts = [(x * w, y * h) for x, y in m.points]
        if m.kind == "drag":
            draw.line(pts, fill=colour, width=line + 1)
            _ring(draw, pts[0], r // 2, colour, line)
            _arrowhead(draw, pts[-2], pts[-1], r, colour)
        elif m.kind == "scroll" and m.direction is not None:
            (x, y), (dx, dy) = pts[0], m.direction
            end = (x + dx * r * 5, y + dy * r * 5)
            _ring(draw, (x, y), r // 2, colour, line)
            draw.line([(x, y), end], fill=colour, width=line + 1)
            _arrowhead(draw, (x, y), end, r, colour)
        else:
            _ring(draw, pts[0], r, colour, line)
            draw.ellipse([pts[0][0] - line * 1.5, pts[0][1] - line * 1.5, pts[0][0] + line * 1.5,
                          pts[0][1] + line * 1.5], fill=colour)


def _ring(draw: ImageDraw.ImageDraw, p: tuple[float, float], r: float, colour: tuple[int, int, int], width: int) -> None:
    draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], outline=colour, width=width)


def _arrowhead(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], size: float,
               colour: tuple[int, int, int]) -> None:
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    left = (b[0] - size * math.cos(angle - 0.5), b[1] - size * math.sin(angle - 0.5))
    right = (b[0] - size * math.cos(angle + 0.5), b[1] - size * math.sin(angle + 0.5))
    draw.polygon([b, left, right], fill=colour)


def _caption(image: Image.Image, text: str) -> None:
    size = max(12, image.width // 64)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text, font=font)
    draw.rectangle([0, 0, box[2] + size, box[3] + size // 2], fill=(0, 0, 0))
    draw.text((size // 2, size // 4), text, fill=(255, 255, 255), font=font)


def find_ffmpeg() -> str | None:
    """The ffmpeg executable (Debian's /usr/bin/ffmpeg, or one on PATH), or None."""
    return shutil.which("ffmpeg") or ("/usr/bin/ffmpeg" if os.access("/usr/bin/ffmpeg", os.X_OK) else None)


def write_recording(run_dir: str | Path, *, encoder: Encoder = "auto") -> Path | None:
    """Write `recording.mp4` (ffmpeg) or `recording.webp` (Pillow, when ffmpeg is missing or
    `encoder="webp"`) into the run folder; returns its path, or None when the run has no frame.
    Raises ArtifactError when a frame is not a readable image, or ffmpeg fails or runs past its time
    bound (no partial file is left)."""
    run_dir = Path(run_dir)
    frames = recording_frames(run_dir)
    if not frames:
        return None
    try:
        size = output_size(*load_frame(frames[0].path).size)
    except OSError as e:
        raise ArtifactError(f"{frames[0].path} is not a readable image ({e})") from None
    ffmpeg = find_ffmpeg() if encoder != "webp" else None
    if encoder == "mp4" and ffmpeg is None:
        raise ArtifactError("recording.mp4 needs ffmpeg (Debian package ffmpeg); none found")
    if ffmpeg is None:
        return _write_webp(run_dir / "recording.webp", frames, size)
    return _write_mp4(ffmpeg, run_dir / "recording.mp4", frames, size)


def _rendered(frames: list[RecordingFrame], size: tuple[int, int]) -> Iterator[Image.Image]:
    """Each frame rendered; `ArtifactError` naming a frame that is not a readable image."""
    for frame in frames:
        try:
            image = render_frame(frame, size)
        except OSError as e:  # PIL's UnidentifiedImageError, a truncated file, a read error
            raise ArtifactError(f"{frame.path} is not a readable image ({e})") from None
        yield image


def _write_mp4(ffmpeg: str, path: Path, frames: list[RecordingFrame], size: tuple[int, int]) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-framerate", str(FPS), "-i", "pipe:0",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-tune", "stillimage",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
    timeout = FFMPEG_TIMEOUT_S + PER_FRAME_TIMEOUT_S * len(frames)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        proc.kill()

    timer = threading.Timer(timeout, stop)  # bounds the whole feed + encode, a stuck pipe included
    timer.start()
    feed_error: OSError | None = None
    bad_frame: ArtifactError | None = None
    try:
        for image in _rendered(frames, size):
            proc.stdin.write(image.tobytes())  # [h, w, 3] uint8, row-major
    except ArtifactError as e:  # a frame that cannot be read: not ffmpeg's doing; no partial video
        bad_frame = e
        proc.kill()
    except OSError as e:  # BrokenPipeError: ffmpeg died or was stopped; its stderr says why
        feed_error = e
    finally:
        try:
            _, err = proc.communicate()  # closes stdin, waits for the encoder
        finally:
            timer.cancel()
    if bad_frame is not None:
        tmp.unlink(missing_ok=True)
        raise bad_frame
    if stopped.is_set():
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"{path}: ffmpeg ran past {timeout:g} s and was stopped")
    if proc.returncode != 0 or feed_error is not None:
        tmp.unlink(missing_ok=True)
        detail = err.decode("utf-8", "replace").strip()[-500:] or str(feed_error)
        raise ArtifactError(f"{path}: ffmpeg exited with {proc.returncode}: {detail}")
    os.replace(tmp, path)
    return path


def _write_webp(path: Path, frames: list[RecordingFrame], size: tuple[int, int]) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    images = list(_rendered(frames, size))
    images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], duration=1000 // FPS, loop=0,
                   quality=70, method=4)
    os.replace(tmp, path)
    return path
