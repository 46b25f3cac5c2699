"""What a caller gives a `BatchScheduler` and gets back: `GenerationRequest` (one prompt, its
sampling and its callbacks), `GenerationHandle` (wait for the result, cancel, read the text so far)
and the errors a handle's `result()` raises."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

import torch

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.engine import EngineResult

FinishReason = Literal["stop", "length", "cancelled"]


class GenerationCancelledError(AgentError):
    """`result()` of a request that was cancelled before it finished."""


class SchedulerClosedError(AgentError):
    """A request was still waiting or running when its scheduler was stopped."""


@dataclass
class GenerationRequest:
    """One prompt: input_ids [1, T] (+ its images' pixel_values [L, 3, 14, 14] and grids [N, 2])."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_hws: torch.Tensor | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    session: Hashable | None = None  # requests of one session reuse one slot's cache
    stop: tuple[str, ...] = ()  # strings that end the reply, not included (needs the scheduler's processor)
    # callbacks, all run in the scheduler's thread: every sampled id; every decoded text piece (stop
    # strings applied; needs a processor); once when the request is finished, failed or cancelled
    on_token: Callable[[int], None] | None = None
    on_text: Callable[[str], None] | None = None
    on_finish: Callable[[GenerationHandle], None] | None = None


@dataclass(eq=False)
class GenerationHandle:
    """The caller's view of a submitted request: `result()` waits for it, `cancel()` ends it early.
    `tokens` are the sampled ids (a stop id included); `text` the decoded reply so far."""

    request: GenerationRequest
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    cached_prompt_tokens: int = 0
    error: BaseException | None = None
    submitted: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def latency_ms(self) -> float:
        """Milliseconds from submit to finish (to now while it runs)."""
        return ((self.finished or time.perf_counter()) - self.submitted) * 1000

    def cancel(self) -> None:
        """Ask the scheduler to end this request at its next step (thread-safe; a no-op once done)."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def result(self, timeout: float | None = None) -> EngineResult:
        """Wait (at most `timeout` s) for the request; raise its error, `GenerationCancelledError`,
        or TimeoutError."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"generation not finished after {timeout} s")
        if self.error is not None:
            raise self.error
        if self.finish_reason == "cancelled":
            raise GenerationCancelledError(f"the request was cancelled after {len(self.tokens)} tokens")
        assert self.finish_reason is not None
        return EngineResult(token_ids=list(self.tokens), text=self.text, finish_reason=self.finish_reason,
                            prompt_tokens=self.request.input_ids.shape[1],
                            cached_prompt_tokens=self.cached_prompt_tokens, latency_ms=self.latency_ms)
