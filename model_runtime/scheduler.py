"""Continuous batching: many sequences (one per agent episode or client) decoding together on one model.

One latent cache is allocated once: [layers, slots, max_len, 576]. Each sequence runs in a *slot*
(a row of that cache) through its own `Engine` over `cache.row(slot)`, so a request that names the
`session` of an earlier one gets that session's slot back when it is free and reuses its prefix
and screenshot features, exactly as a single-episode `Engine` does. Each `step()`:

1. admits waiting requests to free slots (the session's own slot first, then an unclaimed one, then
   the least recently used) and prefills at most one of them, so prefills interleave with decodes
   and running sequences keep streaming;
2. runs one batched decode step for every generating sequence: rows 0..hi-1 of the cache, each at its
   own position (per-row positions and masks). Rows in that range that are not generating write a
   throwaway latent at their first free slot and their logits are ignored.

A free slot is chosen by content when the request names no session: the slot whose cached prefix the
prompt mostly shares (a client resending its conversation plus one turn), else an empty one, else
the least recently used. With a processor, each request's text is decoded as it is generated (whole
UTF-8 characters only) and its stop strings end it; `cancel()` ends a request at the next step and
frees its slot (its prefix stays reusable). `on_text`/`on_finish` callbacks run in the scheduler's
thread.

With lookahead (on by default for a CUDA model) a step's batched decode is queued before the previous
step's tokens are read back: the device computes step N + 1 (fed step N's tokens, on the device) while
the host accepts step N's tokens (text, stops, callbacks). A sequence that ends on step N's token
has had one more step, whose token is dropped; the cache then holds the last token too.

Greedy results equal running each request alone through an `Engine`. Thread-safe `submit()`; the
steps run in whichever thread calls `step()`/`run_until_idle()`, or in `start()`'s background thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.engine import Engine, EngineResult
from kimi_agent.model_runtime.generate import MIN_TEMPERATURE, STOP_TOKEN_IDS, prefill, sample
from kimi_agent.model_runtime.generation_request import (
    FinishReason,
    GenerationCancelledError,
    GenerationHandle,
    GenerationRequest,
    SchedulerClosedError,
)
from kimi_agent.model_runtime.kv_cache import MLACache
from kimi_agent.model_runtime.static_decode import (
    DECODE_MODES,
    DecodeMode,
    RowDecoder,
    row_bucket,
    slot_bucket,
)
from kimi_agent.model_runtime.stops import StopMatcher

if TYPE_CHECKING:
    from kimi_agent.model_runtime.kimi_vl import KimiVL
    from kimi_agent.model_runtime.tokenizer import StreamDecoder

log = logging.getLogger(__name__)
__all__ = ["BatchScheduler", "FinishReason", "GenerationCancelledError", "GenerationHandle", "GenerationRequest",
           "SchedulerClosedError"]
@dataclass
class _Slot:
    index: int
    engine: Engine
    cache: MLACache
    session: Hashable | None = None
    handle: GenerationHandle | None = None
    prefilled: bool = False
    next_token: int = 0  # sampled, not yet fed to the cache
    keys: list[Hashable] = field(default_factory=list)
    generator: torch.Generator | None = None
    last_used: int = 0
    decoder: StreamDecoder | None = None  # text of the running request (with a processor)
    stops: StopMatcher | None = None


@dataclass
class _InFlight:
    """A queued batched step whose tokens the host has not read: one token per row of `rows` (the slot
    and the request it ran for), `tokens` [n] on the device, copied into `host` [n] once `ready`."""
    rows: list[tuple[_Slot, GenerationHandle]]
    tokens: torch.Tensor
    host: torch.Tensor
    ready: torch.cuda.Event | None

    def read(self) -> list[int]:
        if self.ready is not None:
            self.ready.synchronize()  # the copy only, not the step queued after it
        return [int(t) for t in self.host.tolist()]


class BatchScheduler:
    """Continuous batching over `slots` sequences of at most `max_len` tokens each (see module doc).

    processor: a `KimiVLProcessor` (or anything with `stream_decoder`) to decode text and match stop
    strings; without one, handles carry token ids only. stop_token_ids: default the processor's, else
    `<|im_end|>` and `[EOS]`. decode: how the batched step runs: "eager" (the default), or a
    `RowDecoder` in fixed-shape row and slot buckets: "static" (its eager reference), "compile",
    "graph" / "compile+graph" (CUDA graphs, CUDA only); "auto" is "graph" on CUDA, else "eager".
    lookahead: queue each batched step before reading the previous one's tokens (see module doc);
    None: on for a CUDA model.
    """

    def __init__(self, model: KimiVL, processor: Any | None = None, *, slots: int = 4, max_len: int = 8192,
                 stop_token_ids: tuple[int, ...] | None = None, max_cached_images: int = 16,
                 decode: DecodeMode | Literal["auto"] = "eager", lookahead: bool | None = None) -> None:
        if slots < 1 or max_len < 2:
            raise ValueError(f"a scheduler needs >= 1 slot and >= 2 tokens per slot, got {slots}, {max_len}")
        if decode == "auto":
            decode = "graph" if model.device.type == "cuda" else "eager"
        if decode not in DECODE_MODES:
            raise ValueError(f"decode mode {decode!r}; use auto or one of {', '.join(DECODE_MODES)}")
        if stop_token_ids is None:
            stop_token_ids = tuple(getattr(processor, "stop_token_ids", STOP_TOKEN_IDS))
        self.model, self.processor, self.stop_token_ids = model, processor, stop_token_ids
        cache = model.new_cache(slots, max_len)
        assert isinstance(cache, MLACache)
        self.cache = cache
        rows = [cache.row(i) for i in range(slots)]  # the slot and its engine share one row object (one `pos`)
        self.slots = [_Slot(i, Engine(model, None, decode="eager", cache=row, max_cached_images=max_cached_images),
                            row) for i, row in enumerate(rows)]
        self.decoder = RowDecoder(model, cache, mode=decode) if decode != "eager" else None
        self.lookahead = lookahead if lookahead is not None else model.device.type == "cuda"
        self._inflight: _InFlight | None = None
        self.waiting: deque[GenerationHandle] = deque()
        self._lock = threading.Condition()
        self._clock = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.decode_steps = 0
        self.decoded_rows = 0  # sum of batch sizes over decode steps
        self.cancelled = 0  # requests ended by cancel() (waiting or running)

    # -- submission -----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request (thread-safe); returns at once."""
        if request.input_ids.dim() != 2 or request.input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be [1, T], got {list(request.input_ids.shape)}")
        if request.stop and self.processor is None:
            raise ValueError("stop strings need a scheduler with a processor (to decode text)")
        handle = GenerationHandle(request)
        with self._lock:
            self.waiting.append(handle)
            self._lock.notify()
        return handle

    def load(self) -> tuple[int, int]:
        """(requests waiting for a slot, free slots), read together (thread-safe)."""
        with self._lock:
            return len(self.waiting), sum(s.handle is None for s in self.slots)

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> EngineResult:
        """Submit and wait (needs `start()` or another thread calling `step()`)."""
        return self.submit(request).result(timeout)

    # -- the loop -------------------------------------------------------------------------------
    def busy(self) -> bool:
        return bool(self.waiting) or any(s.handle is not None for s in self.slots) or self._inflight is not None

    def step(self) -> bool:
        """One iteration: admit, end cancelled requests, prefill at most one, decode one token for every
        generating row. Returns whether anything was done."""
        with self._lock:
            did = self._admit()
        for s in self.slots:
            if s.handle is not None and s.handle.cancel_requested:
                self._finish(s, "cancelled")
                did = True
        for s in self.slots:
            if s.handle is not None and not s.prefilled:
                self._prefill(s)
                did = True
                break
        active = [s for s in self.slots if s.handle is not None and s.prefilled]
        if self.lookahead and (active or self._inflight is not None):
            self._decode_ahead(active)
            did = True
        elif active:
            self._decode(active)
            did = True
        return did

    def run_until_idle(self) -> None:
        while self.busy():
            self.step()

    def start(self) -> None:
        """Run steps in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kimi-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (waits <= `timeout` s for its current step), then fail every
        request still waiting or running with `SchedulerClosedError`."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # stuck in a long step: it ends with the process (daemon)
                return
            self._thread = None
        closed = SchedulerClosedError("the scheduler was stopped before this request finished")
        with self._lock:
            leftovers, self.waiting = list(self.waiting), deque()
        for handle in leftovers:
            self._done(handle, None, closed)
        self._inflight = None
        for s in self.slots:
            if s.handle is not None:
                self._finish(s, None, closed)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self.busy() and not self._stop.is_set():
                    self._lock.wait(timeout=1.0)
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception as e:  # the loop's one error funnel (e.g. out of memory in a batched decode):
                log.exception("batched step failed")  # the running requests fail, the loop goes on
                self._inflight = None
                for s in self.slots:
                    if s.handle is not None:
                        self._finish(s, None, e)

    # -- internals ------------------------------------------------------------------------------
    def _admit(self) -> bool:
        """Drop cancelled waiting requests and move the others into free slots (caller holds the lock)."""
        did = False
        for handle in [h for h in self.waiting if h.cancel_requested]:
            self.waiting.remove(handle)
            self.cancelled += 1
            self._done(handle, "cancelled")
            did = True
        while self.waiting:
            free = [s for s in self.slots if s.handle is None]
            if not free:
                break
            handle = self.waiting.popleft()
            slot = self._choose(free, handle.request)
            slot.session = handle.request.session
            slot.handle, slot.prefilled, slot.last_used = handle, False, next(self._clock)
            did = True
        return did

    def _choose(self, free: list[_Slot], request: GenerationRequest) -> _Slot:
        """The free slot for `request`: its session's; else the one sharing the longest prefix with the
        prompt, if that prefix is at least half of the prompt or of what the slot holds (a resent or
        continued conversation, not just a common system prompt); else an empty one; else the least
        recently used. Content decides reuse (`Engine.prepare`); this only picks where most of it is."""
        if request.session is not None:
            own = next((s for s in free if s.session == request.session), None)
            if own is not None:
                return own
        ids = request.input_ids[0].tolist()

        def shared(slot: _Slot) -> int:  # image placeholders compare by id here, by content in prepare
            n = 0
            for a, b in zip(ids, slot.engine.cached_keys, strict=False):
                if a != (b[0] if isinstance(b, tuple) else b):
                    break
                n += 1
            return n

        scored = [(shared(s), s) for s in free]
        continued = [(n, s) for n, s in scored if n > 0 and 2 * n >= min(len(ids), len(s.engine.cached_keys))]
        if continued:
            return max(continued, key=lambda t: t[0])[1]
        empty = next((s for s in free if s.session is None and not s.engine.cached_keys), None)
        return empty or min(free, key=lambda s: s.last_used)

    def _done(self, handle: GenerationHandle, reason: FinishReason | None,
              error: BaseException | None = None) -> None:
        """Mark `handle` finished and run its `on_finish` callback."""
        handle.finish_reason, handle.error, handle.finished = reason, error, time.perf_counter()
        handle.done.set()
        self._callback(handle.request.on_finish, handle)

    def _callback(self, fn: Callable[[Any], None] | None, arg: Any) -> None:
        """Run a caller's callback; its error is logged, never breaks the batch."""
        if fn is None:
            return
        try:
            fn(arg)
        except Exception:
            log.exception("a scheduler callback failed")

    def _emit(self, slot: _Slot, text: str) -> None:
        handle = slot.handle
        assert handle is not None
        if text:
            handle.pieces.append(text)
            self._callback(handle.request.on_text, text)

    def _finish(self, slot: _Slot, reason: FinishReason | None, error: BaseException | None = None) -> None:
        handle = slot.handle
        assert handle is not None
        if error is not None:
            slot.engine.reset()  # the cache may hold half a prompt
            slot.session = None
        else:
            if slot.prefilled:  # the cache holds the prompt and the fed tokens: reusable
                slot.engine.cached_keys = (slot.keys + handle.tokens)[: slot.cache.pos]
            if slot.decoder is not None and slot.stops is not None and not slot.stops.stopped:
                self._emit(slot, slot.stops.push(slot.decoder.flush()))
                self._emit(slot, slot.stops.flush())
        if reason == "cancelled":
            self.cancelled += 1
        slot.handle, slot.prefilled, slot.decoder, slot.stops = None, False, None, None
        self._done(handle, reason, error)

    def _pick(self, slots: list[_Slot], logits: torch.Tensor) -> torch.Tensor:
        """The next token of each slot [len(slots)], on the device, from its row of logits [R, V] (row =
        slot index): one argmax over all rows for greedy requests, a draw from its own generator for
        each sampling one."""
        reqs = [s.handle.request for s in slots]  # type: ignore[union-attr]
        greedy = logits.argmax(-1) if any(r.temperature < MIN_TEMPERATURE for r in reqs) else None  # [R]
        if all(r.temperature < MIN_TEMPERATURE for r in reqs):
            assert greedy is not None
            return greedy.index_select(0, self._on_device([s.index for s in slots])) if len(slots) < logits.shape[0] \
                else greedy
        rows = [greedy[s.index] if greedy is not None and r.temperature < MIN_TEMPERATURE else
                sample(logits[s.index : s.index + 1], s.generator, r.temperature, r.top_p)[0]
                for s, r in zip(slots, reqs, strict=True)]
        return torch.stack(rows)

    def _accept(self, slot: _Slot, tok: int) -> None:
        """Take `tok` as the next token of `slot`; emit its text; finish it on a stop id, a stop string
        or the budget."""
        handle = slot.handle
        assert handle is not None
        req = handle.request
        handle.tokens.append(tok)
        slot.next_token = tok
        self._callback(req.on_token, tok)
        if slot.decoder is not None and slot.stops is not None and tok not in self.stop_token_ids:
            self._emit(slot, slot.stops.push(slot.decoder.push(tok)))
        if tok in self.stop_token_ids or (slot.stops is not None and slot.stops.stopped):
            self._finish(slot, "stop")
        elif len(handle.tokens) >= req.max_new_tokens:
            self._finish(slot, "length")

    def _prefill(self, slot: _Slot) -> None:
        handle = slot.handle
        assert handle is not None
        req = handle.request
        try:
            if req.max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {req.max_new_tokens}")
            cache, suffix, features, keys = slot.engine.prepare(
                req.input_ids, req.pixel_values, req.image_grid_hws, max_new_tokens=req.max_new_tokens)
            with torch.inference_mode():
                logits = prefill(self.model, suffix, cache, image_features=features)
            generator = (torch.Generator(self.model.device).manual_seed(req.seed) if req.seed is not None
                         else None)
            tok = int(sample(logits, generator, req.temperature, req.top_p)[0])  # logits [1, V]
        except (AgentError, ValueError, RuntimeError) as e:  # bad prompt, full cache, device error: this one only
            self._finish(slot, None, e)
            return
        handle.cached_prompt_tokens = slot.engine.last_cached_tokens
        slot.keys, slot.prefilled, slot.generator = keys, True, generator
        if self.processor is not None:
            slot.decoder = self.processor.stream_decoder(skip_special_tokens=True)
            slot.stops = StopMatcher(req.stop)
        self._accept(slot, tok)

    def _decode(self, active: list[_Slot]) -> None:
        """One token for every active slot, batched over rows 0..R-1 at per-row positions (R: the highest
        active row + 1, rounded up to a row bucket when a `RowDecoder` runs it), read back at once."""
        rows = self._rows(active)
        tokens = self._on_device([s.next_token if s in active else 0 for s in rows])
        picked = self._pick(active, self._forward(rows, tokens, len(active))).tolist()  # one read back for the whole batch
        for s, tok in zip(active, picked, strict=True):
            s.cache.advance(1)
            self._accept(s, int(tok))

    def _decode_ahead(self, active: list[_Slot]) -> None:
        """`_decode` with lookahead: queue the step for `active` (a row the queued step ran for the same
        request is fed that step's token on the device, a newly prefilled one its first token), then
        read the queued step's tokens and accept those whose request still runs."""
        previous, self._inflight = self._inflight, None
        if active:
            rows = self._rows(active)
            with torch.inference_mode():
                tokens = self._on_device([s.next_token if s in active else 0 for s in rows])
                if previous is not None:  # [(row, index in previous.tokens)] of the rows that go on
                    where = {id(slot): i for i, (slot, handle) in enumerate(previous.rows) if slot.handle is handle}
                    pairs = [(s.index, where[id(s)]) for s in active if id(s) in where]
                    if pairs:
                        dst, src = (self._on_device(list(c)) for c in zip(*pairs, strict=True))
                        tokens.index_copy_(0, dst, previous.tokens.index_select(0, src))
                picked = self._pick(active, self._forward(rows, tokens, len(active)))  # [len(active)], on the device
                cuda = picked.is_cuda
                host = torch.empty(len(active), dtype=torch.long, pin_memory=cuda)
                host.copy_(picked, non_blocking=cuda)
                ready = torch.cuda.Event() if cuda else None
                if ready is not None:
                    ready.record()
            for s in active:
                s.cache.advance(1)  # its token is fed: the cache holds every token the host accepts
            self._inflight = _InFlight([(s, s.handle) for s in active], picked, host, ready)
        if previous is not None:
            for (s, handle), tok in zip(previous.rows, previous.read(), strict=True):
                if s.handle is handle:  # not cancelled or failed since it was queued
                    self._accept(s, tok)

    def _on_device(self, values: list[int]) -> torch.Tensor:
        """`values` as int64 [n] on the model's device; on CUDA through page-locked memory, so the copy
        is queued behind the steps already queued instead of waiting for them."""
        dev = self.model.device
        if dev.type != "cuda":
            return torch.tensor(values, dtype=torch.long, device=dev)
        return torch.tensor(values, dtype=torch.long, pin_memory=True).to(dev, non_blocking=True)

    def _rows(self, active: list[_Slot]) -> list[_Slot]:
        """Rows 0..R-1 of the batched step for `active` (R: the highest active row + 1, rounded up to a
        row bucket when a `RowDecoder` runs it); a full row that is not decoding gives up its last slot
        so its throwaway write has a place."""
        hi = max(s.index for s in active) + 1
        if self.decoder is not None:
            hi = row_bucket(hi, len(self.slots))
        rows = self.slots[:hi]
        for s in rows:
            if s not in active and s.cache.pos >= s.cache.max_len:
                s.cache.truncate(s.cache.max_len - 1)
                s.engine.cached_keys = s.engine.cached_keys[: s.cache.max_len - 1]
        return rows

    def _forward(self, rows: list[_Slot], tokens: torch.Tensor, decoding: int) -> torch.Tensor:
        """Logits [R, V] of one batched step feeding tokens [R] to `rows` at their positions, `decoding`
        of which are generating (the others write a throwaway latent at their first free slot; their
        logits are ignored)."""
        where = [s.cache.pos for s in rows]
        self.decode_steps += 1
        self.decoded_rows += decoding
        if self.decoder is not None:
            return self.decoder(tokens, where)  # [R, V]
        positions = self._on_device(where)[:, None]  # [R, 1]
        window = self.cache.window(len(rows), slot_bucket(max(where) + 1, self.cache.max_len))
        with torch.inference_mode():
            embeds = self.model.language_model.model.embed_tokens(tokens[:, None])
            return self.model.language_model(embeds, positions, window, last_only=True)[:, -1]  # [R, V]
