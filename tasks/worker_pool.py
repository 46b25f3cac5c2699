"""The runner's workers: sandboxed processes, each with its own display and browser, fed tasks
one at a time over a channel, with the model answered from the runner's own process.

`WorkerPool.run(pending)` starts up to N workers (`python -m kimi_agent.tasks.worker` inside
`bwrap`, or as a plain process with `--no-sandbox`), hands each idle worker the next task, answers
its generation requests (`model_link.ModelHost`), and enforces the limits: a task past its wall
clock budget, or a worker tree past its memory limit, is killed with everything it started (the
sandbox's pid namespace) and the task is recorded as `error`; a replacement worker takes the next
task. Where cgroups can be written, each worker's tree runs in its own (tasks/cgroups.py): the
kernel holds it to its memory, process and CPU limits, and a task during which the kernel killed
one of its processes for memory is an `error` too; elsewhere the tree's resident memory is polled.
Each worker writes its task folders into its own staging folder (`<out>/.workers/w<i>/tasks`,
the only host folder it can write besides its home); the pool moves a finished task's folder to
`<out>/<task id>` and rewrites its result there. What those host folders hold is measured every
`DISK_CHECK_MIN_S` to `DISK_CHECK_S` (tasks/disk_use.py; the bigger they are, the less often), on a
thread of its own so that the loop's tick stays short: a worker over `--worker-disk` is killed, its
task is an error, and its folders are removed (and no one file can outgrow that limit in between:
the worker caps its RLIMIT_FSIZE, tasks/worker.py). With
`--allow-network` each sandbox gets its own network once its worker is ready (tasks/uplink.py).
Ctrl-C stops every worker (none of them gets the terminal's SIGINT) and the caller writes the
partial results.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_agent.env.process import proc_stats
from kimi_agent.errors import EnvironmentStartError
from kimi_agent.tasks.cgroups import Limits, WorkerCgroup, default_cpus, place, sweep_stale
from kimi_agent.tasks.channel import Channel, ChannelClosed
from kimi_agent.tasks.disk_use import disk_use
from kimi_agent.tasks.model_link import ModelHost
from kimi_agent.tasks.run_progress import phase_label
from kimi_agent.tasks.runner import (
    KILL_GRACE_S,
    RunSettings,
    TaskResult,
    _task_dir,
    adopt_staged,
    partial_episode,
    trajectory_problem,
    write_result,
)
from kimi_agent.tasks.sandbox import (
    SANDBOX_ENV,
    SandboxPlan,
    bwrap_argv,
    python_paths,
    sandbox_pythonpath,
    scrubbed_env,
)
from kimi_agent.tasks.sandbox_user import (
    SharedLimits,
    map_sandbox_user,
    sandbox_host_uid,
    sandbox_user_problem,
    shared_limits,
    shut_folders,
    taken_ids,
)
from kimi_agent.tasks.tree_walk import remove_tree
from kimi_agent.tasks.uplink import UPLINK_DNS, Uplink, child_pid, uplink_problem

if TYPE_CHECKING:
    from kimi_agent.model_runtime.backends.base import Backend
    from kimi_agent.tasks.spec import TaskSpec

log = logging.getLogger("kimi_agent.tasks")
READY_TIMEOUT_S = 120.0
MEMORY_CHECK_S = 2.0
DISK_CHECK_S = 5.0  # the longest wait between measurements of the workers' host folders (tasks/disk_use.py)
DISK_CHECK_MIN_S = 0.5  # the shortest: a cheap walk (a few ms) runs this often
DISK_CHECK_SHARE = 0.05  # the share of one core the measuring walks may take: the wait is 20x the last sweep
MAX_WORKER_FILES = 100_000  # entries a worker's host folders may hold (the measuring walk stays bounded)
MAX_WORKER_DEPTH = 64  # and how deep their folders may nest
MAX_START_FAILURES = 2  # a worker slot that exits twice before it is ready is given up
NETWORK_OWN = "its own (slirp4netns: the internet, not this machine nor other workers)"


@dataclass
class Worker:
    """One worker as the runner sees it (the progress view reads these fields)."""

    index: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    root: Path  # <out>/.workers/w<i>: home/, tasks/ (staging), worker.log
    launched: float = field(default_factory=time.monotonic)
    ready: bool = False
    task_id: str | None = None
    started: float = 0.0  # wall clock (time.time()) when the current task was handed over
    started_mono: float = 0.0
    step: str = ""  # "step N: <its action>" of the last finished step, or "setup"/"starting"
    step_no: int = 0  # the step running now (0: none yet)
    phase: str = ""  # what it is doing: observing, thinking, acting (click), waiting (2 s), settling
    display: str = ""
    port: int = 0
    profile: str = ""
    backend: Backend | None = None
    stopping: bool = False
    cgroup: WorkerCgroup | None = None  # None: no cgroup could be made (memory is polled)
    peak_since_task: bool = False  # the cgroup's peak memory was reset when the current task started (a cgroup)
    sampled_peak: int = 0  # otherwise: the most memory (bytes) seen by the runner's polls during the task
    peak_mb: int | None = None  # the current task's peak memory, read before the worker was killed
    sandbox_pid: int | None = None  # its sandbox's first process, known where it gets an uplink
    uplink: Uplink | None = None  # its sandbox's own network (--allow-network), ended with it
    network: str = ""  # what its tasks' network was, in words (each result's host.network)

    @property
    def staging(self) -> Path:
        return self.root / "tasks"

    @property
    def memory_mb(self) -> int | None:
        """The worker tree's memory now (MiB, page cache and tmpfs included), where its cgroup says."""
        used = None if self.cgroup is None else self.cgroup.memory_bytes()
        return None if used is None else round(used / 2**20)


