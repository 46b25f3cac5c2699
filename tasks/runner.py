"""`run_tasks`: OSWorld-format tasks through the agent, N workers in parallel, resumable.

Each worker is a process in its own bubblewrap sandbox (tasks/sandbox.py, tasks/worker_pool.py)
with its own `DesktopEnv` (its own Xvfb display), home at /home/user, Chromium profile and
debugging port, so episodes never touch each other or this machine; the model stays in the
runner's process and answers every worker (tasks/model_link.py). Per task: reset the home, run
the setup steps, run the agent, detect a crashed browser or display (episode -> `error`, the
environment is rebuilt, the run goes on), run postconfig and score. `<out>/<task id>/result.json`
(and OSWorld's `result.txt`, the score) is written atomically next to the trajectory folder for
every task that was started, a failed setup step included; with `resume`, scored tasks are not
rerun, while errored and half-done task folders are cleared and rerun. Runs follow OSWorld's
semantics: no action needs a confirmation unless `confirm=True`, and every refused action is
listed in the task's result. The first screenshot is taken once the screen has drawn. A worker stuck past its wall-clock
budget (or over its memory limit) is killed with its whole sandbox and replaced. The parent shows
live progress and writes `results.json`, `results.csv` and `index.html`, after Ctrl-C too: the
unfinished tasks are then `interrupted` (neither scored nor errored; `--resume` reruns them), and a
task that was running keeps what its worker had written (its partial trajectory) in its folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kimi_agent.env.process import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl
from kimi_agent.errors import AgentError, ArtifactError, ConfigError, TaskError
from kimi_agent.tasks.context import EpisodeEnd
from kimi_agent.tasks.loader import LoadedTask, TaskSet, id_problem, load_tasks
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.tree_walk import copy_tree, kind_of, remove_tree

if TYPE_CHECKING:
    from kimi_agent.env.desktop import DesktopEnv
    from kimi_agent.loop import AgentSettings
    from kimi_agent.model_runtime.backends.base import Backend
    from kimi_agent.result import EpisodeResult
    from kimi_agent.tasks.host import LocalHost

ResultStatus = Literal["success", "fail", "error", "unsupported", "invalid", "interrupted"]
#: Statuses that count in the success rate (an error counts as 0); the others were not scored.
SCORED_STATUSES = ("success", "fail", "error")
# (task, the worker's host, the local pages' base URL) -> a backend. A factory whose `in_worker`
# attribute is False (the model backends of `tasks.cli.BackendChoice`) is called in the runner's
# process with host None and serves every worker; any other is pickled into each worker (so it
# must be a module-level function or an instance of a module-level class) and called there.
BackendFactory = Callable[[TaskSpec, "LocalHost", str], "Backend"]
RESULT_FILE = "result.json"
SCORE_FILE = "result.txt"  # OSWorld's per-task score file
FIRST_FRAME_CAP_S = 8.0
log = logging.getLogger("kimi_agent.tasks")
KILL_GRACE_S = 60.0
STAGED_COPY_LIMIT = 8 << 30  # bytes of a staged task folder copied into <out> (--worker-disk bounds it first)
STAGED_MAX_FILES = 100_000  # its entries
STAGED_MAX_DEPTH = 64  # how deep its folders nest
RESULT_READ_LIMIT = 16 * 2**20  # bytes of a result.json the runner reads back (a task folder is sandbox-written)
_PATH_PART = re.compile(r"[A-Za-z0-9._-]+")  # one folder name of a trajectory path (no scheme, no separator)


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int = Field(default=1, ge=1, le=64)
    max_steps: int = Field(default=15, ge=1)
    out_dir: Path = Path("runs/tasks")
    resume: bool = False
    task_timeout_s: float = Field(default=900.0, gt=0, description="wall-clock budget of one task")
    start_timeout_s: float = Field(default=20.0, gt=0, le=600, description="how long a worker's Xvfb may take to "
                                   "report its display, and each Chromium a task starts its debugging port")
    allow_network: bool = False
    screen: tuple[int, int] = (1920, 1080)
    client_password: str = "password"
    frame_format: Literal["png", "jpeg"] = "png"
    max_seconds: float | None = Field(default=None, gt=0, description="episode budget (None: task_timeout_s)")
    temperature: float = Field(default=0.0, ge=0, le=2)
    thinking: bool = False
    history_images: int = Field(default=3, ge=1)
    history_policy: Literal["exact", "chunked"] = "exact"
    confirm: bool = Field(default=False, description="refuse risky actions (nobody can confirm in a run); "
                          "default: OSWorld semantics, no confirmations")
    sandbox: bool = Field(default=True, description="run every worker in a bubblewrap sandbox (tasks/sandbox.py); "
                          "False (--no-sandbox): workers act on this machine")
    worker_memory_mb: int = Field(default=16384, ge=256, description="a worker's whole process tree (tmpfs "
                                  "included) may use this much memory: the kernel's limit where cgroups can be "
                                  "written (tasks/cgroups.py), else the tree is killed above this resident memory")
    worker_disk_mb: int = Field(default=8192, ge=64, description="what one worker may write to this machine's "
                                "disk (its home, staged task folders and log), polled every few seconds: above "
                                "it the worker is killed, its task is an error and its files are removed")
    worker_pids: int = Field(default=2048, ge=64, description="processes and threads of one worker's tree "
                             "(a fork bomb fails inside); needs cgroups")
    worker_cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU cores' worth of time one "
                                      "worker's tree may use (None: this machine's cores / workers, at least "
                                      "1); needs cgroups")


class TaskResult(BaseModel):
    task_id: str
    instruction: str = ""
    status: ResultStatus
    score: float | None = None
    steps: int = 0
    seconds: float = 0.0
    episode_status: str | None = None
    reason: str = ""
    trajectory: str | None = None  # relative to the run's out_dir
    evaluation: dict[str, Any] | None = None
    worker: int | None = None
    host: dict[str, Any] | None = None  # the worker's display, debugging port and profile
    path: str = ""
    domain: str = ""  # the folder the task file sits in (OSWorld's examples/<domain>/)
    refusals: list[dict[str, Any]] = Field(default_factory=list)  # actions the safety policy refused
    first_frame: dict[str, Any] | None = None  # how long the runner waited for the screen to draw


def domain_of(path: str | Path) -> str:
    return Path(path).parent.name


@dataclass
class RunSummary:
    out_dir: Path
    results: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C ended the run; its unfinished tasks have the status "interrupted"

    @property
    def scored(self) -> list[TaskResult]:
        return [r for r in self.results if r.status in SCORED_STATUSES]

    @property
    def success_rate(self) -> float:
        return _rate(self.scored)

    @property
    def errored(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "error"]

    @property
    def unfinished(self) -> list[TaskResult]:
        """Tasks a Ctrl-C stopped, running or not yet started (`--resume` runs them)."""
        return [r for r in self.results if r.status == "interrupted"]

    def domain_rates(self) -> dict[str, dict[str, float]]:
        """Per domain: {"rate", "scored", "errored", "total"} (rate over scored tasks, errors count as 0)."""
        out: dict[str, dict[str, float]] = {}
        for domain in sorted({r.domain for r in self.results}):
            rs = [r for r in self.results if r.domain == domain]
            scored = [r for r in rs if r.status in SCORED_STATUSES]
            out[domain] = {"rate": _rate(scored), "scored": len(scored),
                           "errored": sum(r.status == "error" for r in rs), "total": len(rs)}
        return out


def _rate(scored: list[TaskResult]) -> float:
    return sum(r.score or 0.0 for r in scored) / len(scored) if scored else 0.0


# ---------------------------------------------------------------- files

def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all, never through a link: the data goes to a new temporary
    file in the same folder (`mkstemp`: O_CREAT|O_EXCL|O_NOFOLLOW, a fresh random name), which then
    replaces `path`. A `path` that is a symbolic link (planted by a sandboxed task) is replaced
    itself; its target is never opened."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=2, default=str).encode("utf-8"))


def write_result(out: Path, result: TaskResult) -> None:
    """`result.json` and OSWorld's `result.txt` (the score, or "error") in the task folder; a task
    folder that is a symbolic link is removed first (the link, not its target)."""
    task_dir = _task_dir(out, result.task_id)
    if task_dir.is_symlink():
        task_dir.unlink()
    task_dir.mkdir(parents=True, exist_ok=True)
    score = "error" if result.score is None else f"{result.score:g}"
    write_bytes_atomic(task_dir / SCORE_FILE, (score + "\n").encode("utf-8"))
    write_json_atomic(task_dir / RESULT_FILE, result.model_dump(mode="json"))


def read_result(task_dir: Path) -> TaskResult | None:
    """The finished result in `task_dir`, or None (missing, unreadable, not a regular file or over
    `RESULT_READ_LIMIT`: the task reruns)."""
    from kimi_agent.trajectory import read_text

    try:
        return TaskResult.model_validate_json(read_text(task_dir / RESULT_FILE, max_bytes=RESULT_READ_LIMIT))
    except (ArtifactError, ValueError):
        return None


def trajectory_problem(task_id: str, trajectory: str) -> str | None:
    """Why `trajectory` (a result's, sent by an untrusted worker) is not a relative path inside its
    task's folder (`<task id>/<run folder>`, plain folder names: no scheme, no `..`, not absolute),
    or None. Pages link it and the runner reads from it, so nothing else is accepted."""
    parts = trajectory.split("/")
    if trajectory.startswith("/") or "\\" in trajectory:
        return f"trajectory {trajectory!r} is not a relative path"
    if parts[0] != task_id or len(parts) < 2:
        return f"trajectory {trajectory!r} is not inside the task's folder {task_id!r}"
    if any(p in (".", "..") or not _PATH_PART.fullmatch(p) for p in parts[1:]):
        return f"trajectory {trajectory!r} has a part that is not a plain folder name"
    return None


def adopt_staged(staged: Path, final: Path, *, max_bytes: int = STAGED_COPY_LIMIT) -> list[str]:
    """Copy a worker's staged task folder into `final` (in `<out>`, a folder only the runner writes)
    and remove the staged one: folders and regular files only, without set-id bits, at most
    `max_bytes` and `STAGED_MAX_FILES` entries `STAGED_MAX_DEPTH` deep (`tree_walk.copy_tree`); returns
    notes on what was left out, for the task's result (`host.notes`). A copy, not a move: a task
    process still in the staged folder (its working folder, an open descriptor) keeps reaching only
    the staged one, which goes away. A staged "folder" that is a link or a file is removed, never
    followed."""
    remove_tree(final)
    try:
        mode = os.lstat(staged).st_mode
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(mode):
        staged.unlink()
        notes = [f"the staged task folder was a {kind_of(mode)}, not a folder: removed"]
    else:
        try:
            notes = [f"{n} (staged task folder)" for n in copy_tree(
                staged, final, max_depth=STAGED_MAX_DEPTH, max_entries=STAGED_MAX_FILES, max_bytes=max_bytes)]
        except OSError as e:
            notes = [f"the staged task folder could not be copied: {e}"]
        try:
            remove_tree(staged)
        except OSError as e:
            notes.append(f"the staged task folder could not be removed: {e}")
    if notes:
        log.warning("%s: %s", final.name, "; ".join(notes))
    return notes


def _task_dir(out: Path, task_id: str) -> Path:
    """`<out>/<task id>`; raises TaskError unless the id is one safe path component, so a task
    folder (which the runner clears with rmtree) is always inside `out`."""
    problem = id_problem(task_id)
    if problem is not None:
        raise TaskError(problem)
    path = out / task_id
    if path.resolve().parent != out.resolve():
        raise TaskError(f"task folder {path} would not be inside {out}")
    return path


# ---------------------------------------------------------------- one task (in a worker)

def _browser_crash(host: LocalHost, browser: Any) -> str | None:
    if browser is None or browser.running:
        return None
    rc = browser.stop()
    return None if rc == 0 else f"Chromium exited during the episode (exit code {rc})"


def run_one(spec: TaskSpec, env: DesktopEnv, host: LocalHost, backend: Backend, settings: RunSettings,
            *, worker: int = 0, listener: Any = None) -> TaskResult:
    """Setup -> episode -> postconfig -> score for one task; never raises for task failures."""
    from kimi_agent.loop import Agent
    from kimi_agent.tasks.evaluate import evaluate, run_steps
    from kimi_agent.tasks.first_frame import screen_grabber, wait_until_drawn

    out = settings.out_dir
    task_dir = _task_dir(out, spec.id)
    task_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = TaskResult(task_id=spec.id, instruction=spec.instruction, status="error", worker=worker,
                      path=str(task_dir))
    try:
        host.reset()
        run_steps(host, spec.config, where="config")
    except AgentError as e:
        return base.model_copy(update={"reason": f"setup failed: {e}", "seconds": time.monotonic() - started})
    first = wait_until_drawn(screen_grabber(env), cap_s=FIRST_FRAME_CAP_S)
    browser = host.browser
    episode = Agent(backend, env, episode_settings(settings, task_dir), listener=listener).run_episode(spec.instruction)
    update = {**episode_update(episode, out), "first_frame": first.record()}
    crash = _browser_crash(host, browser)
    if crash is not None or episode.status == "error":
        reason = crash or f"episode error: {episode.reason}"
        return base.model_copy(update={**update, "reason": reason, "seconds": time.monotonic() - started})
    try:
        ev = evaluate(spec, host, EpisodeEnd(episode.status, episode.steps), cache_dir=task_dir / "eval_cache")
    except AgentError as e:
        return base.model_copy(update={**update, "reason": f"evaluation failed: {e}",
                                       "seconds": time.monotonic() - started})
    status: ResultStatus = "success" if ev.score >= 1.0 else "fail"
    return base.model_copy(update={"reason": episode.reason, **update, "status": status, "score": ev.score,
                                   "evaluation": ev.record(), "seconds": time.monotonic() - started})


def episode_settings(settings: RunSettings, task_dir: Path) -> AgentSettings:
    """The agent's settings for one task's episode of a run (local or on a VM), written under `task_dir`."""
    from kimi_agent.loop import AgentSettings
    from kimi_agent.model_runtime.backends.base import Sampling
    from kimi_agent.safety import SafetySettings

    return AgentSettings(max_steps=settings.max_steps, max_seconds=settings.max_seconds or settings.task_timeout_s,
                         thinking=settings.thinking, history_images=settings.history_images,
                         history_policy=settings.history_policy,
                         sampling=Sampling(temperature=settings.temperature, top_p=0.95, max_new_tokens=1024),
                         out_dir=task_dir, frame_format=settings.frame_format,
                         safety=SafetySettings(confirm_risky=settings.confirm))


def episode_update(episode: EpisodeResult, out: Path) -> dict[str, Any]:
    """What a finished episode adds to its task's result (steps, status, trajectory, refusals,
    and a reason naming the refusals); writes the episode's report."""
    update: dict[str, Any] = {"steps": episode.steps, "episode_status": episode.status,
                              "trajectory": os.path.relpath(episode.run_dir, out),
                              "refusals": refusals(episode.run_dir)}
    if update["refusals"]:
        update["reason"] = f"{len(update['refusals'])} action(s) refused; " + episode.reason
    _write_report(episode.run_dir)
    return update


