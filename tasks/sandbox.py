"""The bubblewrap sandbox every task worker runs in.

A worker's whole world (its Xvfb, window manager, Chromium, every setup/postconfig command and
every getter that runs a command or reads a file) is one `bwrap` process tree:

- uid 1000 (OSWorld's `user`) in a user namespace of its own, with no capability and no way to
  make further user namespaces: it cannot mount, unmount or remount anything (as root in its own
  namespace it could turn a read-only bind of the host's `/etc` writable); on this machine that uid
  is an unprivileged id of its own where the runner is root (`host_uid`, tasks/sandbox_user.py), and
  the runner's user otherwise;
- its own pid namespace (`pkill chrome` there kills only that worker's browser; when the worker
  ends, the kernel kills everything left in it), ipc, uts and cgroup namespaces, and its own
  network namespace: loopback only, or, when the run allows the network, loopback and an uplink
  that the runner attaches from outside (tasks/uplink.py; where none can be made, the host's
  network, shared by every worker);
- the system (`/usr`, `/etc`), Python and the project read-only, nothing else of the host
  (no `/root`, no `/home`, no other project folders); in `/etc` every file or folder that is not
  world-readable (`/etc/shadow`, `/etc/ssl/private`...), `/etc/ssh` and `/etc/sudoers*` are masked
  (the host's root owns them; where the sandbox's uid is the runner's, root's, it would read them);
- the run's `--out` folder hidden under an empty tmpfs (it may lie inside the project, which is
  bound read-only): other tasks' results and other workers' homes are out of sight;
- a private `/tmp`, `/var/tmp`, `/dev/shm` and `/dev/mqueue` (its ipc namespace's POSIX message queues), a private home bound at the real path `/home/user`
  (OSWorld's paths need no rewriting), and one writable host folder: the worker's staging folder
  under `--out`, where its task folders are written before the runner moves them into place;
  everything else, `/` included, is read-only, and the worker's working folder is `/` (so a file a
  task writes never lands on its import path; the worker also runs `python -P`);
- a scrubbed environment: only the variables in `ENV_ALLOWLIST` pass, plus what the worker needs;
- `--die-with-parent` and `--new-session`: nothing outlives the runner, nothing reaches its
  terminal; after each task the worker kills every process of its pid namespace but its own (its
  desktop's too), empties its private `/tmp`, `/var/tmp` and `/dev/shm` and starts a fresh desktop
  (`host.LocalHost.clear_sandbox`), so nothing a task started or left there survives into the next.

Wall time is enforced by the runner (tasks/worker_pool.py), which kills the whole tree; memory,
processes and CPU by the kernel, in the worker's own cgroup (tasks/cgroups.py), or, where no cgroup
can be made, by the runner polling the tree's resident memory. `probe()` says whether bwrap can run
here; without it the runner refuses task files whose steps act on the host (`host_acting`: run
commands, write files, or read this machine's files and services) unless the user passes
`--no-sandbox`.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from kimi_agent.tasks.context import VM_HOME

# Variables a worker may inherit from the runner (everything else, secrets included, is dropped).
ENV_ALLOWLIST = ("LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE", "TZ", "TERM", "KIMI_AGENT_CHROMIUM")
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/var/lib/dpkg", "/var/cache/fontconfig")
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib64", "/lib32")
# The sandbox's own folders: no host folder is bound over them, nor over a folder that holds one.
PRIVATE_DIRS = ("/tmp", "/dev/shm", "/run", "/var/tmp", VM_HOME, "/proc", "/dev")
# Secrets of root under /etc, masked whatever their mode (plus every path there that is not world-readable).
ETC_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/sudoers",
               "/etc/sudoers.d")
# Who a task is inside the sandbox: OSWorld's "user", without capabilities (as uid 0 with them, a task's
# command could remount the /etc bind read-write and write the host's /etc as root).
SANDBOX_UID = 1000
# The capabilities `setpriv` needs to become SANDBOX_UID with nothing (where the runner maps the user).
SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
# Set (to "1") in a sandboxed worker's environment: it is alone in its pid namespace with bwrap's init.
SANDBOX_ENV = "KIMI_AGENT_SANDBOXED"


@dataclass(frozen=True)
class SandboxPlan:
    """What one worker's sandbox binds. Paths are host paths.

    home: bound read-write at /home/user.  writable: bound read-write at the same path.
    readable: bound read-only at the same path (Python, the project, import paths).
    hidden: folders covered by an empty tmpfs, in order, after the read-only binds (the run's
    `--out`); a readable path inside one is bound again on top, and `writable` and `home` after.
    network: "loopback" (a namespace of its own with loopback only), "uplink" (the same, for an
    uplink attached from outside: `resolv_conf` is bound over `/etc/resolv.conf`, and bwrap writes
    its first process's pid to `info_fd`, see tasks/uplink.py) or "host" (this machine's network).
    host_uid: the id of this machine the sandbox's user is (tasks/sandbox_user.py); bwrap then waits,
    reading `block_fd`, until the runner has mapped it (`info_fd` says whose namespace to map), and
    the command runs under `setpriv` as that user. None: the user is the one that runs bwrap.
    """

    home: Path
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    network: Literal["loopback", "uplink", "host"] = "loopback"
    resolv_conf: Path | None = None
    info_fd: int | None = None
    host_uid: int | None = None
    block_fd: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.host_uid is not None and (self.block_fd is None or self.info_fd is None):
            raise ValueError("a sandbox with a host_uid needs a block_fd and an info_fd")


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


def sandbox_pythonpath(entries: list[str], readable: tuple[Path, ...], writable: tuple[Path, ...]) -> str:
    """PYTHONPATH for a sandboxed worker: the absolute `entries` that lie in a folder bound read-only
    (`readable` or the system's) and in no folder a task can write (`writable`, the home); an
    entry that is not bound would be an empty folder of the sandbox (its /tmp, its /home/user) where a
    task could put a module the worker then imports."""
    ro = (*readable, *(Path(d) for d in (*SYSTEM_DIRS, *MERGED_USR)))
    writable = (*writable, Path(VM_HOME))  # the home is bound over anything below it
    kept: list[str] = []
    for entry in entries:
        if not entry or not os.path.isabs(entry) or not os.path.exists(entry):
            continue
        path = Path(entry).resolve()
        if any(path.is_relative_to(r) for r in ro) and not any(path.is_relative_to(w) for w in writable) \
                and str(path) not in kept:
            kept.append(str(path))
    return os.pathsep.join(kept)


def bwrap_exe() -> str:
    """The bubblewrap program: `$KIMI_AGENT_BWRAP` or `bwrap` on PATH."""
    return os.environ.get("KIMI_AGENT_BWRAP") or "bwrap"


@functools.cache
def masked_secrets(root: str = "/etc") -> tuple[tuple[str, bool], ...]:
    """(path, is a folder) of what the sandbox must not read under `root`: `ETC_SECRETS` and every
    file or folder whose mode lacks o+r (a folder also when it lacks o+x); symlinks are skipped
    (their targets are checked where they lie). One walk per process (~1,000 entries: milliseconds)."""
    found: dict[str, bool] = {}
    for p in ETC_SECRETS:
        if p.startswith(root + "/") and os.path.lexists(p) and not os.path.islink(p):
            found[p] = os.path.isdir(p)
    for folder, dirs, files in os.walk(root):
        kept = []
        for name in dirs:
            path = os.path.join(folder, name)
            if path in found:
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                continue
            if mode & (stat.S_IROTH | stat.S_IXOTH) != (stat.S_IROTH | stat.S_IXOTH):
                found[path] = True
            else:
                kept.append(name)
        dirs[:] = kept  # nothing below a masked folder needs a look
        for name in files:
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if not stat.S_ISLNK(mode) and not mode & stat.S_IROTH:
                found.setdefault(path, False)
    return tuple(sorted(found.items()))


def bwrap_argv(plan: SandboxPlan) -> list[str]:
    """The `bwrap ...` prefix for a command run inside the plan's sandbox (working folder `/`)."""
    if plan.host_uid is None:
        argv = [bwrap_exe(), "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--cap-drop", "ALL", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
    else:  # bwrap sets up as root (mapped by the runner); the command drops to SANDBOX_UID below
        argv = [bwrap_exe(), "--unshare-all", "--unshare-user", "--userns-block-fd", str(plan.block_fd),
                "--cap-drop", "ALL", *(a for cap in SETPRIV_CAPS for a in ("--cap-add", cap)),
                "--die-with-parent", "--new-session", "--clearenv"]
    if plan.network == "host":
        argv.append("--share-net")
    if plan.info_fd is not None:
        argv += ["--info-fd", str(plan.info_fd)]
    for d in SYSTEM_DIRS:
        if os.path.exists(d):
            argv += ["--ro-bind", d, d]
    for path, is_dir in masked_secrets():  # bwrap binds through `/etc/...` as the sandbox sees it
        argv += ["--tmpfs", path, "--remount-ro", path] if is_dir else ["--ro-bind", "/dev/null", path]
    for d in MERGED_USR:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    # /proc/sys read-only: bwrap leaves it writable, and where the sandbox's user is this machine's root
    # (tasks/sandbox_user.py) a task could set kernel.core_pattern (a program it wrote, run as root)
    argv += ["--dev", "/dev", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777",
             "--tmpfs", "/dev/shm", "--mqueue", "/dev/mqueue", "--tmpfs", "/run", "--perms", "1777", "--tmpfs", "/var/tmp",
             "--dir", "/home"]  # PRIVATE_DIRS
    if plan.network == "uplink" and plan.resolv_conf is not None:
        argv += _resolv_conf_bind(plan.resolv_conf)
    for p in plan.readable:
        argv += [*_open_parents(p), "--ro-bind", str(p), str(p)]
    hidden = [h for h in plan.hidden if h.is_dir()]
    for h in hidden:
        argv += [*_open_parents(h), "--tmpfs", str(h)]
        argv += [a for p in plan.readable if p.is_relative_to(h) for a in (*_open_parents(p), "--ro-bind", str(p), str(p))]
    for p in plan.writable:
        argv += [*_open_parents(p), "--bind", str(p), str(p)]
    argv += ["--bind", str(plan.home), VM_HOME]
    for folder in ["/", *map(str, hidden)]:  # once the binds inside made their mount points (not recursive)
        argv += ["--remount-ro", folder]
    argv += ["--chdir", "/"]
    for k, v in sorted(plan.env.items()):
        argv += ["--setenv", k, v]
    argv.append("--")
    if plan.host_uid is not None:
        argv += ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs", "--"]
    return argv


def _open_parents(path: Path) -> list[str]:
    """bwrap arguments that make `path`'s missing parent folders in the sandbox traversable (0755):
    bwrap would copy this machine's modes, and a parent such as `/root` (0700) would shut the
    sandbox's user out of a bind below it. Parents that exist there already are left as they are."""
    return [a for parent in reversed(path.parents) if str(parent) != "/" for a in ("--perms", "0755", "--dir",
                                                                                  str(parent))]


def _resolv_conf_bind(source: Path) -> list[str]:
    """bwrap arguments that make `source` the sandbox's `/etc/resolv.conf`; where that is a link
    (systemd-resolved's into /run), its target is made in the sandbox's private /run and bound."""
    target = os.path.realpath("/etc/resolv.conf")
    if any(Path(target).is_relative_to(d) for d in PRIVATE_DIRS):
        return ["--dir", os.path.dirname(target), "--ro-bind", str(source), target]
    if not os.path.isfile(target):  # a bind there would create the file on this machine: no DNS then
        return []
    return ["--ro-bind", str(source), target]


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


# Setup steps and getters that run commands, write files, or read files of the machine they run on.
HOST_STEPS = frozenset({"execute", "command", "launch", "open", "download", "upload_file",
                        "execute_with_verification"})
HOST_GETTERS = frozenset({"vm_command_line", "vm_terminal_output", "vm_command_error", "local_file",
                          "vm_file", "cloud_file", "list_directory", "shortcuts_on_desktop"})
# Steps and getters that load URLs in the worker's browser (the parameter that holds them, its
# default): a `file:` URL (or a bare path, `view-source:file:...`) reads this machine's files, and a
# loopback one reaches its services, when there is no sandbox.
URL_STEPS = {"chrome_open_tabs": ("urls_to_open", None)}
URL_GETTERS = {"page_info": ("url", None), "pdf_from_url": ("path", None),
               "gotoRecreationPage_and_get_html_content": ("url", None)}
# Schemes that read nothing of this machine; `{LOCAL_SERVER}` is the built-in suite's own server.
_SAFE_SCHEMES = ("http", "https", "about", "chrome", "data")


def _reads_host(url: object) -> bool:
    """Whether loading `url` in a browser outside a sandbox reads this machine's files or services."""
    if not isinstance(url, str):
        return False
    text = url.strip()
    if text.startswith("{LOCAL_SERVER}"):
        return False
    parsed = urlparse(text)
    if parsed.scheme.lower() not in _SAFE_SCHEMES:
        return True
    if parsed.scheme.lower() in ("http", "https"):
        from ipaddress import ip_address

        host = (parsed.hostname or "").lower()
        if host in ("localhost", "0.0.0.0") or host.endswith(".localhost"):
            return True
        try:
            return ip_address(host).is_loopback or ip_address(host).is_unspecified
        except ValueError:
            return False
    return False


def _host_urls(params: dict[str, object], key: str, default: str | None) -> list[str]:
    value = params.get(key, default)
    urls = value if isinstance(value, list) else [value]
    return [str(u) for u in urls if _reads_host(u)]


def host_acting(spec: object) -> list[str]:
    """Where a task file acts on the machine it runs on (runs commands, writes files, reads its files
    or loopback services): `config[0] execute`, `result[1] vm_file`, `config[2] chrome_open_tabs
    (file:///etc/passwd)`..."""
    from kimi_agent.tasks.spec import TaskSpec

    assert isinstance(spec, TaskSpec)
    out = []
    for where, step in spec.all_steps():
        if step.type in HOST_STEPS:
            out.append(f"{where} {step.type}")
        elif step.type in URL_STEPS and (urls := _host_urls(step.parameters, *URL_STEPS[step.type])):
            out.append(f"{where} {step.type} ({', '.join(urls)})")
    for kind in ("result", "expected"):
        for i, getter in enumerate(getattr(spec.evaluator, kind)):
            if getter is None:
                continue
            if getter.type in HOST_GETTERS:
                out.append(f"evaluator.{kind}[{i}] {getter.type}")
            elif getter.type in URL_GETTERS and (urls := _host_urls(getter.params, *URL_GETTERS[getter.type])):
                out.append(f"evaluator.{kind}[{i}] {getter.type} ({', '.join(urls)})")
    return out


def in_own_pid_namespace() -> bool:
    """Whether this process is a sandboxed worker: started with `SANDBOX_ENV` by the pool, as the
    child of its pid namespace's init (bwrap). Only then may it kill every other process it sees."""
    return os.environ.get(SANDBOX_ENV) == "1" and os.getppid() == 1
