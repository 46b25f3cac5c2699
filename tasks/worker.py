"""A task worker: `python -P -m kimi_agent.tasks.worker FD`, started by the runner inside its sandbox
(`-P`: no task-writable folder is on its import path; its working folder is the sandbox's read-only `/`).

It owns one display, one browser and one home (`/home/user` inside the sandbox) and runs the tasks
the runner sends over the channel on file descriptor FD, one at a time: setup, episode, postconfig,
score (`runner.run_one`). Its model is the runner's (`model_link.ChannelBackend`) unless the run's
backend is a test double that must read this worker's browser (the scripted solutions), which the
runner then sends pickled in `init`. The built-in suite's pages are served inside the sandbox, on
its own loopback. A broken display or browser is rebuilt between tasks; in a sandbox, every process
a task left behind is killed before the next one (`LocalHost.reset`); after each task the worker
kills everything else in its sandbox, its desktop included, and starts a fresh desktop
(`LocalHost.clear_sandbox`), so nothing a task started through the window manager or Xvfb lives on.
The worker is undumpable (`runner.keep_tasks_out`): a task's commands, the same user, cannot attach
to it.

Messages in: init, task, stop. Out: ready, start, phase, step, generate (see model_link), done.
"""

from __future__ import annotations

import base64
import os
import pickle
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from kimi_agent.listener import Listener, Phase, action_text
from kimi_agent.tasks.channel import Channel, ChannelClosed
from kimi_agent.tasks.model_link import ChannelBackend
from kimi_agent.tasks.runner import (
    RunSettings,
    TaskResult,
    _healthy,
    _task_dir,
    die_with_parent,
    keep_tasks_out,
    run_one,
    write_result,
)
from kimi_agent.tasks.sandbox import SANDBOX_ENV, in_own_pid_namespace
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.suites import LOCAL_SERVER_KEY, serve_pages

IDLE_TIMEOUT_S = 24 * 3600.0  # the runner always says stop; this only bounds a lost runner


class _StepEvents(Listener):
    """Agent listener that tells the runner about each step's phases and each finished step."""

    def __init__(self, channel: Channel, task_id: str) -> None:
        self.channel, self.task_id = channel, task_id

    def on_phase(self, step: int, phase: Phase, detail: str = "") -> None:
        self.channel.send({"type": "phase", "task_id": self.task_id, "step": step, "phase": phase,
                           "detail": detail[:40]})

    def on_step(self, record: Any) -> None:
        self.channel.send({"type": "step", "task_id": self.task_id, "step": getattr(record, "step", 0),
                           "action": action_text(record)[:80]})


def serve(channel: Channel) -> None:
    from kimi_agent.env.desktop import DesktopEnv
    from kimi_agent.tasks.host import LocalHost

    init, _ = channel.recv(timeout_s=60)
    if init.get("type") != "init":
        raise ChannelClosed(f"expected init, got {init.get('type')!r}")
    worker = int(init["worker"])
    settings = RunSettings.model_validate_json(init["settings"])
    factory = pickle.loads(base64.b64decode(init["factory"])) if init.get("factory") else None
    home = Path(init["home"])
    cap_file_size(settings.worker_disk_mb << 20)

    def fresh() -> tuple[DesktopEnv, LocalHost]:
        env = DesktopEnv(width=settings.screen[0], height=settings.screen[1],
                         start_timeout_s=settings.start_timeout_s)
        return env, LocalHost(env, home, client_password=settings.client_password,
                              own_pid_namespace=in_own_pid_namespace())

    env, host = fresh()
    with serve_pages() as local_server:
        channel.send({"type": "ready", "display": env.display, "port": host.debugging_port,
                      "profile": str(host.paths.profile_dir), "pid": os.getpid()})
        try:
            while True:
                msg, _ = channel.recv(timeout_s=IDLE_TIMEOUT_S)
                if msg.get("type") != "task":
                    break
                spec = TaskSpec.model_validate_json(msg["spec"]).with_values({LOCAL_SERVER_KEY: local_server})
                channel.send({"type": "start", "task_id": spec.id, "time": time.time()})
                result = _run(spec, env, host, settings, factory, channel, local_server, worker, msg)
                result = result.model_copy(update={"host": host.describe(), "domain": str(msg.get("domain", ""))})
                renew = host.own_pid_namespace or not _healthy(env)
                if renew:  # in a sandbox, nothing of one task reaches the next: not even its desktop
                    host.close()
                    env.close()
                    if host.own_pid_namespace:
                        host.clear_sandbox()
                write_result(settings.out_dir, result)
                channel.send({"type": "done", "result": result.model_dump_json()})
                if renew:
                    env, host = fresh()
        finally:
            host.close()
            env.close()


def _run(spec: TaskSpec, env: Any, host: Any, settings: RunSettings, factory: Any, channel: Channel,
         local_server: str, worker: int, msg: dict[str, Any]) -> TaskResult:
    try:
        backend = (factory(spec, host, local_server) if factory is not None
                   else ChannelBackend(channel, str(msg.get("backend_name") or "model"), task_id=spec.id))
        return run_one(spec, env, host, backend, settings, worker=worker, listener=_StepEvents(channel, spec.id))
    except ChannelClosed:
        raise
    except Exception as e:  # a bug in a backend or the runner: recorded in the task, the run goes on
        task_dir = _task_dir(settings.out_dir, spec.id)
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        return TaskResult(task_id=spec.id, instruction=spec.instruction, status="error", worker=worker,
                          reason=f"internal error: {type(e).__name__}: {e}", path=str(task_dir))


def cap_file_size(max_bytes: int) -> None:
    """Hold every file this worker and what it starts write to `max_bytes` (RLIMIT_FSIZE, soft and
    hard: nothing it starts can raise it): the runner measures its folders every half second or so,
    and one file written at disk speed between two measurements stays within the limit anyway. A
    process that writes past it gets SIGXFSZ (Python: OSError EFBIG)."""
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    cap = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))


def close_inherited(keep: int) -> None:
    """Close every descriptor this (new) process inherited but 0, 1, 2 and `keep`, its channel:
    bwrap's report pipe and the read end of its user-namespace pipe, and whatever else a launcher
    left open, are of no use to a worker, and nothing of the runner's is left to a task that got
    hold of it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = soft if 0 < soft < 1 << 20 else 1 << 20  # close_range(2) makes a wide range cheap
    os.closerange(3, keep)
    os.closerange(keep + 1, top)  # nothing when keep is past top


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m kimi_agent.tasks.worker FD (started by kimi-agent run)\n")
        return 2
    die_with_parent()
    if os.environ.get(SANDBOX_ENV):
        keep_tasks_out()
    close_inherited(keep=int(args[0]))
    from kimi_agent.logs import log_to_stderr

    log_to_stderr()  # into the worker's worker.log
    channel = Channel.from_fd(int(args[0]))
    try:
        serve(channel)
    except ChannelClosed:
        return 3  # the runner went away: nothing to report to
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
