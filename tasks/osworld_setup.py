"""Create the OSWorld bridge environment: a virtual environment of its own (default
`.venv-osworld`) with OSWorld's `desktop-env` installed by name without its dependency pins
(`--no-deps`), then the packages its setup controller, getters and metrics import
(`osworld_bridge_requirements.txt`). Nothing of OSWorld's is copied into this repository.

`setup_bridge_env(venv)` is idempotent (an existing, complete environment is kept unless
`force`) and returns a `BridgeEnvReport` with the install time and the environment's size; the
last report is kept in `<venv>/kimi-agent-osworld.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kimi_agent.errors import ConfigError
from kimi_agent.tasks.osworld_bridge import BRIDGE_SCRIPT

DESKTOP_ENV = "desktop-env==1.0.2"
REQUIREMENTS = Path(__file__).with_name("osworld_bridge_requirements.txt")
REPORT_FILE = "kimi-agent-osworld.json"
STEP_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class BridgeEnvReport:
    venv: str
    desktop_env: str
    seconds: float  # wall-clock time of the install (0 when an existing environment was kept)
    size_mb: float  # the environment's disk usage
    reused: bool


def _size_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total / 1e6


def _run(argv: list[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(argv))
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"`{' '.join(argv)}` took longer than {STEP_TIMEOUT_S:g} s") from e
    if r.returncode != 0:
        raise ConfigError(f"`{' '.join(argv)}` failed (exit {r.returncode}):\n{(r.stderr or r.stdout)[-3000:]}")


def read_report(venv: Path) -> BridgeEnvReport | None:
    try:
        return BridgeEnvReport(**json.loads((venv / REPORT_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def setup_bridge_env(venv: Path, *, python: str | None = None, force: bool = False,
                     log: Callable[[str], None] = lambda _: None) -> BridgeEnvReport:
    """Create (or keep) the bridge environment at `venv`; ConfigError names a failed step."""
    venv = venv.absolute()
    done = read_report(venv)
    if done is not None and not force and (venv / "bin" / "python").exists():
        return BridgeEnvReport(**{**asdict(done), "seconds": 0.0, "reused": True})
    if force and venv.exists():
        shutil.rmtree(venv)
    start = time.monotonic()
    _run([python or sys.executable, "-m", "venv", "--clear", str(venv)], log)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "--no-deps", DESKTOP_ENV], log)
    _run([*pip, "-r", str(REQUIREMENTS)], log)
    empty = venv / "kimi-agent-empty"  # the bridge imports every getter and metric module, then lists nothing
    empty.mkdir(exist_ok=True)
    _run([str(venv / "bin" / "python"), str(BRIDGE_SCRIPT), "--inventory", str(empty)], log)
    report = BridgeEnvReport(venv=str(venv), desktop_env=DESKTOP_ENV.split("==")[1],
                             seconds=round(time.monotonic() - start, 1), size_mb=round(_size_mb(venv), 1),
                             reused=False)
    (venv / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    return report
