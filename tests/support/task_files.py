"""Task files the sandbox tests write (a task scored by what a shell command prints, a shell step),
and a virtual environment holding a stand-in package for the bridge tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def include_exclude_task(task_id: str, config: list[dict[str, Any]], command: str, include: list[str],
                         exclude: list[str]) -> dict[str, Any]:
    """A task scored `check_include_exclude(stdout of command)`: 1 when `include` is printed and
    `exclude` is not."""
    return {"id": task_id, "instruction": "Do nothing.", "config": config,
            "evaluator": {"func": "check_include_exclude",
                          "result": {"type": "vm_command_line", "command": command, "shell": True},
                          "expected": {"type": "rule", "rules": {"include": include, "exclude": exclude}}}}


def shell_step(command: str) -> dict[str, Any]:
    """A setup step that runs `command` in a shell."""
    return {"type": "execute", "parameters": {"command": command, "shell": True}}


def make_venv_with(venv: Path, files: dict[str, str]) -> Path:
    """A real virtual environment at `venv` whose site-packages holds `files` ({path: source},
    dedented): a stand-in package, e.g. a test double of OSWorld's `desktop_env`."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text).lstrip())
    return venv
