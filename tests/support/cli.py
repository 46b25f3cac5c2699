"""The `kimi-agent` command run as a user runs it: a subprocess of the installed script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, tmp_path: Path, timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`kimi-agent ARGS` in `tmp_path`, without this shell's display, terminal width or endpoint, and
    with an empty offline model cache there; `extra_env` on top."""
    script = Path(sys.executable).with_name("kimi-agent")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "kimi_agent.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "COLUMNS", "OPENAI_BASE_URL")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", **(extra_env or {}))
    return subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
