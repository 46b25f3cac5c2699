"""The episode loop: observe -> build messages -> generate -> parse -> safety -> execute -> record.

One error funnel (`_reject`): a reply that does not parse, an off-screen or degenerate point, a
refused or failed action all become feedback text in the next generation's instruction turn; the
step is retried (temperature slightly raised) up to `max_attempts`, and consecutive failures count
against `max_failures`. An episode always ends with a status and a reason, never a traceback, and
its trajectory is written even when it is stopped with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kimi_agent.actions.code_parser import CoordinateMode, ParseLimits
from kimi_agent.actions.types import Action, AskUser, Done, TypeText, Wait
from kimi_agent.env.base import Environment, Observation, Outcome
from kimi_agent.errors import ActionError, AgentError, ConfigError, ReplyError
from kimi_agent.history import HistoryPolicy, PastStep, build_messages
from kimi_agent.listener import Listener, Phase
from kimi_agent.model_runtime.backends.base import Backend, Sampling
from kimi_agent.prompts import FEEDBACK_TEMPLATE, USER_ANSWER_TEMPLATE, Prompt, build_prompt
from kimi_agent.records import action_record, model_points, observation_record, parsed_record, phase_medians
from kimi_agent.reply import Step, parse_reply
from kimi_agent.result import EpisodeInterrupted, EpisodeResult, EpisodeStep, Status
from kimi_agent.safety import Confirm, SafetyPolicy, SafetySettings, secret_placeholders
from kimi_agent.trajectory import Attempt, FrameFormat, StepRecord, Trajectory
from kimi_agent.watchdog import StepWatchdog

log = logging.getLogger("kimi_agent")
__all__ = ["Agent", "AgentSettings", "AgentState", "EpisodeResult", "EpisodeStep", "Listener", "Phase"]

AskFn = Callable[[str], str]


class AgentSettings(BaseModel):
    """How an episode runs. Budgets: steps, wall-clock seconds, consecutive failures."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=15, ge=1)
    max_seconds: float | None = Field(default=1800.0, gt=0, le=7 * 86400, allow_inf_nan=False,
                                      description="wall-clock budget, enforced within a step too")
    max_attempts: int = Field(default=3, ge=1, description="generations per step (first try + retries)")
    max_failures: int = Field(default=5, ge=1, description="consecutive rejected replies/actions -> error")
    retry_temperature: float = Field(default=0.3, ge=0, le=2, description="lowest temperature of a retry")
    retry_temperature_step: float = Field(default=0.1, ge=0, le=1)
    history_images: int = Field(default=3, ge=1)
    history_policy: HistoryPolicy = "exact"  # "chunked": K..2K-1 screenshots, a prompt that mostly only grows
    thinking: bool = False
    sampling: Sampling = Sampling(temperature=0.0, top_p=0.95, max_new_tokens=1024)
    coordinate_mode: CoordinateMode = "relative"
    password: str | None = None
    out_dir: Path = Path("runs")
    frame_format: FrameFormat = "png"
    settle: bool = True
    safety: SafetySettings = Field(default_factory=SafetySettings)


