"""What a recording costs: file size and encoding time per step of a 10-step 1920x1080 run.

Records one real episode first: a headless Chromium (BrowserEnv, 1920x1080 viewport) on a
text-heavy page served locally, driven by the scripted backend (the model's test double) through
clicks, drags and scrolls, so the frames look like real screens. Then encodes its recording
`--repeat` times with each encoder (ffmpeg H.264 mp4, Pillow animated WebP) and prints the median
time, the time per step and the size per step; the report and traj.jsonl times for comparison.

    python bench/recording.py               # 10 steps, 3 repeats
    python bench/recording.py --steps 20 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kimi_agent import Agent, AgentSettings
from kimi_agent.env.browser import BrowserEnv
from kimi_agent.export import export_osworld
from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
from kimi_agent.recording import find_ffmpeg, recording_frames, write_recording
from kimi_agent.report import write_report

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support.page_server import page_server  # the tests' real HTTP server

WORDS = ["agent", "model", "screen", "click", "settings", "browser", "privacy", "track", "request", "page",
         "window", "tab", "frame", "step", "action", "thought", "reply", "token", "image", "patch", "layer",
         "expert", "cache", "prefill", "decode"]


def page(n: int = 120) -> bytes:
    """A long page of headings, paragraphs, tables and coloured boxes (screens that do not compress to nothing)."""
    parts = ["<!doctype html><html><body style='font:18px serif;margin:32px;max-width:1700px'>"]
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(90))
        parts.append(f"<h2 onclick=\"this.style.background='#fd0'\">Section {i}: {WORDS[i % len(WORDS)]}</h2>"
                     f"<p>{text}</p><table border=1 style='border-collapse:collapse'><tr>"
                     + "".join(f"<td style='padding:4px;background:hsl({(i * 40 + k * 25) % 360},70%,85%)'>{k * i}</td>"
                               for k in range(14)) + "</tr></table>")
    parts.append("</body></html>")
    return "".join(parts).encode()


def kimi(action: str, code: str) -> str:
    return f"## Thought\nworking\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"


def record(steps: int, out: Path) -> Path:
    replies = []
    for i in range(steps):
        if i % 3 == 0:
            replies.append(kimi("Scroll down.", f"pyautogui.scroll(-{3 + i % 4}, x=0.5, y=0.5)"))
        elif i % 3 == 1:
            replies.append(kimi("Click a heading.", f"pyautogui.click(x={0.1 + 0.05 * (i % 5):.2f}, y=0.3)"))
        else:
            replies.append(kimi("Select text.", "pyautogui.moveTo(0.2, 0.5)\npyautogui.dragTo(0.6, 0.55)"))
    with (page_server(lambda path: (page(), "text/html")) as base,
          BrowserEnv(headless=True, viewport=(1920, 1080), start_url=f"{base}/doc.html") as env):
        result = Agent(ScriptedBackend(replies), env,
                       AgentSettings(out_dir=out, max_steps=steps)).run_episode("read the document")
    return result.run_dir


def timed(fn: object, repeat: int) -> tuple[float, Path | None]:
    times, made = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        made = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times), made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kimi-bench-recording-") as tmp:
        run = record(args.steps, Path(tmp))
        frames = len(recording_frames(run))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings scale with it)")
        print(f"run: {args.steps} steps at 1920x1080 -> {frames} recording frames (steps + final screen)")
        print(f"{'file':<16}{'median s':>10}{'ms/step':>10}{'size KiB':>10}{'KiB/step':>10}")
        jobs = [("recording.webp", lambda: write_recording(run, encoder="webp")),
                ("report.html", lambda: write_report(run)), ("traj.jsonl", lambda: export_osworld(run))]
        if find_ffmpeg():
            jobs.insert(0, ("recording.mp4", lambda: write_recording(run, encoder="mp4")))
        else:
            print("(no ffmpeg: recording.mp4 skipped)")
        for name, fn in jobs:
            seconds, path = timed(fn, args.repeat)
            size = path.stat().st_size / 1024 if path else 0.0
            print(f"{name:<16}{seconds:>10.2f}{seconds * 1000 / args.steps:>10.0f}{size:>10.0f}{size / args.steps:>10.1f}")


if __name__ == "__main__":
    main()