def refusals(run_dir: Path) -> list[dict[str, Any]]:
    """Every action the safety policy refused in a trajectory: {step, action, risk, reason}."""
    from kimi_agent.trajectory import read_steps

    out: list[dict[str, Any]] = []
    try:
        records = read_steps(run_dir)
    except ArtifactError as e:  # the task's score stands; its report says the same
        log.warning("could not list the refused actions: %s", e)
        return out
    for rec in records:
        for action in rec.get("actions") or []:
            safety = action.get("safety") or {}
            if safety.get("allowed") is False:
                out.append({"step": rec.get("step"), "action": action.get("action") or action.get("type"),
                            "risk": safety.get("risk"), "reason": safety.get("reason")})
    return out


def _write_report(run_dir: Path) -> None:
    """The trajectory's report.html (linked from the run's index.html), OSWorld's traj.jsonl and
    recording.mp4, those two also in the task folder (the run folder's parent), as OSWorld has them."""
    from kimi_agent.artifacts import write_episode_artifacts

    write_episode_artifacts(run_dir, task_dir=run_dir.parent)


def _healthy(env: DesktopEnv) -> bool:
    try:
        env.observe()
    except (AgentError, OSError):
        return False
    return True


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux parent-death signal); a
    worker's SIGTERM handling then stops its browser and display."""
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def keep_tasks_out() -> None:
    """Make this process undumpable (Linux `PR_SET_DUMPABLE` 0): a task's commands run as the same
    user in the worker's sandbox, and could otherwise attach to the worker (ptrace, `/proc/<pid>/mem`,
    `pidfd_getfd` on its channel to the runner) and forge what it reports. Children it starts are
    dumpable again once they exec."""
    prctl(PR_SET_DUMPABLE, 0)


