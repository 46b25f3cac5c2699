"""`BatchingScheduler`: the server's `Scheduler` on continuous batching (`model_runtime.scheduler.BatchScheduler`).

Concurrent requests decode together, each in a slot of one preallocated latent cache; a request that
continues an earlier conversation lands in the slot that holds its prefix (`cached_tokens`). Text is
decoded and stop strings are matched in the batch loop's thread, pushed to each request's
`TextStream`; a client that goes away cancels its request, which frees its slot at the next step.
At most `max_queue` requests wait beyond the free slots; one more is a `QueueFullError` (429).
"""

from __future__ import annotations

from functools import partial

from kimi_agent.model_runtime.scheduler import (
    BatchScheduler,
    GenerationHandle,
    GenerationRequest,
    SchedulerClosedError,
)
from kimi_agent.model_runtime.serving.errors import ApiError, QueueFullError
from kimi_agent.model_runtime.serving.scheduler import Completion, PreparedPrompt, SamplingParams, TextStream

_SHUTDOWN = "the server is shutting down"


class BatchingScheduler:
    """Runs `batch` (a `BatchScheduler` with a processor) in its background thread for the HTTP layer."""

    def __init__(self, batch: BatchScheduler, *, max_queue: int = 16) -> None:
        if batch.processor is None:
            raise ValueError("BatchingScheduler needs a BatchScheduler with a processor (to decode text)")
        self.batch, self.max_queue = batch, max_queue
        self.served = 0  # requests finished or failed
        self.cancelled = 0  # requests ended early because their client went away

    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> TextStream:
        waiting, free = self.batch.load()
        if waiting >= self.max_queue + free:  # only the batch thread changes these, and only downwards
            raise QueueFullError(f"the server is busy: {waiting} requests are already waiting for one of "
                                 f"{len(self.batch.slots)} slots; retry shortly")
        stream = TextStream()
        handle = self.batch.submit(GenerationRequest(
            prompt.input_ids, prompt.pixel_values, prompt.image_grid_hws, max_new_tokens=params.max_new_tokens,
            temperature=params.temperature, top_p=params.top_p, seed=params.seed, stop=params.stop,
            on_text=stream.push, on_finish=partial(self._finished, stream)))
        stream.on_cancel = handle.cancel
        return stream

    def start(self) -> None:
        self.batch.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the batch loop (waits <= timeout_s for its current step); what is left fails with a 503."""
        self.batch.stop(timeout_s)

    def _finished(self, stream: TextStream, handle: GenerationHandle) -> None:
        """`on_finish` of every request (the batch thread): complete or fail its stream."""
        self.served += 1
        if handle.finish_reason == "cancelled":
            self.cancelled += 1
            stream.fail(ApiError(499, "the request was cancelled", code="cancelled"))
        elif handle.error is not None:
            error = handle.error
            if isinstance(error, SchedulerClosedError):
                error = ApiError(503, _SHUTDOWN, type="server_error", code="shutdown")
            stream.fail(error)
        else:
            assert handle.finish_reason is not None
            stream.finish(Completion(
                text=handle.text, finish_reason=handle.finish_reason, prompt_tokens=int(handle.request.input_ids.shape[1]),
                completion_tokens=len(handle.tokens), cached_prompt_tokens=handle.cached_prompt_tokens,
                latency_ms=handle.latency_ms))
