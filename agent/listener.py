"""`Listener`: the callbacks an episode makes as it runs (the live view and the runner's progress
are listeners), and `Phase`, what a step is doing at a moment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kimi_agent.trajectory import StepRecord

#: What a step is doing now: observing (screenshot), thinking (the model generates), acting (an
#: action runs), waiting (a `computer.wait()`), settling (waiting for the screen to stop changing).
Phase = Literal["observing", "thinking", "acting", "waiting", "settling", "writing"]


class Listener:
    """Progress callbacks of an episode: every method is a no-op here; subclass and override the
    ones you need (the CLI's live view is `kimi_agent.progress.ConsoleListener`).

    They are called on the thread that runs the episode, in this order for each step:
    `on_step_start(step)`, `on_phase(step, "thinking")`, `on_text(piece)` for each piece of the
    reply as it streams, then `on_reply(step, thought, action)` once it parsed (or `on_retry` when
    it was rejected, and the step generates again), `on_phase(step, "acting" | "waiting" |
    "settling", detail)` around its actions, `on_phase(step, "observing")` for the screenshot
    after them, and `on_step(record)` when the step is recorded. The first screenshot of an
    episode is announced as `on_phase(1, "observing")` before step 1 starts, and `Agent.run` says
    `on_phase(last step, "writing", ...)` while it writes the report and recording. `on_reply` and
    `on_step` get text with the settings' secrets redacted; `on_text` pieces are raw (a secret may
    span two pieces), so a listener that shows them redacts the text it has gathered itself.
    """

    def on_step_start(self, step: int) -> None:
        """Step `step` (1-based) begins."""

    def on_phase(self, step: int, phase: Phase, detail: str = "") -> None:
        """Step `step` enters `phase`; `detail` names the action (`click`) or the wait (`2 s`)."""

    def on_text(self, piece: str) -> None:
        """A piece of the model's reply as it arrives (streaming backends call it many times)."""

    def on_reply(self, step: int, thought: str, action: str) -> None:
        """The step's reply parsed: its thought and action text, before the actions run (and
        before any confirmation is asked)."""

    def on_retry(self, step: int, error: str) -> None:
        """The reply or an action of `step` was rejected with `error`; the step tries again."""

    def on_step(self, record: StepRecord) -> None:
        """Step `record.step` ended and was written to the trajectory."""


def action_text(record: StepRecord) -> str:
    """The step's action as the model wrote it (its `## Action` text), "" when its reply had none."""
    parsed = getattr(record, "parsed", None)
    action = parsed.get("action_text") if isinstance(parsed, dict) else getattr(parsed, "action_text", None)
    return str(action or "")