# ---------------------------------------------------------------- the parent

def _skipped(t: LoadedTask) -> TaskResult:
    status: ResultStatus = "unsupported" if t.status == "unsupported" else "invalid"
    reason = "; ".join(t.reasons) if t.status == "unsupported" else (t.error or "")
    return TaskResult(task_id=t.id, instruction=t.spec.instruction if t.spec else "", status=status,
                      reason=reason, path=str(t.path), domain=domain_of(t.path))


def run_tasks(tasks: TaskSet | Iterable[str | Path] | str | Path, backend_factory: BackendFactory,
              settings: RunSettings | None = None, *, progress: bool = False) -> RunSummary:
    """Run every runnable task; unsupported and invalid ones are listed in the results unrun.

    Prints nothing unless `progress` (the CLI's live view on the terminal); the results are in the
    returned summary and in `results.json`/`results.csv`/`index.html` under `settings.out_dir`.
    """
    s = settings or RunSettings()
    if not isinstance(tasks, TaskSet):
        tasks = load_tasks(tasks, allow_network=s.allow_network)
    make_out_dir(s.out_dir)
    results: dict[str, TaskResult] = {}  # runnable tasks by id (unique), skipped ones by "#<index>"
    order: list[str] = []
    pending: list[TaskSpec] = []
    domains: dict[str, str] = {}
    for i, t in enumerate(tasks):
        if t.status != "runnable" or t.spec is None:
            order.append(f"#{i}")
            results[f"#{i}"] = _skipped(t)
            continue
        order.append(t.spec.id)
        task_dir = _task_dir(s.out_dir, t.spec.id)
        done = read_result(task_dir) if s.resume else None
        if done is not None and done.status in ("success", "fail"):  # scored: kept
            results[t.id] = done
            continue
        if os.path.lexists(task_dir):
            remove_tree(task_dir)  # half-done (or a previous run's, without --resume): start over
        pending.append(t.spec)
        domains[t.spec.id] = domain_of(t.path)
    specs = {spec.id: spec for spec in pending}

    def not_started(task_id: str) -> TaskResult:  # the ones that were running have their result already
        return TaskResult(task_id=task_id, instruction=specs[task_id].instruction, status="interrupted",
                          reason=NOT_STARTED, domain=domains[task_id])

    return run_live(s.out_dir, order, results, progress,
                    lambda view: _run_pending(pending, domains, backend_factory, s, results, view), not_started)