def disk_check_wait(sweep_s: float) -> float:
    """Seconds to wait after a sweep of the workers' folders that took `sweep_s`: long enough that
    the walks take at most `DISK_CHECK_SHARE` of a core, within [DISK_CHECK_MIN_S, DISK_CHECK_S]."""
    return min(DISK_CHECK_S, max(DISK_CHECK_MIN_S, sweep_s / DISK_CHECK_SHARE))


def _send(w: Worker, header: dict[str, Any]) -> bool:
    """Send to a worker; False when it is gone (its reader thread then reports the exit)."""
    try:
        w.channel.send(header)
    except ChannelClosed as e:
        log.debug("worker %d is gone: %s", w.index, e)
        return False
    return True


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (bytes), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for child, fields in proc_stats().items():
        children.setdefault(int(fields[1]), []).append(child)
        rss[child] = int(fields[21]) * page
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, ()))
    return total


class WorkerPool:
    """Runs tasks on sandboxed workers; see the module docstring."""

    def __init__(self, settings: RunSettings, factory: Callable[..., Backend], *, sandbox: bool,
                 on_event: Callable[[str, Worker, Any], None]) -> None:
        self.settings = settings
        self.factory = factory
        self.sandbox = sandbox
        # the id of this machine its tasks run as: one of their own where the runner is root
        why_not = (sandbox_user_problem() or taken_ids(sandbox_host_uid(), settings.workers)
                   or shut_folders(python_paths())) if sandbox else None
        self.sandbox_uid = sandbox_host_uid() if sandbox and why_not is None else None  # worker i's: + i
        self.shared_limits = shared_limits(settings.workers)
        self.user_why_not = why_not
        if sandbox and why_not is not None and os.geteuid() == 0:
            log.warning("sandboxed tasks run as this machine's root (without capabilities, but with root's rights "
                        "on files the sandbox sees): %s", why_not)
        self.on_event = on_event  # ("start"|"step"|"done", worker, payload)
        self.in_worker = bool(getattr(factory, "in_worker", True))
        self.model = ModelHost()
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.workers: dict[int, Worker] = {}
        self._start_failures: dict[int, int] = {}
        self._generation = 0
        s = settings
        self.limits = Limits(s.worker_memory_mb * 2**20, s.worker_pids, s.worker_cpus or default_cpus(s.workers))
        self.no_cgroup: str | None = None  # why workers run without a cgroup (logged once)
        sweep_stale()  # folders of runners that were killed before they could remove them

    def user_note(self, w: Worker) -> str:
        """Who this worker's tasks are on this machine, for its task results."""
        if not self.sandbox:
            return "the runner's (no sandbox)"
        if self.sandbox_uid is not None:
            return f"uid {self.sandbox_uid + w.index} of this machine, a user of its own"
        return f"the runner's (uid {os.geteuid()}; {self.user_why_not})"

    def limits_note(self, w: Worker) -> str:
        """How this worker's limits are enforced, for its task results."""
        if w.cgroup is not None:
            return w.cgroup.describe()
        return (f"memory {self.settings.worker_memory_mb} MiB resident, polled every {MEMORY_CHECK_S:g} s; "
                f"no process or CPU limit ({self.no_cgroup})")

    def _cgroup(self, name: str) -> WorkerCgroup | None:
        group = place(name, self.limits)
        if isinstance(group, WorkerCgroup):
            return group
        if self.no_cgroup is None:
            log.warning("workers run without kernel limits (memory is polled every %g s; no process or CPU "
                        "limit): %s", MEMORY_CHECK_S, group)
        self.no_cgroup = group
        return None

    # -- starting workers -----------------------------------------------------------------------

    def _start(self, index: int) -> Worker:
        self._generation += 1
        root = self.settings.out_dir / ".workers" / f"w{index}-{self._generation}"
        home = root / "home"
        for d in (home, root / "tasks"):
            d.mkdir(parents=True, exist_ok=True)
        root.parent.chmod(0o700)  # what a task writes is its runner's user's: no one else reaches it mid-run
        parent_end, child_end = socket.socketpair()
        pythonpath = os.pathsep.join(p for p in sys.path if p and os.path.isabs(p))
        # -P: neither the working folder nor a script's folder goes on the worker's sys.path
        worker_argv = [sys.executable, "-P", "-m", "kimi_agent.tasks.worker", str(child_end.fileno())]
        info_r = info_w = None  # bwrap reports its sandbox's pid here, for the uplink and the user's map
        block_r = block_w = None  # bwrap waits on this until the runner has mapped its user
        keep_fds = [child_end.fileno()]
        described = "this machine's (no sandbox)"
        host_uid = None if self.sandbox_uid is None else self.sandbox_uid + index
        if self.sandbox:
            network, described = "loopback", "loopback only"
            if self.settings.allow_network and (why := uplink_problem()) is None:
                network, described = "uplink", NETWORK_OWN
            elif self.settings.allow_network:
                network, described = "host", f"this machine's, shared by the workers ({why})"
            resolv = None
            if network == "uplink" or host_uid is not None:
                info_r, info_w = os.pipe()
                keep_fds.append(info_w)
            if host_uid is not None:
                block_r, block_w = os.pipe()
                keep_fds.append(block_r)
                for d in (home, root / "tasks"):  # the only folders of this machine the sandbox's user owns
                    os.chown(d, host_uid, host_uid)
            if network == "uplink":
                resolv = root / "resolv.conf"
                resolv.write_text(f"nameserver {UPLINK_DNS}\n", encoding="ascii")
            readable = python_paths()
            writable = (root.resolve() / "tasks",)
            pythonpath = sandbox_pythonpath(sys.path, readable, (*writable, home.resolve()))
            env = scrubbed_env({"PYTHONPATH": pythonpath, SANDBOX_ENV: "1"})
            out = self.settings.out_dir.resolve()
            plan = SandboxPlan(home=home.resolve(), writable=writable, readable=readable,
                               hidden=(out, out / ".workers"), network=network,
                               resolv_conf=resolv, info_fd=info_w, host_uid=host_uid, block_fd=block_r, env=env)
            argv = [*bwrap_argv(plan), *worker_argv]
            if host_uid is not None:  # its namespace keeps bwrap's limit as its maximum
                argv = [*self.shared_limits.prlimit_argv(), *argv]
            worker_home = "/home/user"
        else:
            env = scrubbed_env({"PYTHONPATH": pythonpath}, home=str(home.resolve()))
            env["PATH"] = os.environ.get("PATH", env["PATH"])
            argv = worker_argv
            worker_home = str(home.resolve())
        cgroup = self._cgroup(f"kimi-agent-{os.getpid()}-w{index}-{self._generation}")
        if cgroup is not None:
            argv = cgroup.enter_argv(argv)
        with open(root / "worker.log", "ab") as logf:
            try:
                proc = subprocess.Popen(argv, pass_fds=keep_fds, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT, env=env if not self.sandbox else {"PATH": env["PATH"]},
                                        start_new_session=True, cwd=str(root))
            finally:
                child_end.close()
                for fd in (info_w, block_r):
                    if fd is not None:
                        os.close(fd)
            sandbox_pid = None if info_r is None else self._sandbox_pid(index, proc, info_r, block_w, host_uid, logf,
                                                                        self.shared_limits)
        w = Worker(index, proc, Channel(parent_end), root, cgroup=cgroup, sandbox_pid=sandbox_pid, network=described)
        settings = self.settings.model_copy(update={"out_dir": (root / "tasks").resolve()})
        factory = base64.b64encode(pickle.dumps(self.factory)).decode() if self.in_worker else None
        _send(w, {"type": "init", "worker": index, "settings": settings.model_dump_json(), "factory": factory,
                  "home": worker_home})  # if it died at once, its reader reports the exit
        threading.Thread(target=self._read, args=(w,), name=f"kimi-worker-reader-{index}", daemon=True).start()
        self.workers[index] = w
        return w

    @staticmethod
    def _sandbox_pid(index: int, proc: subprocess.Popen[bytes], info_r: int, block_w: int | None,
                     host_uid: int | None, logf: Any, limits: SharedLimits) -> int | None:
        """The new worker's sandbox's first process, as bwrap reports it (at once), with its user
        mapped to `host_uid` where bwrap waits for that on `block_w` (closed here); None, with the
        reason in its log and the worker killed, if either fails (its exit counts as a failed start)."""
        try:
            try:
                pid = child_pid(info_r)
            except EnvironmentStartError:
                if block_w is not None:
                    os.close(block_w)  # bwrap, unmapped, exits
                raise
            if block_w is not None and host_uid is not None:
                map_sandbox_user(pid, block_w, host_uid, limits)
            return pid
        except EnvironmentStartError as e:
            log.warning("worker %d: %s", index, e)
            logf.write(f"kimi-agent: {e}\n".encode())
            proc.kill()
            return None

    def _attach_uplink(self, w: Worker) -> bool:
        """Give a worker that just said it is ready its network (tasks/uplink.py), before any task:
        by then bwrap has set its sandbox up (attaching earlier races bwrap's own loopback setup).
        False, with the reason in its log and the worker killed, if that fails."""
        assert w.sandbox_pid is not None
        with open(w.root / "worker.log", "ab") as logf:
            try:
                w.uplink = Uplink.attach(w.sandbox_pid, parent=w.proc.pid, log=logf,
                                         wrap=None if w.cgroup is None else w.cgroup.enter_argv)
                return True
            except EnvironmentStartError as e:
                log.warning("worker %d: %s", w.index, e)
                logf.write(f"kimi-agent: {e}\n".encode())
        self._kill(w)
        return False

    def _read(self, w: Worker) -> None:
        """Reader thread: events to the queue; generation requests answered here."""
        try:
            while True:
                header, blobs = w.channel.recv()
                if header.get("type") == "generate":
                    if w.backend is None:
                        w.channel.send({"type": "reply", "id": header.get("id"), "error": "no model for this task"})
                    else:
                        self.model.answer(w.backend, header, blobs, w.channel)
                else:
                    self.events.put((w.index, header))
        except ChannelClosed as e:
            self.events.put((w.index, {"type": "exit", "why": str(e), "proc": id(w.proc)}))

    # -- the loop -------------------------------------------------------------------------------

    def run(self, pending: list[tuple[TaskSpec, str]], results: dict[str, TaskResult],
            on_tick: Callable[[], None] = lambda: None) -> None:
        """Run `pending` ((spec, domain) pairs); every task ends up in `results`."""
        queue_: deque[tuple[TaskSpec, str]] = deque(pending)
        domains = {spec.id: domain for spec, domain in pending}
        specs = {spec.id: spec for spec, _ in pending}
        n = min(self.settings.workers, len(pending))
        for i in range(n):
            self._start(i)
        last_mem = 0.0
        done = threading.Event()
        threading.Thread(target=self._watch_disk, args=(done,), name="kimi-worker-disk", daemon=True).start()
        try:
            while self.workers and (queue_ or any(w.task_id for w in self.workers.values())):
                try:
                    index, msg = self.events.get(timeout=0.5)
                except queue.Empty:
                    index, msg = -1, {}
                w = self.workers.get(index)
                if w is not None:
                    self._handle(w, msg, queue_, results, specs, domains)
                now = time.monotonic()
                check_memory = now - last_mem > MEMORY_CHECK_S
                last_mem = now if check_memory else last_mem
                for w in list(self.workers.values()):
                    self._police(w, check_memory, queue_, results, specs, domains)
                on_tick()
        finally:
            done.set()
            self.stop_all()
        for spec, domain in queue_:  # no worker could be started for these
            why = "; ".join(f"w{i}: {self._log_tail(i)}" for i in sorted(self._start_failures)) or "no worker"
            results[spec.id] = self._error(spec, domain, f"not run: every worker exited before it was ready ({why})")

    def _handle(self, w: Worker, msg: dict[str, Any], queue_: deque[tuple[TaskSpec, str]],
                results: dict[str, TaskResult], specs: dict[str, TaskSpec], domains: dict[str, str]) -> None:
        kind = msg.get("type")
        if kind == "exit":
            if msg.get("proc") != id(w.proc):
                return  # a replaced worker's reader
            self._exited(w, queue_, results, specs, domains, why=f"worker exited (exit code {w.proc.wait(10)})")
        elif kind == "over_disk":
            if msg.get("proc") != id(w.proc) or w.proc.poll() is not None:
                return  # measured before it was replaced, or already gone (its exit says why)
            reason = str(msg.get("why"))
            log.warning("worker %d: %s", w.index, reason)
            self._exited(w, queue_, results, specs, domains, why=reason, purge=True)
        elif kind == "ready":
            if w.network == NETWORK_OWN and w.sandbox_pid is not None and w.uplink is None and not self._attach_uplink(w):
                return  # killed: its exit (a failed start) is reported by its reader
            w.ready = True
            w.display, w.port, w.profile = str(msg.get("display")), int(msg.get("port") or 0), str(msg.get("profile"))
            self._start_failures.pop(w.index, None)
            self._next(w, queue_)
        elif kind == "start":
            w.step = "setup"
            self.on_event("start", w, msg)
        elif kind == "phase" and msg.get("task_id") == w.task_id:
            w.step_no = int(msg.get("step") or 0)
            w.phase = phase_label(str(msg.get("phase") or ""), str(msg.get("detail") or ""))
        elif kind == "step" and msg.get("task_id") == w.task_id:
            w.step = f"step {msg.get('step')}: {msg.get('action')}"
            self.on_event("step", w, msg)
        elif kind == "done" and w.task_id is not None:
            if (why := self._over_memory(w)) is not None:  # its environment lost a process: not a fair result
                self._exited(w, queue_, results, specs, domains, why=why)
                return
            try:
                r = TaskResult.model_validate_json(str(msg.get("result")))
            except ValueError as e:
                r = self._error(specs[w.task_id], domains[w.task_id], f"the worker sent a malformed result: {e}")
            if r.task_id != w.task_id:
                r = self._error(specs[w.task_id], domains[w.task_id], "the worker reported another task's result")
            notes = []
            if r.trajectory is not None and (problem := trajectory_problem(r.task_id, r.trajectory)) is not None:
                notes.append(f"the worker's trajectory was dropped: {problem}")  # pages link it, the runner reads it
                r = r.model_copy(update={"trajectory": None})
            self._finish(w, r, results, notes=notes)
            self._next(w, queue_)

    def _next(self, w: Worker, queue_: deque[tuple[TaskSpec, str]]) -> None:
        if not queue_:
            self._stop(w)
            return
        if w.network == NETWORK_OWN and w.uplink is None and not self._attach_uplink(w):
            return  # its uplink ended during the last task and none could be attached again: killed
        spec, domain = queue_.popleft()
        w.task_id, w.started, w.started_mono, w.step = spec.id, time.time(), time.monotonic(), "starting"
        w.step_no, w.phase = 0, ""
        w.peak_since_task, w.peak_mb = w.cgroup is not None and w.cgroup.reset_peak(), None
        w.sampled_peak = 0
        w.backend = None if self.in_worker else self.factory(spec, None, "")
        _send(w, {"type": "task", "spec": spec.model_dump_json(), "domain": domain,
                  "backend_name": getattr(w.backend, "name", "")})  # if gone, the exit records the task
    def _finish(self, w: Worker, r: TaskResult, results: dict[str, TaskResult], *,
                notes: list[str] | None = None) -> None:
        """Move the task folder from the worker's staging folder into `<out>`, stripped of every link
        and special file the sandbox may have planted (`adopt_staged`), and record it; `notes` (and
        what was removed) go in the result's `host.notes`."""
        out = self.settings.out_dir
        final = _task_dir(out, r.task_id)
        if w.uplink is not None:  # the next task gets a fresh one: no flow or port of this task's, a fence of now
            if (code := w.uplink.proc.poll()) is not None:
                notes = [*(notes or []), f"its network's slirp4netns ended during the task (exit {code}): from then "
                         "on the task had no network"]
            w.uplink.close()
            w.uplink = None
        try:
            notes = [*(notes or []), *adopt_staged(w.staging / r.task_id, final,
                                                   max_bytes=self.settings.worker_disk_mb << 20)]
        except OSError as e:  # the result is still recorded, without the worker's files
            log.warning("%s: could not move its folder out of staging: %s", r.task_id, e)
            notes = [*(notes or []), f"its staged folder could not be moved: {e}"]
        host = {**(r.host or {}), "worker_dir": str(w.root), "sandbox": "bwrap" if self.sandbox else "none",
                "user": self.user_note(w), "network": w.network,
                "limits": self.limits_note(w)}
        host.pop("notes", None)  # only the runner's own notes
        if notes:
            host["notes"] = notes
        if w.peak_mb is None and not w.peak_since_task and w.proc.poll() is None:
            self._sample(w)  # a task shorter than the poll interval still gets one sample
        if (peak := w.peak_mb if w.peak_mb is not None else self._peak_mb(w)) is not None:
            host["peak_memory_mb"] = peak  # the worker's whole tree during this task
            host["peak_memory_by"] = self._peak_by(w)
        kept = partial_episode(out, final) if r.status == "error" and r.trajectory is None else {}
        r = r.model_copy(update={**kept, "path": str(final), "host": host})  # a killed task keeps its steps so far
        write_result(out, r)
        results[r.task_id] = r
        w.task_id, w.step, w.backend, w.step_no, w.phase = None, "", None, 0, ""
        self.on_event("done", w, r)

    def _error(self, spec: TaskSpec, domain: str, reason: str) -> TaskResult:
        return TaskResult(task_id=spec.id, instruction=spec.instruction, status="error", reason=reason,
                          path=str(_task_dir(self.settings.out_dir, spec.id)), domain=domain)

    @staticmethod
    def _peak_mb(w: Worker) -> int | None:
        """The worker tree's peak memory since its task started (MiB): the kernel's, where it was reset
        at the task's start; else the most the runner's polls saw (None before the first poll)."""
        if w.task_id is None:
            return None
        if w.cgroup is not None and w.peak_since_task:  # (a reset peak implies a cgroup)
            peak = w.cgroup.usage().get("peak_memory")
            return None if peak is None else round(peak / 2**20)
        return round(w.sampled_peak / 2**20) if w.sampled_peak else None

    @staticmethod
    def _sample(w: Worker) -> int:
        """The worker tree's memory now (bytes: its cgroup's usage, else its resident memory), kept in
        `sampled_peak` while a task runs without a kernel peak."""
        used = (w.cgroup.memory_bytes() or 0) if w.cgroup is not None else tree_rss_bytes(w.proc.pid)
        if w.task_id is not None and not w.peak_since_task:
            w.sampled_peak = max(w.sampled_peak, used)
        return used

    @staticmethod
    def _peak_by(w: Worker) -> str:
        """How `_peak_mb` knows (recorded next to it in each result's `host`)."""
        if w.peak_since_task:
            return "kernel (the cgroup's peak, page cache and tmpfs included)"
        what = "the cgroup's usage, page cache and tmpfs included" if w.cgroup else "the tree's resident memory"
        return f"sampled every {MEMORY_CHECK_S:g} s ({what}): a shorter peak can be missed"

    def _over_memory(self, w: Worker) -> str | None:
        """Why the task must end if the kernel killed a process of the worker's tree for memory."""
        if w.cgroup is None or w.cgroup.oom_kills() == 0:  # a worker's cgroup dies with its first OOM kill
            return None
        return (f"the kernel killed a process of the worker's sandbox: its tree went over the "
                f"{self.settings.worker_memory_mb} MiB memory limit (worker killed)")

    def _watch_disk(self, done: threading.Event) -> None:
        """Thread: measure each live worker's host folders, again and again; one over its limit is
        reported to the loop as an `over_disk` event (the loop kills it). The wait between sweeps is
        `disk_check_wait` of the last sweep's time: half a second while the folders are small."""
        wait = DISK_CHECK_MIN_S
        while not done.wait(wait):
            began = time.monotonic()
            for w in list(self.workers.values()):
                if done.is_set() or w.proc.poll() is not None:
                    continue
                if (why := self._over_disk(w)) is not None:
                    self.events.put((w.index, {"type": "over_disk", "why": why, "proc": id(w.proc)}))
            wait = disk_check_wait(time.monotonic() - began)

    def _over_disk(self, w: Worker) -> str | None:
        """Why the worker must go if its host folders (home, staging, log) hold too much."""
        limit = self.settings.worker_disk_mb
        used = disk_use(w.root, max_entries=MAX_WORKER_FILES, max_depth=MAX_WORKER_DEPTH)
        if used.problem is not None:
            return f"the worker's files on this machine's disk cannot be measured: {used.problem} (worker killed; " \
                   "its files removed)"
        if used.bytes > limit * 2**20:
            return (f"the worker wrote {used.bytes / 2**20:.0f} MiB to this machine's disk, over the {limit} MiB "
                    "limit (worker killed; its files removed)")
        return None

    def _exited(self, w: Worker, queue_: deque[tuple[TaskSpec, str]], results: dict[str, TaskResult],
                specs: dict[str, TaskSpec], domains: dict[str, str], *, why: str, purge: bool = False) -> None:
        """purge: remove the worker's host folders once it is dead (its task's folder is not kept)."""
        why = self._over_memory(w) or why  # an exit the kernel's OOM kill caused says so
        w.peak_mb = self._peak_mb(w)  # read before the cgroup goes
        self._kill(w)
        del self.workers[w.index]
        if purge:
            try:
                remove_tree(w.root)
            except OSError as e:
                log.warning("worker %d: could not remove %s: %s", w.index, w.root, e)
        if w.task_id is not None:
            r = self._error(specs[w.task_id], domains[w.task_id], why).model_copy(
                update={"worker": w.index, "seconds": round(time.monotonic() - w.started_mono, 3)})
            self._finish(w, r, results)
        if not w.ready:
            self._start_failures[w.index] = self._start_failures.get(w.index, 0) + 1
            if self._start_failures[w.index] >= MAX_START_FAILURES:
                return
        if queue_ and not w.stopping:
            self._start(w.index)

    def _police(self, w: Worker, check_memory: bool, queue_: deque[tuple[TaskSpec, str]],
                results: dict[str, TaskResult], specs: dict[str, TaskSpec], domains: dict[str, str]) -> None:
        """Kill a worker whose task ran past its budget or whose tree uses too much memory, or that
        never became ready; its task is recorded as an error (disk: `_watch_disk`)."""
        s = self.settings
        why = None
        if w.task_id is not None and time.monotonic() - w.started_mono > s.task_timeout_s + KILL_GRACE_S:
            why = f"timed out after {s.task_timeout_s:g} s (worker killed)"
        elif not w.ready and time.monotonic() - w.launched > READY_TIMEOUT_S:
            why = f"the worker was not ready within {READY_TIMEOUT_S:g} s (worker killed)"
        elif w.cgroup is not None:
            why = self._over_memory(w)
            if why is None and check_memory:
                self._sample(w)
        elif check_memory and w.proc.poll() is None:
            used = self._sample(w)
            if used > s.worker_memory_mb * 1024 * 1024:
                why = (f"the worker used {used / 2**20:.0f} MiB, over the {s.worker_memory_mb} MiB limit "
                       "(worker killed)")
        if why is not None:
            log.warning("worker %d: %s", w.index, why)
            self._exited(w, queue_, results, specs, domains, why=why)

    # -- stopping -------------------------------------------------------------------------------

    def _stop(self, w: Worker) -> None:
        w.stopping = True
        _send(w, {"type": "stop"})

    def _kill(self, w: Worker) -> None:
        """The worker and its whole sandbox (bwrap's pid namespace dies with it)."""
        if w.proc.poll() is None:
            w.proc.kill()
        try:
            w.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("worker %d (pid %d) did not exit after SIGKILL", w.index, w.proc.pid)
        w.channel.close()
        if w.uplink is not None:
            w.uplink.close()
        if w.cgroup is not None and not w.cgroup.remove():
            log.warning("worker %d: its cgroup %s still has processes after 10 s", w.index, w.cgroup.folders[0])

    def stop_all(self) -> None:
        """Ask idle workers to stop, give them a moment to close their browsers, then kill."""
        for w in self.workers.values():
            if w.proc.poll() is None and w.task_id is None:
                self._stop(w)
        deadline = time.monotonic() + 15.0
        for w in self.workers.values():
            if w.task_id is None:
                try:
                    w.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("worker %d did not stop in time; killing it", w.index)
            self._kill(w)

    def _log_tail(self, index: int) -> str:
        logs = sorted(self.settings.out_dir.glob(f".workers/w{index}-*/worker.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return "no log"
        lines = [ln for ln in logs[-1].read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return (lines[-1][:300] if lines else "empty log") + f" (log: {logs[-1]})"
