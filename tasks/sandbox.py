"""The bubblewrap sandbox every task worker runs in.

A worker's whole world (its Xvfb, window manager, Chromium, every setup/postconfig command and
every getter that runs a command or reads a file) is one `bwrap` process tree:

- its own pid namespace (`pkill chrome` there kills only that worker's browser; when the worker
  ends, the kernel kills everything left in it), ipc, uts and cgroup namespaces, and its own
  network namespace with only loopback unless the run allows the network;
- the system (`/usr`, `/etc`), Python and the project read-only, nothing else of the host
  (no `/root`, no `/home`, no other project folders);
- a private `/tmp` and `/dev/shm`, a private home bound at the real path `/home/user` (OSWorld's
  paths need no rewriting), and one writable host folder: the worker's staging folder under
  `--out`, where its task folders are written before the runner moves them into place;
- a scrubbed environment: only the variables in `ENV_ALLOWLIST` pass, plus what the worker needs;
- `--die-with-parent` and `--new-session`: nothing outlives the runner, nothing reaches its
  terminal.

Wall time is enforced by the runner (tasks/worker_pool.py), which kills the whole tree; memory,
processes and CPU by the kernel, in the worker's own cgroup (tasks/cgroups.py), or, where no cgroup
can be made, by the runner polling the tree's resident memory. `probe()` says whether bwrap can run
here; without it the runner refuses task files whose steps act on the host unless the user passes
`--no-sandbox`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kimi_agent.tasks.context import VM_HOME

# Variables a worker may inherit from the runner (everything else, secrets included, is dropped).
ENV_ALLOWLIST = ("LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE", "TZ", "TERM", "KIMI_AGENT_CHROMIUM")
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/var/lib/dpkg", "/var/cache/fontconfig")
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib64", "/lib32")
# The sandbox's own folders: no host folder is bound over them, nor over a folder that holds one.
PRIVATE_DIRS = ("/tmp", "/dev/shm", "/run", "/var/tmp", VM_HOME, "/proc", "/dev")


@dataclass(frozen=True)
class SandboxPlan:
    """What one worker's sandbox binds. Paths are host paths.

    home: bound read-write at /home/user.  writable: bound read-write at the same path.
    readable: bound read-only at the same path (Python, the project, import paths).
    """

    home: Path
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    allow_network: bool = False
    env: dict[str, str] = field(default_factory=dict)


def scrubbed_env(extra: dict[str, str] | None = None, *, home: str = VM_HOME) -> dict[str, str]:
    """The environment a worker gets: the allowlisted variables of the runner's, plus `extra`."""
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.update({"PATH": SANDBOX_PATH, "HOME": home, "USER": "user", "LOGNAME": "user",
                "LANG": env.get("LANG", "C.UTF-8"), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/tmp"})
    env.update(extra or {})
    return env


def python_paths() -> tuple[Path, ...]:
    """Host folders a worker's Python needs read-only: the interpreter's prefixes, the project and
    every import path of the runner (so a backend factory defined in a test module unpickles)."""
    paths: list[Path] = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent]
    import kimi_agent

    paths.append(Path(kimi_agent.__file__).resolve().parent.parent)
    paths.extend(Path(p) for p in sys.path if p and Path(p).is_absolute())
    out: list[Path] = []
    for p in sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts)):
        if str(p) == "/" or any(p.is_relative_to(q) for q in out) or any(
                p.is_relative_to(s) for s in SYSTEM_DIRS):
            continue
        if any(Path(private).is_relative_to(p) for private in PRIVATE_DIRS):
            continue  # a script run from /tmp puts /tmp on sys.path: never show the host's /tmp (or /home)
        out.append(p)
    return tuple(out)


def bwrap_exe() -> str:
    """The bubblewrap program: `$KIMI_AGENT_BWRAP` or `bwrap` on PATH."""
    return os.environ.get("KIMI_AGENT_BWRAP") or "bwrap"


def bwrap_argv(plan: SandboxPlan) -> list[str]:
    """The `bwrap ...` prefix for a command run inside the plan's sandbox."""
    argv = [bwrap_exe(), "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    if plan.allow_network:
        argv.append("--share-net")
    for d in SYSTEM_DIRS:
        if os.path.exists(d):
            argv += ["--ro-bind", d, d]
    for d in MERGED_USR:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
             "--tmpfs", "/run", "--dir", "/var/tmp", "--dir", "/home"]  # PRIVATE_DIRS
    for p in plan.readable:
        argv += ["--ro-bind", str(p), str(p)]
    for p in plan.writable:
        argv += ["--bind", str(p), str(p)]
    argv += ["--bind", str(plan.home), VM_HOME, "--chdir", VM_HOME]
    for k, v in sorted(plan.env.items()):
        argv += ["--setenv", k, v]
    return [*argv, "--"]


@functools.cache
def probe() -> str | None:
    """None when bubblewrap can build a sandbox here; otherwise why not, in one sentence."""
    exe = shutil.which(bwrap_exe())
    if exe is None:
        return "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    plan = SandboxPlan(home=home, readable=())
    try:
        done = subprocess.run([*bwrap_argv(plan), "/usr/bin/true"], capture_output=True, text=True, timeout=15,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap cannot run here: {e}"
    if done.returncode != 0:
        return f"bwrap cannot build a sandbox here: {(done.stderr or '').strip()[:200]}"
    return None


# Setup steps and getters that run commands or write files on the machine they run on.
HOST_STEPS = frozenset({"execute", "command", "launch", "open", "download", "upload_file",
                        "execute_with_verification"})
HOST_GETTERS = frozenset({"vm_command_line", "vm_terminal_output", "vm_command_error", "local_file",
                          "vm_file", "cloud_file"})


def host_acting(spec: object) -> list[str]:
    """Where a task file acts on the machine it runs on: `config[0] execute`, `result[1] vm_file`..."""
    from kimi_agent.tasks.spec import TaskSpec

    assert isinstance(spec, TaskSpec)
    out = [f"{where} {step.type}" for where, step in spec.all_steps() if step.type in HOST_STEPS]
    for kind in ("result", "expected"):
        for i, getter in enumerate(getattr(spec.evaluator, kind)):
            if getter is not None and getter.type in HOST_GETTERS:
                out.append(f"evaluator.{kind}[{i}] {getter.type}")
    return out