INTERRUPTED = "interrupted (Ctrl-C) before it finished"
NOT_STARTED = "not started: the run was interrupted (Ctrl-C)"


def make_out_dir(out_dir: Path) -> None:
    """Create the run's output folder; raises ConfigError naming it when it cannot be a folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out_dir}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out_dir}: the folder is not writable")


def run_live(out_dir: Path, order: list[str], results: dict[str, TaskResult], progress: bool,
             body: Callable[[Any], None], interrupted_result: Callable[[str], TaskResult]) -> RunSummary:
    """A run's common end: `body(view)` under the live progress view (`progress`: on the terminal);
    on Ctrl-C every id of `order` still without a result gets `interrupted_result(id)` with the
    status `interrupted` (not scored, not an error; `--resume` runs it); then the outputs are
    written. A result's `path` under `out_dir` is kept only where that folder exists. `order`: every
    id, as the results list them."""
    from kimi_agent.tasks.report import ProgressView, write_outputs

    view = ProgressView(total=len(order), enabled=progress)
    for r in results.values():
        view.finished(r)
    interrupted = False
    try:
        with view.live() if progress else nullcontext():
            body(view)
    except KeyboardInterrupt:
        interrupted = True
        for task_id in order:
            if task_id not in results:
                results[task_id] = interrupted_result(task_id).model_copy(
                    update={"status": "interrupted", "score": None})
    summary = RunSummary(out_dir, [_existing_path(out_dir, results[i]) for i in order if i in results],
                         interrupted=interrupted)
    write_outputs(summary)
    return summary


def _existing_path(out_dir: Path, r: TaskResult) -> TaskResult:
    """`r` without a `path` into `out_dir` that names no folder (a task that never wrote one)."""
    if r.path and Path(r.path).parent.resolve() == out_dir.resolve() and not Path(r.path).is_dir():
        return r.model_copy(update={"path": ""})
    return r


def keep_interrupted(out: Path, staged: Path, spec: TaskSpec, domain: str, *, worker: int,
                     seconds: float) -> TaskResult:
    """The result of a task that was running at Ctrl-C: what its worker wrote (`staged`, its task
    folder in the worker's staging folder) moves to `<out>/<task id>` with a `result.json` whose
    status is `interrupted` (`--resume` reruns it), its steps so far and its partial trajectory."""
    final = _task_dir(out, spec.id)
    r = TaskResult(task_id=spec.id, instruction=spec.instruction, status="interrupted", reason=INTERRUPTED,
                   worker=worker, seconds=round(seconds, 3), domain=domain)
    try:
        notes = adopt_staged(staged, final)
        r = r.model_copy(update={**partial_episode(out, final), "path": str(final),
                                 "host": {"notes": notes} if notes else None})
        write_result(out, r)
    except OSError as e:  # the result still says interrupted in results.json
        log.warning("%s: could not keep its partial folder: %s", spec.id, e)
    return r


def partial_episode(out: Path, final: Path) -> dict[str, Any]:
    """What a task folder (`final`, in `out`) holds of an episode cut short (Ctrl-C, a task killed
    past its budget or its memory): `{steps, trajectory}` of its newest run folder, or {} without one."""
    from kimi_agent.trajectory import read_steps

    runs = sorted((d for d in final.iterdir() if d.is_dir() and not d.is_symlink() and
                   (d / "run.json").is_file()), key=lambda d: d.name) if final.is_dir() else []
    if not runs:
        return {}
    try:
        steps = len(read_steps(runs[-1]))
    except ArtifactError as e:
        log.warning("%s: %s", final.name, e)
        steps = 0
    return {"steps": steps, "trajectory": os.path.relpath(runs[-1], out)}


def _run_pending(pending: list[TaskSpec], domains: dict[str, str], factory: BackendFactory, s: RunSettings,
                 results: dict[str, TaskResult], view: Any) -> None:
    from kimi_agent.tasks.sandbox import host_acting, probe
    from kimi_agent.tasks.uplink import uplink_problem
    from kimi_agent.tasks.worker_pool import WorkerPool

    if not pending:
        return
    sandbox = s.sandbox
    if sandbox and (why := probe()) is not None:
        log.warning("no sandbox: %s", why)
        sandbox = False
        runnable = []
        for spec in pending:
            acts = host_acting(spec)
            if not acts:
                runnable.append(spec)
                continue
            results[spec.id] = TaskResult(
                task_id=spec.id, instruction=spec.instruction, status="unsupported", domain=domains[spec.id],
                reason=f"its steps act on this machine ({', '.join(acts)}) and there is no sandbox ({why}); "
                       "pass --no-sandbox to run it anyway", path=str(_task_dir(s.out_dir, spec.id)))
            view.finished(results[spec.id])
        pending = runnable

    if s.allow_network and sandbox and pending and (why := uplink_problem()) is not None:
        n = min(s.workers, len(pending))
        if n > 1:
            log.warning("--allow-network: the %d workers share this machine's network (none can have its own: %s), "
                        "so a task can reach this machine's loopback services and another worker's browser and "
                        "display; run task files you do not trust with --workers 1", n, why)
        else:
            log.warning("--allow-network: the worker shares this machine's network (it cannot have its own: %s), "
                        "so a task can reach this machine's loopback services", why)

    def on_event(kind: str, worker: Any, payload: Any) -> None:
        if kind == "done":
            view.finished(payload)

    pool = WorkerPool(s, factory, sandbox=sandbox, on_event=on_event)
    view.workers = pool.workers
    try:
        pool.run([(spec, domains[spec.id]) for spec in pending], results, on_tick=view.refresh)
    except KeyboardInterrupt:  # the pool has stopped its workers; keep what the running tasks wrote
        specs = {spec.id: spec for spec in pending}
        for w in list(pool.workers.values()):
            if w.task_id in specs and w.task_id not in results:
                results[w.task_id] = keep_interrupted(s.out_dir, w.staging / w.task_id, specs[w.task_id],
                                                      domains[w.task_id], worker=w.index,
                                                      seconds=time.monotonic() - w.started_mono)
                w.task_id = None
        raise
    for spec in pending:
        if spec.id in results and all(r is not results[spec.id] for r in view.done):
            view.finished(results[spec.id])
