"""What an episode returns: `EpisodeResult`, with one `EpisodeStep` per step.

The result is the library's view of a run folder: how the episode ended, and each step's thought,
action, points (as the model wrote them, as fractions of the screenshot, and in the environment's
pixels), timings and frame files, without reading `steps.jsonl` back. Secrets are already redacted
(the loop redacts every record at the source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kimi_agent.trajectory import StepRecord

Status = Literal["success", "failure", "max_steps", "user_stopped", "error"]


class ActionTaken(BaseModel):
    """One action of a step: its type, its points in three frames, and whether it ran."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(description="the action type, e.g. click, type_text, hotkey")
    action: dict[str, object] = Field(description="the typed action as data (points as fractions)")
    model_xy: list[tuple[float, float]] = Field(default_factory=list, description="as the model wrote them")
    norm_xy: list[tuple[float, float]] = Field(default_factory=list, description="fractions (0..1) of the screenshot")
    exec_xy: list[tuple[float, float]] = Field(default_factory=list, description="environment pixels")
    ok: bool = True
    error: str | None = None


class EpisodeStep(BaseModel):
    """One step of an episode as the library returns it."""

    model_config = ConfigDict(frozen=True)

    step: int = Field(description="1-based step number")
    thought: str = ""
    action: str = Field(default="", description="the model's action text (what it said it would do)")
    code: str = Field(default="", description="the reply's code block")
    actions: list[ActionTaken] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict,
                                         description="observe, preprocess, model, parse, safety, execute, settle, "
                                                     "record (ms, retries included)")
    attempts: int = Field(default=0, description="generations of this step (1 + retries)")
    frame_before: Path | None = Field(default=None, description="screenshot the model saw")
    frame_after: Path | None = Field(default=None, description="screenshot after the actions ran")
    error: str | None = Field(default=None, description="the last rejection of this step, if any")
    terminal: str | None = Field(default=None, description="done or ask_user when the step ended that way")

    @property
    def points(self) -> list[tuple[float, float]]:
        """Every point this step acted on, in environment pixels."""
        return [p for a in self.actions for p in a.exec_xy]

    @classmethod
    def from_record(cls, record: StepRecord, run_dir: Path) -> EpisodeStep:
        """The step of one `steps.jsonl` record; frame paths are made absolute under `run_dir`."""
        parsed = record.parsed or {}

        def frame(obs: dict[str, object] | None) -> Path | None:
            name = (obs or {}).get("file")
            return run_dir / str(name) if name else None

        def pts(xy: list[list[float]]) -> list[tuple[float, float]]:
            return [(float(p[0]), float(p[1])) for p in xy]

        actions = [ActionTaken(type=str(a.action.get("type", "")), action=a.action, model_xy=pts(a.model_xy),
                               norm_xy=pts(a.norm_xy), exec_xy=pts(a.exec_xy), ok=a.ok, error=a.error)
                   for a in record.actions]
        return cls(step=record.step, thought=str(parsed.get("thought") or ""),
                   action=str(parsed.get("action_text") or ""), code=str(parsed.get("code") or ""),
                   actions=actions, timings_ms=dict(record.durations_ms), attempts=len(record.attempts),
                   frame_before=frame(record.obs_before), frame_after=frame(record.obs_after),
                   error=record.error, terminal=record.terminal)


class EpisodeResult(BaseModel):
    """How an episode ended, and its steps.

    `status` is success (the model reported success), failure (it reported failure, or asked a
    question nobody could answer), max_steps (a step or wall-clock budget ran out), user_stopped
    (Ctrl-C) or error (consecutive failures, a broken environment or backend); `reason` says which
    in a sentence. `steps` is the number of steps; `history` has each of them. `run_dir` holds the
    trajectory; `report` is its `report.html` once written (`Agent.run` writes it).
    """

    status: Status
    reason: str
    answer: str | None = Field(default=None, description="the model's answer when it finished with one")
    steps: int
    failures: int = Field(description="rejected replies and actions, in all")
    duration_s: float
    run_dir: Path
    history: list[EpisodeStep] = Field(default_factory=list)
    report: Path | None = None

    @property
    def success(self) -> bool:
        """Whether the model finished and reported success."""
        return self.status == "success"

    @property
    def frames(self) -> list[Path]:
        """Every screenshot of the episode, in order, each once."""
        seen: dict[Path, None] = {}
        for step in self.history:
            for f in (step.frame_before, step.frame_after):
                if f is not None:
                    seen.setdefault(f)
        return list(seen)


class EpisodeInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a `KeyboardInterrupt` from a callback) stopped an episode: raised once its
    trajectory is written, so a script's loop stops as Python scripts do. `result` is the episode
    so far (status `user_stopped`); the CLI exits 130 with it."""

    def __init__(self, result: EpisodeResult) -> None:
        super().__init__(f"stopped by the user after {result.steps} step(s); the trajectory is in {result.run_dir}")
        self.result = result