class AgentState(BaseModel):
    """What changes during one episode (the loop's own bookkeeping; not part of the result)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    instruction: str
    started: float = Field(default_factory=time.perf_counter)
    step: int = 0
    past: list[PastStep] = Field(default_factory=list)
    note: str | None = None  # feedback or the user's answer, shown in the next instruction turn
    consecutive_failures: int = 0
    failures: int = 0
    status: Status | None = None
    reason: str = ""
    answer: str | None = None
    last_frame: tuple[int, str] | None = None  # (id of image, frame file) already queued
    pending_observe_ms: float = 0.0  # observation time not yet charged to a step
    durations: list[dict[str, float]] = Field(default_factory=list)
    history: list[EpisodeStep] = Field(default_factory=list)

    def finish(self, status: Status, reason: str, answer: str | None = None) -> None:
        """End the episode with `status` (the first call wins; later ones are ignored)."""
        if self.status is None:
            self.status, self.reason, self.answer = status, reason, answer


class Agent:
    """Runs episodes of one model on one environment; the backend is reused across episodes.

    Args:
        backend: the model (`kimi_agent.options.make_backend(...)`, or `ScriptedBackend([...])`).
        env: the environment to act on, or a function that makes it (called on first use, on
            the thread that runs the episode: pass a function for a Playwright `BrowserEnv` you
            use with `arun`, since Playwright's sync API works only on the thread that started
            it; `close()` then closes it).
        settings: budgets, sampling, history and where trajectories go (`AgentSettings`).
        confirm: `confirm(question) -> bool`, asked before a risky action (closing a window or
            tab, ctrl+alt+del, typing into a password field...). Without it, risky actions are
            refused and the refusal goes back to the model (`settings.safety.confirm_risky=False`
            lets them all run instead).
        ask: `ask(question) -> str`, the user's answer when the model calls
            `computer.ask_user(...)`. Without it, the model is not offered that call, and an
            episode where it asks anyway ends as a failure.
        listener: a `Listener` told about each step as it happens: step start, phases
            (observing, thinking, acting, waiting, settling), the model's text as it streams,
            the parsed thought and action, retries, and each recorded step. The CLI's live view
            is one (`kimi_agent.progress.ConsoleListener`).

    `run(instruction)` runs one episode and writes its report (`report.html`, `traj.jsonl`);
    `await arun(instruction)` does the same from asyncio code, on the agent's own worker thread;
    `run_episode(instruction)` writes only the trajectory (the task runner's entry point). Each
    returns an `EpisodeResult` with the steps. Callbacks run on the episode's thread. Ctrl-C (a
    `KeyboardInterrupt`, also one raised by a callback) ends the episode as `user_stopped`, writes
    its trajectory (and with `run`, its report), then raises `EpisodeInterrupted`, a
    `KeyboardInterrupt` whose `result` is that episode: a script's loop stops as Python scripts do.
    """

    def __init__(self, backend: Backend, env: Environment | Callable[[], Environment],
                 settings: AgentSettings | None = None, *, confirm: Confirm | None = None,
                 ask: AskFn | None = None, listener: Listener | None = None) -> None:
        """`TypeError` naming the argument for one of the wrong kind (checked here, not mid-episode)."""
        if not callable(getattr(backend, "generate", None)):
            raise TypeError(f"backend must be a model backend (kimi_agent.options.make_backend(...) or "
                            f"ScriptedBackend([...])), got {type(backend).__name__}")
        if not (hasattr(env, "execute") and hasattr(env, "observe")) and not callable(env):
            raise TypeError(f"env must be an environment (DesktopEnv(), BrowserEnv(...)) or a function that makes "
                            f"one, got {type(env).__name__}")
        if settings is not None and not isinstance(settings, AgentSettings):
            raise TypeError(f"settings must be AgentSettings(...), got {type(settings).__name__}"
                            + (" (pass AgentSettings(**settings))" if isinstance(settings, dict) else ""))
        for name, fn in (("confirm", confirm), ("ask", ask)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
        if listener is not None and not isinstance(listener, Listener):
            raise TypeError(f"listener must be a kimi_agent.Listener (a subclass of it), got {type(listener).__name__}")
        self.backend = backend
        made_later = callable(env) and (isinstance(env, type) or not hasattr(env, "execute"))
        self._env: Environment | None = None if made_later else env
        self._make_env: Callable[[], Environment] | None = env if made_later else None
        self.settings = settings or AgentSettings()
        self.safety = SafetyPolicy(self.settings.safety, confirm=confirm)
        self.ask = ask
        self.listener = listener or Listener()
        self.prompt: Prompt = build_prompt(thinking=self.settings.thinking, password=self.settings.password,
                                           ask_user=ask is not None)
        self.limits = ParseLimits()
        self._watchdog = StepWatchdog(None)  # replaced by each episode's
        self._thread: ThreadPoolExecutor | None = None

    @property
    def env(self) -> Environment:
        """The environment (made now by the `env` function given, on first use)."""
        if self._env is None:
            assert self._make_env is not None
            self._env = self._make_env()
        return self._env

    def run(self, instruction: str, *, artifacts: bool = True) -> EpisodeResult:
        """Run one episode for `instruction`; with `artifacts`, also write its `report.html` and
        OSWorld `traj.jsonl` (`result.report` is then the report's path)."""
        try:
            result = self.run_episode(instruction)
        except EpisodeInterrupted as stop:
            if artifacts:
                self._write_artifacts(stop.result)
            raise
        if artifacts:
            self._write_artifacts(result)
        return result

    def _write_artifacts(self, result: EpisodeResult) -> None:
        from kimi_agent.artifacts import write_episode_artifacts

        self.listener.on_phase(result.steps, "writing", "report, recording")
        result.report = write_episode_artifacts(result.run_dir).get("report.html")

    async def arun(self, instruction: str, *, artifacts: bool = True) -> EpisodeResult:
        """`run` for asyncio code: the episode (environment, model calls, callbacks) runs on the
        agent's one worker thread, so the event loop stays free and Playwright's sync API is
        never used inside it. Cancelling the await does not stop the episode; its budgets do."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), partial(self.run, instruction, artifacts=artifacts))

    def close(self) -> None:
        """Close an environment this agent made (from the `env` function) and its worker thread."""
        if self._make_env is not None and self._env is not None:
            env, self._env = self._env, None
            if self._thread is not None:
                self._thread.submit(env.close).result()
            else:
                env.close()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def aclose(self) -> None:
        """`close` for asyncio code (waits on a thread, not on the event loop)."""
        await asyncio.to_thread(self.close)

    def _worker(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimi-agent-episode")
        return self._thread

    def run_episode(self, instruction: str) -> EpisodeResult:
        """Run one episode for `instruction` and write its trajectory under `settings.out_dir`
        (`run.json`, `steps.jsonl`, `frames/`); `run` also writes the report."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConfigError(f"the instruction must say what the agent should do, e.g. 'enable Do Not Track'; "
                              f"got {instruction!r}")
        s = self.settings
        kind = getattr(self.env, "kind", None)
        if s.safety.allowed_urls and kind != "browser":
            raise ConfigError(f"allowed_urls holds only in the browser environment, not in {kind!r}: the model could "
                              "type any URL into its address bar (use BrowserEnv(allowed_urls=...))")
        self.safety.reset()  # keys held in an earlier episode were released when it ended
        state = AgentState(instruction=instruction)
        traj = Trajectory(s.out_dir, instruction, redactor=self.safety.redactor, frame_format=s.frame_format,
                          started=datetime.now())
        traj.write_run(**self._run_header(instruction, traj), status="running")
        watchdog = self._watchdog = StepWatchdog(None if s.max_seconds is None else state.started + s.max_seconds,
                                                 wake=self._wake_env)
        stopped = False
        try:
            with watchdog:
                self.listener.on_phase(1, "observing")
                obs = self._observe(state)
                traj.write_run(env={"kind": getattr(self.env, "kind", None), "geometry": obs.geometry.model_dump()})
                while state.status is None:
                    if state.step >= s.max_steps:
                        state.finish("max_steps", f"reached max_steps={s.max_steps} without finishing")
                    elif s.max_seconds is not None and time.perf_counter() - state.started > s.max_seconds:
                        state.finish("max_steps", f"spent the wall-clock budget of {s.max_seconds:g} s")
                    else:
                        obs = self._step(state, obs, traj)
        except KeyboardInterrupt:
            if watchdog.fired is not None:
                state.finish("error", f"step {state.step} hung in {watchdog.fired}: still running when the "
                                      f"wall-clock budget of {s.max_seconds:g} s ran out")
            else:
                state.finish("user_stopped", "stopped by the user (Ctrl-C)")
                stopped = True
        except AgentError as e:
            state.finish("error", f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug: the episode still ends with a reason; the traceback goes to run.json
            trace = self.safety.redactor(traceback.format_exc())
            log.error("episode failed\n%s", trace)
            state.finish("error", self.safety.redactor(f"internal error: {type(e).__name__}: {e}"))
            traj.write_run(traceback=trace)
        finally:
            traj.close()
            result = self._result(state, traj)
            traj.write_run(ended_at=datetime.now().isoformat(timespec="seconds"), status=result.status,
                           reason=result.reason, answer=result.answer, steps=result.steps,
                           failures=result.failures, duration_s=result.duration_s,
                           timings_ms=phase_medians(state.durations))
        if stopped:
            raise EpisodeInterrupted(result)
        return result

    # ---- one step ---------------------------------------------------------------------------

    def _step(self, state: AgentState, obs: Observation, traj: Trajectory) -> Observation:
        state.step += 1
        self.listener.on_step_start(state.step)
        rec = StepRecord(step=state.step, started_at=time.time(),
                         obs_before=observation_record(obs, self._frame(state, traj, obs, "before")))
        rec.durations_ms["observe"] = state.pending_observe_ms
        state.pending_observe_ms = 0.0
        started, before = time.perf_counter(), sum(rec.durations_ms.values())
        try:
            for attempt in range(self.settings.max_attempts):
                step = self._generate(state, obs, rec, attempt)
                if step is None:
                    if state.status is not None:
                        break
                    continue
                state.note = None  # shown once; the user's answer or new feedback may replace it
                error = self._execute(state, obs, step, rec)
                if error is None:
                    state.consecutive_failures = 0
                    state.past.append(PastStep(state.step, step.thought, step.action_text, obs.image))
                    break
                self._reject(state, rec, error, "action")
                if _ran(rec):  # something ran before the failure: look again
                    self.listener.on_phase(state.step, "observing")
                    obs = self._observe(state)
                    _add(rec.durations_ms, observe=state.pending_observe_ms)
                    state.pending_observe_ms = 0.0
                if state.status is not None:
                    break
            if state.status is None or state.status == "success":
                obs = self._after(state, obs, rec, traj)
        except KeyboardInterrupt:  # cut short (the watchdog, Ctrl-C): the phase it was in counts too
            lost_ms = max(0.0, (time.perf_counter() - started) * 1000 - (sum(rec.durations_ms.values()) - before))
            rec.durations_ms["interrupted"] = lost_ms
            rec.error = rec.error or (f"interrupted in {self._watchdog.interrupted_in or 'the step'} "
                                      f"after {lost_ms / 1000:.1f} s")
            raise
        finally:
            with self._watchdog.running("record"):
                t = time.perf_counter()
                rec = StepRecord.model_validate(self.safety.redactor.data(rec.model_dump()))  # at the source
                traj.append_step(rec)
                rec.durations_ms["record"] = rec.durations_ms.get("record", 0.0) + (time.perf_counter() - t) * 1000
                state.durations.append(rec.durations_ms)
                state.history.append(EpisodeStep.from_record(rec, traj.path))
                self.listener.on_step(rec)
        return obs

    def _generate(self, state: AgentState, obs: Observation, rec: StepRecord, attempt: int) -> Step | None:
        """One generation + parse; None (after the funnel) when the reply is rejected."""
        s = self.settings
        t0 = time.perf_counter()
        messages, images = build_messages(self.prompt, state.instruction, state.past, obs.image,
                                          history_images=s.history_images, note=state.note,
                                          history_policy=s.history_policy)
        t1 = time.perf_counter()
        sampling = s.sampling
        if attempt > 0:
            temp = max(s.retry_temperature, sampling.temperature) + s.retry_temperature_step * (attempt - 1)
            sampling = sampling.model_copy(update={"temperature": min(temp, 2.0)})
        self.listener.on_phase(state.step, "thinking")
        with self._watchdog.running("generate"):
            reply = self.backend.generate(messages, images, sampling, on_text=self.listener.on_text)
        t2 = time.perf_counter()
        parsed = parse_reply(reply.text, coordinate_mode=s.coordinate_mode,
                             screenshot_size=(obs.geometry.shot_width, obs.geometry.shot_height), limits=self.limits)
        t3 = time.perf_counter()
        _add(rec.durations_ms, preprocess=(t1 - t0) * 1000, model=(t2 - t1) * 1000, parse=(t3 - t2) * 1000)
        rec.request = {"n_messages": len(messages), "n_images": len(images), "sampling": sampling.model_dump()}
        rec.attempts.append(Attempt(reply=reply.text, temperature=sampling.temperature, model_ms=round((t2 - t1) * 1000, 3)))
        rec.reply = reply.model_dump()
        if isinstance(parsed, ReplyError):
            self._reject(state, rec, parsed.message, parsed.kind)
            return None
        rec.parsed = parsed_record(parsed)
        redact = self.safety.redactor
        self.listener.on_reply(state.step, redact(parsed.thought), redact(parsed.action_text))
        return parsed

    def _execute(self, state: AgentState, obs: Observation, step: Step, rec: StepRecord) -> str | None:
        """Run the step's actions; the error text for the model, or None."""
        points = model_points(step.code)
        last = len(step.actions) - 1
        for i, action in enumerate(step.actions):
            if isinstance(action, Done):
                rec.terminal = "done"
                state.finish("success" if action.status == "success" else "failure",
                             f"the model reported {action.status}", action.answer)
                return None
            if isinstance(action, AskUser):
                rec.terminal = "ask_user"
                return self._ask_user(state, action.question)
            n = len(action_record(action, [], None).norm_xy)
            arec = action_record(action, points[:n], None)
            points = points[n:]
            rec.actions.append(arec)
            t0 = time.perf_counter()
            with self._watchdog.running("safety"):
                verdict = self.safety.check(action, focused_password=self._focused_password(action))
            arec.safety = verdict.model_dump(exclude_none=True) if verdict.risk else None
            _add(rec.durations_ms, safety=(time.perf_counter() - t0) * 1000)
            if not verdict.allowed:
                arec.ok, arec.error = False, verdict.reason
                return verdict.reason
            try:
                real = self.safety.resolve_secrets(action)
            except KeyError as e:
                arec.ok, arec.error = False, f"unknown secret {e.args[0]!r}"
                return f"there is no secret named {e.args[0]!r}."
            t0 = time.perf_counter()
            step_no = state.step
            settling = partial(self.listener.on_phase, step_no, "settling")
            if isinstance(action, Wait):
                self.listener.on_phase(step_no, "waiting", f"{action.seconds:g} s")
            else:
                self.listener.on_phase(step_no, "acting", action.type)
            try:
                with self._watchdog.running(f"execute ({action.type}, then settle)"):
                    outcome = self.env.execute(real, geometry=obs.geometry, settle=self.settings.settle and i == last,
                                               on_settle=settling)
            except ActionError as e:
                arec.ok, arec.error = False, self._scrub(str(e), action, real)
                return arec.error
            wall = (time.perf_counter() - t0) * 1000
            if real is not action:
                outcome = _secret_outcome(outcome, action)
            done = action_record(action, arec.model_xy, outcome)
            done.safety = arec.safety
            rec.actions[-1] = done
            _add(rec.durations_ms, execute=wall - outcome.settle_ms, settle=outcome.settle_ms)
            if not outcome.ok:
                return str(outcome.error or "the action failed")
        return None

    def _scrub(self, message: str, action: Action, real: Action) -> str:
        """An error about `real` safe to record: when it typed a secret, nothing of the text typed."""
        if real is action:
            return self.safety.redactor(message)
        return f"typing {_secret_text(action)} failed ({message.split(':', 1)[0][:60]})"

    def _reject(self, state: AgentState, rec: StepRecord, message: str, kind: str) -> None:
        """The error funnel: record, feed back to the model, count against the failure budget."""
        message = self.safety.redactor(message)
        if rec.attempts:
            rec.attempts[-1].error, rec.attempts[-1].kind = message, kind
        rec.error = message
        state.note = FEEDBACK_TEMPLATE.format(error=message)
        state.failures += 1
        state.consecutive_failures += 1
        self.listener.on_retry(state.step, message)
        if state.consecutive_failures >= self.settings.max_failures:
            state.finish("error", f"{state.consecutive_failures} consecutive failures; last: {message.rstrip('. ')}")

    def _ask_user(self, state: AgentState, question: str) -> str | None:
        if self.ask is None:
            state.finish("failure", f"the model asked the user ({question!r}) and nobody can answer")
            return None
        answer = self.ask(question)
        state.note = USER_ANSWER_TEMPLATE.format(question=question, answer=answer)
        return None

    def _after(self, state: AgentState, obs: Observation, rec: StepRecord, traj: Trajectory) -> Observation:
        if rec.terminal == "done" or not _ran(rec):
            return obs
        self.listener.on_phase(state.step, "observing")
        after = self._observe(state)
        _add(rec.durations_ms, observe=state.pending_observe_ms)
        state.pending_observe_ms = 0.0
        rec.obs_after = observation_record(after, self._frame(state, traj, after, "after"))
        return after

    # ---- helpers ----------------------------------------------------------------------------

    def _wake_env(self) -> None:
        """Called by the watchdog's thread when the budget runs out: an environment that can
        (`BrowserEnv.interrupt`) wakes the call the episode's thread is blocked in."""
        interrupt = getattr(self._env, "interrupt", None)
        if callable(interrupt):
            interrupt()

    def _observe(self, state: AgentState) -> Observation:
        t = time.perf_counter()
        with self._watchdog.running("observe"):
            obs = self.env.observe()
        state.pending_observe_ms += (time.perf_counter() - t) * 1000
        return obs

    def _frame(self, state: AgentState, traj: Trajectory, obs: Observation, which: str) -> str:
        """Queue the frame once; a frame already written (the last step's after) is reused."""
        if state.last_frame is not None and state.last_frame[0] == id(obs.image):
            return state.last_frame[1]
        rel = traj.frame(obs.image, state.step, which)
        state.last_frame = (id(obs.image), rel)
        return rel

    def _focused_password(self, action: Action) -> bool | None:
        """Whether text would go into a password field (the environment's answer; None when the
        environment cannot tell or the action types nothing)."""
        if not isinstance(action, TypeText):
            return None
        return self.env.focused_is_password()

    def _run_header(self, instruction: str, traj: Trajectory) -> dict[str, Any]:
        s = self.settings
        return {"run_id": traj.path.name, "instruction": instruction,
                "started_at": datetime.now().isoformat(timespec="seconds"),
                "model": m if isinstance(m := getattr(self.backend, "model", None), str) else None,
                "backend": getattr(self.backend, "name", None), "env_kind": getattr(self.env, "kind", None),
                "start_url": getattr(self.env, "start_url", None),
                "endpoint": getattr(self.backend, "endpoint", None), "sampling": s.sampling.model_dump(),
                "prompt_version": self.prompt.version, "prompt_sha256": self.prompt.sha256,
                "system_prompt": self.prompt.system, "coordinate_mode": s.coordinate_mode,
                "settings": s.model_dump(mode="json", exclude={"safety": {"secrets"}, "password": True})}

    def _result(self, state: AgentState, traj: Trajectory) -> EpisodeResult:
        if state.status is None:
            state.finish("error", "the episode ended without a status")
        assert state.status is not None
        return EpisodeResult(status=state.status, reason=state.reason, answer=state.answer, steps=state.step,
                             failures=state.failures, duration_s=round(time.perf_counter() - state.started, 3),
                             run_dir=traj.path, history=state.history)


def _secret_text(action: Action) -> str:
    return secret_placeholders(action.text) if isinstance(action, TypeText) else action.type


def _secret_outcome(outcome: Outcome, action: Action) -> Outcome:
    """The outcome of an action whose text came from a secret, as it may be recorded: the calls
    made are counted, not shown (however the environment split the text, each piece is part of
    the secret), and an error keeps only its kind."""
    shown = _secret_text(action)
    calls = len(outcome.executed)
    error = None if outcome.error is None else ActionError(
        f"typing {shown} failed ({type(outcome.error).__name__})")
    return replace(outcome, executed=[f"typed {shown} in {calls} input call(s)"], error=error)


def _ran(rec: StepRecord) -> bool:
    """Whether any action of the step reached the environment (its screen may have changed)."""
    return any(a.executed for a in rec.actions)


def _add(d: dict[str, float], **values: float) -> None:
    for k, v in values.items():
        d[k] = round(d.get(k, 0.0) + v, 3)
