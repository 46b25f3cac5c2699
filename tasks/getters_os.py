"""Getters that run a command or read a folder on the worker's machine (OSWorld's `os` domain).

`vm_command_line` runs the command in the worker's home (where OSWorld's in-VM server runs it) and
returns its stdout. Commands that read an Ubuntu GNOME desktop's state (gsettings, pactl,
timedatectl, the GNOME shell's D-Bus) cannot be judged on this machine: the task is `unsupported`
at load time, naming the command; such tasks run on OSWorld VMs. `vm_terminal_output` reads the
GNOME Terminal's text through the accessibility tree: unsupported here for the same reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kimi_agent.errors import EvaluationError, SetupStepError
from kimi_agent.tasks.context import EvalContext
from kimi_agent.tasks.registry import getter
from kimi_agent.tasks.spec import GetterConfig, TaskFieldError

# Programs whose output only an Ubuntu GNOME desktop (a real system bus, PulseAudio, systemd) gives.
GNOME_ONLY = ("gsettings", "pactl", "timedatectl", "gnome-shell", "dconf")
COMMAND_TIMEOUT_S = 60.0


def _command_text(config: GetterConfig) -> str:
    """`command` as one string; `TaskFieldError` unless it is a non-empty string or list of strings
    without a NUL byte (checked when the task loads, so a bad type never reaches the run)."""
    command = config.params.get("command")
    if isinstance(command, str):
        words = [command]
    elif isinstance(command, list) and all(isinstance(w, str) for w in command):
        words = command
    else:
        raise TaskFieldError("command", f"must be a string or a list of strings, not {_kind(command)}")
    if not "".join(words).strip():
        raise TaskFieldError("command", "is empty")
    if any("\0" in w for w in words):
        raise TaskFieldError("command", "contains a NUL byte")
    return " ".join(words)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list holding " + ", ".join(sorted({type(w).__name__ for w in value if not isinstance(w, str)}))
    return "null" if value is None else type(value).__name__


def gnome_only_reasons(config: GetterConfig) -> list[str]:
    """Why this `vm_command_line` command cannot be judged here (it reads GNOME desktop state);
    `TaskFieldError` for a malformed `command`."""
    text = _command_text(config)
    used = [p for p in GNOME_ONLY if re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text)]
    if not used:
        return []
    first_line = text.strip().splitlines()[0] if text.strip() else text
    return [f"getter 'vm_command_line' runs {', '.join(used)} (needs an Ubuntu GNOME desktop): "
            f"{first_line[:120]!r}"]


@getter("vm_command_line", check=gnome_only_reasons)
def get_vm_command_line(ctx: EvalContext, config: GetterConfig) -> str:
    """stdout of `command` (str: through bash when `shell`, list: argv), run in the worker's home."""
    from kimi_agent.tasks.setup_steps import _substitute

    command = config.params["command"]
    shell = bool(config.params.get("shell", False))
    argv: str | list[str] = (_substitute(ctx.host, command) if isinstance(command, str)
                             else [_substitute(ctx.host, str(a)) for a in command])
    if isinstance(argv, str) and not shell:
        argv = argv.split()
    try:
        _, out, _ = ctx.host.execute(argv, shell=shell, timeout_s=COMMAND_TIMEOUT_S)
    except SetupStepError as e:
        raise EvaluationError(f"vm_command_line: {e}") from e
    return out


@getter("vm_terminal_output", check=lambda config: [
    "getter 'vm_terminal_output' reads the GNOME Terminal's text through the accessibility tree "
    "(needs an Ubuntu GNOME desktop)"])
def get_vm_terminal_output(ctx: EvalContext, config: GetterConfig) -> str:
    raise EvaluationError("vm_terminal_output needs an Ubuntu GNOME desktop (run this task on an OSWorld VM)")


MAX_TREE_DEPTH = 64  # deeper folders are listed without their children
MAX_TREE_ENTRIES = 10_000  # files and folders list_directory lists at most


def _tree(path: Path, depth: int = 0, seen: list[int] | None = None) -> dict[str, Any]:
    """The tree under `path`; a linked folder is a directory whose children are not listed (a link
    loop, or a link out of the task's home, is never walked). More than `MAX_TREE_ENTRIES` entries
    is an EvaluationError (a task's folders hold a few; `/usr` holds 100,000s)."""
    seen = [0] if seen is None else seen
    seen[0] += 1
    if seen[0] > MAX_TREE_ENTRIES:
        raise EvaluationError(f"list_directory: more than {MAX_TREE_ENTRIES} files and folders")
    if path.is_dir():
        walk = not path.is_symlink() and depth < MAX_TREE_DEPTH
        return {"name": path.name, "type": "directory",
                "children": [_tree(p, depth + 1, seen) for p in sorted(path.iterdir(), key=lambda p: p.name)]
                if walk else []}
    return {"name": path.name, "type": "file"}


def _check_path(config: GetterConfig) -> list[str]:
    """`path` must be a non-empty string without a NUL byte (`TaskFieldError` when the task loads)."""
    path = config.params.get("path")
    if not isinstance(path, str) or not path:
        raise TaskFieldError("path", f"must be a non-empty string, not {_kind(path)}")
    if "\0" in path:
        raise TaskFieldError("path", "contains a NUL byte")
    return []


@getter("list_directory", check=_check_path)
def get_list_directory(ctx: EvalContext, config: GetterConfig) -> dict[str, Any]:
    """OSWorld's directory tree of the (mapped) `path`: {name, type, children: [...]}."""
    path = ctx.host.paths.map_path(str(config.params["path"]))
    if not path.is_dir():
        raise FileNotFoundError(str(path))
    return _tree(path)


@getter("shortcuts_on_desktop")
def get_shortcuts_on_desktop(ctx: EvalContext, config: GetterConfig) -> dict[str, str]:
    """{file name: text} of every `*.desktop` file on ~/Desktop (OSWorld's Linux case)."""
    desktop = ctx.host.paths.home / "Desktop"
    if not desktop.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(desktop.glob("*.desktop"))}
