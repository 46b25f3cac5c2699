"""`run_vm_tasks`: OSWorld tasks on OSWorld's own machinery, one worker thread per VM.

Per task: the worker's bridge (tasks/osworld_bridge.py, OSWorld's `desktop-env` in its own
environment) resets the VM and runs the task's setup steps with OSWorld's `SetupController`; our
agent and model run the episode through `OSWorldVMEnv` (HTTP to the in-VM server); the bridge
scores it with OSWorld's own `DesktopEnv.evaluate` (getters, metrics, postconfig; an infeasible
task scores 1 when the agent reported failure). Threads are enough: a worker's work is HTTP and
the bridge's, and the model answers every worker from this process (one generation at a time, or
batched together when the backend batches concurrent calls).

Results are the local runner's: `<out>/<task id>/result.json` and OSWorld's `result.txt` (the
score), `traj.jsonl` and `report.html` in the trajectory folder, `results.json/csv` and
`index.html` with per-domain rates. Resumable like the local runner (scored tasks are kept). A VM
that stops answering (at reset, during the episode: one probe after an episode error tells, or at
scoring) or a bridge that dies marks the task `error`, the worker's bridge is recreated (a provider
starts a fresh VM) and the task is retried once. The live view and Ctrl-C behave as the local
runner's (tasks/run_progress.py; partial results written, late results dropped).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import AgentError, VMServerError, VMUnreachableError
from kimi_agent.listener import Listener, Phase, action_text
from kimi_agent.tasks.loader import LoadedTask, TaskSet
from kimi_agent.tasks.model_link import BackendLocks
from kimi_agent.tasks.osworld_bridge import Bridge, BridgeDeadError, BridgeTarget
from kimi_agent.tasks.run_progress import ProgressView, phase_label
from kimi_agent.tasks.runner import (
    INTERRUPTED,
    BackendFactory,
    ResultStatus,
    RunSettings,
    RunSummary,
    TaskResult,
    _task_dir,
    domain_of,
    episode_settings,
    episode_update,
    read_result,
    run_live,
    write_result,
)
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.vm_tasks import read_raw_task, vm_problem, vm_spec

if TYPE_CHECKING:
    from kimi_agent.env.osworld_vm import OSWorldVMEnv
    from kimi_agent.model_runtime.backends.base import Backend

log = logging.getLogger("kimi_agent.tasks.vm")
LAST_ACTION = {"success": "DONE", "failure": "FAIL"}  # OSWorld's action_history ending
CACHE_DIR = ".osworld_cache"  # under --out: the bridge's per-task downloads (OSWorld's cache_dir)


@dataclass
class _Job:
    loaded: LoadedTask
    task: dict[str, Any]  # the task file as OSWorld reads it
    spec: TaskSpec
    attempt: int = 1


_LOCKS = BackendLocks()


class SharedBackend:
    """A task's backend (the factory's; a model one is cached and shared by every worker thread),
    called one generation at a time unless it batches concurrent calls (`BackendLocks`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.name = backend, backend.name

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with _LOCKS.lock(self.backend):
            return self.backend.generate(*args, **kwargs)


def run_vm_task(job: _Job, bridge: Bridge, factory: BackendFactory, settings: RunSettings, *,
                worker: int = 0, listener: Any = None) -> TaskResult:
    """Bridge reset -> episode through OSWorldVMEnv -> bridge evaluate. Task failures come back as
    results; a dead VM or bridge raises (VMUnreachableError, BridgeDeadError) for the worker."""
    from kimi_agent.env.osworld_vm import OSWorldVMEnv
    from kimi_agent.loop import Agent

    spec = job.spec
    out = settings.out_dir
    task_dir = _task_dir(out, spec.id)
    task_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = TaskResult(task_id=spec.id, instruction=spec.instruction, status="error", worker=worker,
                      path=str(task_dir), domain=domain_of(job.loaded.path),
                      host={"vm": bridge.target.label, "attempt": job.attempt})

    def done(**update: Any) -> TaskResult:
        return base.model_copy(update={**update, "seconds": time.monotonic() - started})

    try:
        reset = bridge.reset(job.task, timeout_s=settings.task_timeout_s)
    except (VMUnreachableError, BridgeDeadError):
        raise
    except AgentError as e:
        return done(reason=f"setup failed: {e}")
    backend = SharedBackend(factory(spec, None, ""))  # no local host on a VM
    env = OSWorldVMEnv(reset.server, browser_shortcuts=False)
    try:
        episode = Agent(backend, env, episode_settings(settings, task_dir), listener=listener).run_episode(spec.instruction)
        if episode.status == "error":
            _raise_if_gone(env, episode.reason)
    finally:
        env.close()
    update = episode_update(episode, out)
    if episode.status == "error":
        return done(**{**update, "reason": f"episode error: {episode.reason}"})
    try:
        ev = bridge.evaluate(LAST_ACTION.get(episode.status), timeout_s=settings.task_timeout_s)
    except (VMUnreachableError, BridgeDeadError):
        raise
    except AgentError as e:
        return done(**{**update, "reason": f"evaluation failed: {e}"})
    status: ResultStatus = "success" if ev.score >= 1.0 else "fail"
    return done(**{"reason": episode.reason, **update}, status=status, score=ev.score,
                evaluation={"by": f"desktop-env {bridge.hello.desktop_env}", **ev.details, "score": ev.score})


def _raise_if_gone(env: OSWorldVMEnv, reason: str) -> None:
    """After an episode error: one bounded request to the VM's server. No answer raises
    VMUnreachableError (the VM died during the episode: the worker recreates it and retries the
    task once); an answer, even an error status, means the episode's error was the task's own."""
    try:
        env.cursor_position()
    except VMUnreachableError as e:
        raise VMUnreachableError(f"{e} (the episode had ended with: {reason})", endpoint=e.endpoint) from e
    except VMServerError:
        return


class _Worker(threading.Thread):
    def __init__(self, index: int, target: BridgeTarget, jobs: queue.Queue[_Job | None], factory: BackendFactory,
                 settings: RunSettings, on_result: Callable[[_Job, TaskResult, bool], None],
                 start_bridge: Callable[[BridgeTarget, Path], Bridge]) -> None:
        super().__init__(name=f"vm-worker-{index}", daemon=True)
        self.index, self.target, self.jobs, self.factory, self.settings = index, target, jobs, factory, settings
        self.on_result, self.start_bridge = on_result, start_bridge
        self.bridge: Bridge | None = None
        # what the live view shows (tasks/run_progress.py): the task, since when, its step and phase
        self.task_id: str | None = None
        self.started, self.step, self.step_no, self.phase, self.label = 0.0, "", 0, "", target.label

    def run(self) -> None:
        cache = self.settings.out_dir / CACHE_DIR / str(self.index)
        while (job := self.jobs.get()) is not None:
            vm_dead = False
            self.task_id, self.started, self.step, self.step_no, self.phase = job.spec.id, time.time(), "reset", 0, ""
            try:
                if self.bridge is None:
                    self.step = "starting the bridge"
                    self.bridge = self.start_bridge(self.target, cache)
                    self.step = "reset"
                result = run_vm_task(job, self.bridge, self.factory, self.settings, worker=self.index,
                                     listener=_StepState(self))
            except (VMUnreachableError, BridgeDeadError) as e:
                self._drop_bridge()
                vm_dead = True
                result = _error(job, self.settings, f"the VM stopped answering ({e})", worker=self.index)
            except AgentError as e:  # e.g. the bridge could not start
                self._drop_bridge()
                result = _error(job, self.settings, str(e), worker=self.index)
            except Exception as e:  # a bug: the task still ends with a reason and the run goes on
                log.exception("worker %d: %s", self.index, job.task.get("id"))
                self._drop_bridge()
                result = _error(job, self.settings, f"internal error: {type(e).__name__}: {e}", worker=self.index)
            self.task_id, self.step, self.step_no, self.phase = None, "", 0, ""
            self.on_result(job, result, vm_dead)
        self._drop_bridge()

    def _drop_bridge(self) -> None:
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None


class _StepState(Listener):
    """Agent listener that keeps a VM worker's step and phase current for the live view."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    def on_phase(self, step: int, phase: Phase, detail: str = "") -> None:
        self.worker.step_no = step
        self.worker.phase = phase_label(phase, detail)

    def on_step(self, record: Any) -> None:
        self.worker.step = f"step {getattr(record, 'step', 0)}: {action_text(record)[:80]}"


def _error(job: _Job, settings: RunSettings, reason: str, *, worker: int) -> TaskResult:
    spec = job.spec
    return TaskResult(task_id=spec.id, instruction=spec.instruction, status="error", reason=reason, worker=worker,
                      path=str(_task_dir(settings.out_dir, spec.id)), domain=domain_of(job.loaded.path),
                      host={"attempt": job.attempt})


def run_vm_tasks(tasks: TaskSet, backend_factory: BackendFactory, settings: RunSettings,
                 targets: list[BridgeTarget], *, venv: Path | None = None,
                 start_bridge: Callable[[BridgeTarget, Path], Bridge] | None = None,
                 progress: bool = False) -> RunSummary:
    """Every task that parses, on the given VMs (one worker per target).

    Tasks whose steps, getters or metrics the bridge lacks are `unsupported` with their names;
    tasks the loader found invalid are listed unrun. `start_bridge` defaults to `Bridge.start`.
    Prints nothing unless `progress` (the CLI's live view: each VM's task, step and phase). Ctrl-C
    ends the run with the tasks not finished as `interrupted` (neither scored nor errored) and the
    outputs written (the summary's `interrupted` is set; `--resume` finishes the run).
    """
    if not targets:
        raise ValueError("run_vm_tasks needs at least one VM target")
    s = settings
    s.out_dir.mkdir(parents=True, exist_ok=True)
    starter = start_bridge or (lambda target, cache: Bridge.start(target, cache_dir=cache, venv=venv))
    results: dict[str, TaskResult] = {}
    order: list[str] = []
    jobs: list[_Job] = []
    checker = starter(targets[0], s.out_dir / CACHE_DIR / "check")  # `check` never touches the VM
    try:
        seen: set[str] = set()
        for i, t in enumerate(tasks):
            task = read_raw_task(t)
            problem = vm_problem(t, task, seen)
            if problem is not None or task is None:
                order.append(f"#{i}")
                results[f"#{i}"] = TaskResult(task_id=t.id, status="invalid", reason=problem or "",
                                              path=str(t.path), domain=domain_of(t.path))
                continue
            spec = vm_spec(t, task, seen)
            order.append(spec.id)
            task_dir = _task_dir(s.out_dir, spec.id)
            kept = read_result(task_dir) if s.resume else None
            if kept is not None and kept.status in ("success", "fail"):  # scored: kept; the rest run again
                results[spec.id] = kept
                continue
            if task_dir.exists():
                shutil.rmtree(task_dir)
            missing = checker.check(task)
            if missing:
                results[spec.id] = TaskResult(task_id=spec.id, instruction=spec.instruction,
                                              status="unsupported", reason="not in the OSWorld bridge: "
                                              + "; ".join(missing), path=str(task_dir), domain=domain_of(t.path))
                continue
            jobs.append(_Job(t, task, spec))
    finally:
        checker.close()
    by_id = {job.spec.id: job for job in jobs}
    return run_live(s.out_dir, order, results, progress,
                    lambda view: _run_jobs(jobs, backend_factory, s, targets, starter, results, view),
                    lambda task_id: _error(by_id[task_id], s, INTERRUPTED, worker=-1))


def _run_jobs(jobs: list[_Job], factory: BackendFactory, s: RunSettings, targets: list[BridgeTarget],
              starter: Callable[[BridgeTarget, Path], Bridge], results: dict[str, TaskResult],
              view: ProgressView) -> None:
    if not jobs:
        return
    pending: queue.Queue[_Job | None] = queue.Queue()
    for job in jobs:
        pending.put(job)
    remaining = len(jobs)
    lock = threading.Lock()
    stopped = threading.Event()

    def on_result(job: _Job, result: TaskResult, vm_dead: bool) -> None:
        nonlocal remaining
        if stopped.is_set():  # after Ctrl-C the run's outputs are written; a late result is dropped
            return
        write_result(s.out_dir, result)
        with lock:
            results[result.task_id] = result
            if vm_dead and job.attempt == 1:
                log.warning("%s: %s; retrying once on a fresh bridge", result.task_id, result.reason)
                pending.put(_Job(job.loaded, job.task, job.spec, attempt=2))
                return
            view.finished(result)
            remaining -= 1
            if remaining == 0:
                for _ in targets:
                    pending.put(None)

    workers = [_Worker(i, target, pending, factory, s, on_result, starter) for i, target in enumerate(targets)]
    view.workers = {w.index: w for w in workers}
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(0.25)
                view.refresh()
    except KeyboardInterrupt:
        stopped.set()  # the workers take no further task; their bridges close as they return
        while True:
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        for _ in workers:
            pending.put(None)
        raise
