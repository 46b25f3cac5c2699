"""The server's scheduler interface, and `SerialScheduler`: one worker thread, one `Engine`, a bounded queue.

The HTTP layer knows only this interface:

    stream = scheduler.submit(prompt, params)   # on the event loop; QueueFullError when full
    async for piece in stream: ...              # decoded text pieces as they are generated
    completion = stream.completion              # after the loop: token counts, finish reason
    stream.cancel()                             # the client went away: stop as soon as possible

A scheduler runs the model off the event loop and reports back through `TextStream`'s thread-safe
`push`, `finish` and `fail`. Two implement it: `SerialScheduler` here (one request at a time, through
an `Engine` that may decode with CUDA graphs), and `serving.batching.BatchingScheduler` (continuous
batching on `model_runtime.scheduler.BatchScheduler`). What an implementation must do:

- `submit(prompt, params) -> TextStream`: never blocks; raises `QueueFullError` when it holds too
  many waiting requests; the stream is created with the running event loop (`TextStream()`).
- for each request: `stream.push(text)` for every decoded piece (stop strings already applied, e.g.
  with `StopMatcher`), then exactly one of `stream.finish(Completion)` or `stream.fail(error)`;
  an `ApiError` reaches the client as is, any other error as a 500 naming it.
- honour `stream.cancelled` (or set `stream.on_cancel`): end the request early, finish or fail it,
  and free its slot.
- `cached_prompt_tokens` in the `Completion`: the prompt tokens it did not prefill (prefix reuse).
- `start()` and `close()` (stop the worker; fail what is still queued); `cancelled`: how many
  requests ended early because their client went away.

Requests arrive already tokenized (`PreparedPrompt`), so preprocessing never holds the model thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.serving.errors import ApiError, QueueFullError, as_api_error
from kimi_agent.model_runtime.stops import StopMatcher

if TYPE_CHECKING:
    import torch

    from kimi_agent.model_runtime.engine import Engine


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    """One tokenized conversation: input_ids long [1, T]; pixel_values float32 [L, 3, 14, 14] and
    image_grid_hws int64 [N, 2] when it has images."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_hws: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """max_new_tokens >= 1; temperature 0 is greedy; stop: strings that end the reply (not included)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished request: token counts include a stop token; latency in ms from submit to finish."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    latency_ms: float


_END = object()
log = logging.getLogger(__name__)


@dataclass(eq=False)
class TextStream:
    """Text pieces of one request, pushed from a worker thread, read with `async for` on the loop."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    completion: Completion | None = None
    submitted: float = field(default_factory=time.perf_counter)
    on_cancel: Callable[[], None] | None = None  # set by a scheduler that is told rather than polls
    _events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)

    # -- the worker's side (any thread) --------------------------------------------------------
    def push(self, text: str) -> None:
        if text:
            self._post(text)

    def finish(self, completion: Completion) -> None:
        self._post((_END, completion))

    def fail(self, error: BaseException) -> None:
        """End the request with `error` (the reader gets it as an `ApiError`, see `as_api_error`)."""
        self._post((_END, as_api_error(error)))

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _post(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down, nobody listens
            self.cancel()

    # -- the reader's side (the event loop) ----------------------------------------------------
    def cancel(self) -> None:
        """Stop generating for this stream (any thread; idempotent)."""
        if not self._cancel.is_set():
            self._cancel.set()
            if self.on_cancel is not None:
                self.on_cancel()

    def abort(self, error: ApiError) -> None:
        """End the request now with `error` (the event loop's thread): generation is cancelled, and the
        reader gets `error` next, without waiting for the worker to notice (e.g. at shutdown)."""
        self.cancel()
        self._events.put_nowait((_END, error))

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        while True:
            item = await self._events.get()
            if isinstance(item, str):
                yield item
                continue
            _, outcome = item
            if isinstance(outcome, BaseException):
                raise outcome
            self.completion = outcome
            return

    async def text(self) -> str:
        """Wait for the whole reply (its `completion` is then set)."""
        return "".join([piece async for piece in self])


class Scheduler(Protocol):
    """What the HTTP layer needs from whatever runs the model (see the module docstring)."""

    cancelled: int

    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> TextStream: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class SerialScheduler:
    """One daemon worker thread runs `engine` for one request at a time, in arrival order.

    At most `max_queue` requests wait (the running one not counted); one more is a `QueueFullError`.
    The engine keeps its prefix cache between requests, so a client that resends its conversation
    plus one new turn prefills only the new turn (`Completion.cached_prompt_tokens`).
    """

    def __init__(self, engine: Engine, *, max_queue: int = 16) -> None:
        if engine.processor is None:
            raise ValueError("SerialScheduler needs an Engine with a processor (to decode text)")
        self.engine = engine
        self.max_queue = max_queue
        self._queue: queue.Queue[tuple[TextStream, PreparedPrompt, SamplingParams] | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._current: TextStream | None = None  # the request the worker is running
        self.served = 0  # requests finished or failed
        self.cancelled = 0  # requests ended early because their client went away

    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> TextStream:
        stream = TextStream()
        try:
            self._queue.put_nowait((stream, prompt, params))
        except queue.Full:
            raise QueueFullError(f"the server is busy: {self.max_queue} requests are already waiting; "
                                 "retry shortly") from None
        return stream

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kimi-serve-worker", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Fail every waiting request, cancel the running one, and stop the worker (waits <= timeout_s)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].fail(ApiError(503, "the server is shutting down", type="server_error", code="shutdown"))
        if self._current is not None:
            self._current.cancel()
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:  # refilled meanwhile: the daemon worker ends with the process
                return
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            stream, prompt, params = item
            if stream.cancelled:
                self.cancelled += 1
                continue
            self._current = stream
            try:
                stream.finish(self._generate(stream, prompt, params))
            except Exception as e:  # the worker's one error funnel: this request fails, the worker goes on
                if not isinstance(e, AgentError | ValueError | RuntimeError):
                    log.exception("unexpected error while generating")
                self.engine.reset()  # the cache may hold half a prompt
                stream.fail(e)
            self._current = None
            self.served += 1

    def _generate(self, stream: TextStream, prompt: PreparedPrompt, params: SamplingParams) -> Completion:
        """Run one request, pushing text as it decodes; stops on a stop token, a stop string, the token
        budget or `stream.cancelled`."""
        engine = self.engine
        assert engine.processor is not None
        decoder = engine.processor.stream_decoder(skip_special_tokens=True)
        stops = StopMatcher(params.stop)
        tokens = engine.stream_ids(prompt.input_ids, prompt.pixel_values, prompt.image_grid_hws,
                                   max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                                   top_p=params.top_p, seed=params.seed)
        pieces: list[str] = []

        def emit(text: str) -> None:
            pieces.append(text)
            stream.push(text)

        count, last = 0, None
        try:
            for last in tokens:
                count += 1
                if last not in engine.stop_token_ids:
                    emit(stops.push(decoder.push(last)))
                if stops.stopped or stream.cancelled:
                    break
        finally:
            tokens.close()  # the engine records what its cache holds
        if stream.cancelled:
            self.cancelled += 1
        if not stops.stopped:
            emit(stops.push(decoder.flush()))
            emit(stops.flush())
        finish: Literal["stop", "length"] = "stop" if stops.stopped or last in engine.stop_token_ids else "length"
        return Completion(text="".join(pieces), finish_reason=finish, prompt_tokens=prompt.num_tokens, completion_tokens=count,
                          cached_prompt_tokens=engine.last_cached_tokens,
                          latency_ms=(time.perf_counter() - stream.submitted) * 1000)
