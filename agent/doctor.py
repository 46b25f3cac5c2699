"""`kimi-agent doctor`: check what an episode needs and say how to fix what is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def _which(name: str, fix: str, *, optional: bool = False) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or "not found", "" if path else fix, optional)


def _module(name: str, fix: str) -> Check:
    found = importlib.util.find_spec(name) is not None
    return Check(f"python: {name}", found, "installed" if found else "missing", "" if found else fix)


def _chromium() -> Check:
    from kimi_agent.env.chromium import find_chromium
    from kimi_agent.errors import EnvironmentStartError

    try:
        return Check("chromium", True, find_chromium())
    except EnvironmentStartError:
        return Check("chromium", False, "not found", "apt-get install chromium (or set KIMI_AGENT_CHROMIUM=/path)")


def _display() -> Check:
    display = os.environ.get("DISPLAY")
    if not display:
        ok = shutil.which("Xvfb") is not None
        return Check("display", ok, "$DISPLAY not set: episodes start a private Xvfb" if ok else "no $DISPLAY and no Xvfb",
                     "" if ok else "apt-get install xvfb, or run on a desktop with $DISPLAY set", optional=ok)
    try:
        from Xlib import display as xdisplay
        from Xlib.error import DisplayError

        try:
            d = xdisplay.Display(display)
            screen = d.screen()
            detail = f"{display}: {screen.width_in_pixels}x{screen.height_in_pixels}"
            d.close()
            return Check("display", True, detail)
        except (DisplayError, OSError) as e:
            return Check("display", False, f"{display}: {e}", "check $DISPLAY / XAUTHORITY, or unset DISPLAY to use Xvfb")
    except ImportError:
        return Check("display", False, "python-xlib missing", "pip install python-xlib==0.33")


def _gpu() -> Check:
    from kimi_agent.model_runtime.device import device_info

    info = device_info()
    if info.torch_version is None:
        return Check("gpu", False, "torch not installed", "pip install torch==2.13.0 (CUDA build for a GPU), "
                     "or use --endpoint with a vLLM server", optional=True)
    if info.cuda_device is not None:
        return Check("gpu", True, f"{info.cuda_device}, torch {info.torch_version}, CUDA {info.cuda_version}")
    return Check("gpu", False, f"torch {info.torch_version}: no CUDA device",
                 "the native backend needs an NVIDIA GPU; otherwise use --endpoint URL", optional=True)


def _model(model: str) -> Check:
    p = Path(model).expanduser()
    local = Path("~/models") / model.rstrip("/").rsplit("/", 1)[-1]
    fix = (f"hf download {model} --local-dir {local}, then pass --model {local}; or --endpoint URL "
           "(an OpenAI-compatible server)" if not p.exists() and "/" in model and not model.startswith((".", "/", "~"))
           else "pass --model DIR (a complete local snapshot), or --endpoint URL (an OpenAI-compatible server)")
    if p.exists():
        snapshot: Path | None = p
    else:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model, "config.json")
        snapshot = Path(hit).parent if isinstance(hit, str) else None
    if snapshot is None or not (snapshot / "config.json").is_file():
        return Check("model", False, f"{model}: no local config.json", fix, optional=True)
    from kimi_agent.errors import WeightLoadError
    from kimi_agent.model_runtime.hub import INDEX_FILE, parse_index

    index = snapshot / INDEX_FILE
    if index.is_file():
        try:  # the loader's own checks: shard names stay plain file names inside the snapshot
            shards = set(parse_index(index).values())
        except WeightLoadError as e:
            return Check("model", False, str(e), "re-download the snapshot (its index is damaged)", optional=True)
        missing = [s for s in shards if not (snapshot / s).is_file()]
        if missing:
            return Check("model", False, f"{snapshot}: {len(missing)}/{len(shards)} weight shards missing", fix, optional=True)
        return Check("model", True, f"{snapshot} ({len(shards)} shards)")
    has = any(snapshot.glob("*.safetensors"))
    return Check("model", has, str(snapshot) + ("" if has else ": no *.safetensors"), "" if has else fix, optional=True)


def run_checks(*, model: str) -> list[Check]:
    return [
        _module("playwright", "pip install playwright (no `playwright install` needed: the system Chromium is used)"),
        _module("pyautogui", "pip install pyautogui (and python3-tk for Debian's python)"),
        _module("mss", "pip install mss"),
        _module("tkinter", "apt-get install python3-tk (pyautogui exits without it)"),
        _chromium(),
        _which("Xvfb", "apt-get install xvfb (needed when there is no $DISPLAY)", optional=True),
        _which("xdotool", "apt-get install xdotool", optional=True),
        _which("openbox", "apt-get install openbox (a window manager for Xvfb desktops)", optional=True),
        _which("xclip", "apt-get install xclip (typing non-ASCII text pastes it)", optional=True),
        _which("ffmpeg", "apt-get install ffmpeg (recording.mp4; without it, an animated recording.webp)",
               optional=True),
        _display(),
        _gpu(),
        _model(model),
    ]


def print_checks(checks: list[Check], console: Console) -> None:
    """A table on a terminal; elsewhere (a file, a pipe) one plain line a check, tab-separated:
    name, status, detail, fix (what grep and a log read best)."""
    if not console.is_terminal:
        for c in checks:
            status = "ok" if c.ok else ("optional" if c.optional else "missing")
            console.file.write("\t".join((c.name, status, c.detail, c.fix)).rstrip() + "\n")
        return
    table = Table(title="kimi-agent doctor")
    for col in ("check", "status", "detail", "how to fix"):
        table.add_column(col)
    for c in checks:
        status = "[green]ok[/]" if c.ok else ("[yellow]optional[/]" if c.optional else "[red]missing[/]")
        table.add_row(c.name, status, c.detail, c.fix)
    console.print(table)
