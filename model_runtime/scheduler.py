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

Greedy results equal running each request alone through an `Engine`. Thread-safe `submit()`; the
steps run in whichever thread calls `step()`/`run_until_idle()`, or in `start()`'s background thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.engine import Engine, EngineResult
from kimi_agent.model_runtime.generate import STOP_TOKEN_IDS, prefill, sample
from kimi_agent.model_runtime.kv_cache import MLACache
from kimi_agent.model_runtime.static_decode import slot_bucket

if TYPE_CHECKING:
    from kimi_agent.model_runtime.kimi_vl import KimiVL


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
    on_token: Callable[[int], None] | None = None  # called in the scheduler's thread


@dataclass
class GenerationHandle:
    """The caller's view of a submitted request; `result()` waits for it."""

    request: GenerationRequest
    tokens: list[int] = field(default_factory=list)
    finish_reason: Literal["stop", "length"] | None = None
    cached_prompt_tokens: int = 0
    error: BaseException | None = None
    submitted: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)

    def result(self, timeout: float | None = None) -> EngineResult:
        """Wait (at most `timeout` s) for the request; raise its error, or TimeoutError."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"generation not finished after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.finish_reason is not None
        return EngineResult(token_ids=list(self.tokens), text="", finish_reason=self.finish_reason,
                            prompt_tokens=self.request.input_ids.shape[1],
                            cached_prompt_tokens=self.cached_prompt_tokens,
                            latency_ms=(time.perf_counter() - self.submitted) * 1000)


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


class BatchScheduler:
    """Continuous batching over `slots` sequences of at most `max_len` tokens each (see module doc)."""

    def __init__(self, model: KimiVL, *, slots: int = 4, max_len: int = 8192,
                 stop_token_ids: tuple[int, ...] = STOP_TOKEN_IDS, max_cached_images: int = 16) -> None:
        if slots < 1 or max_len < 2:
            raise ValueError(f"a scheduler needs >= 1 slot and >= 2 tokens per slot, got {slots}, {max_len}")
        self.model, self.stop_token_ids = model, stop_token_ids
        cache = model.new_cache(slots, max_len)
        assert isinstance(cache, MLACache)
        self.cache = cache
        rows = [cache.row(i) for i in range(slots)]  # the slot and its engine share one row object (one `pos`)
        self.slots = [_Slot(i, Engine(model, None, decode="eager", cache=row, max_cached_images=max_cached_images),
                            row) for i, row in enumerate(rows)]
        self.waiting: deque[GenerationHandle] = deque()
        self._lock = threading.Condition()
        self._clock = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.decode_steps = 0
        self.decoded_rows = 0  # sum of batch sizes over decode steps

    # -- submission -----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request (thread-safe); returns at once."""
        if request.input_ids.dim() != 2 or request.input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be [1, T], got {list(request.input_ids.shape)}")
        handle = GenerationHandle(request)
        with self._lock:
            self.waiting.append(handle)
            self._lock.notify()
        return handle

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> EngineResult:
        """Submit and wait (needs `start()` or another thread calling `step()`)."""
        return self.submit(request).result(timeout)

    # -- the loop -------------------------------------------------------------------------------
    def busy(self) -> bool:
        return bool(self.waiting) or any(s.handle is not None for s in self.slots)

    def step(self) -> bool:
        """One iteration: admit, prefill at most one, decode one token for every generating row.
        Returns whether anything was done."""
        with self._lock:
            self._admit()
        did = False
        for s in self.slots:
            if s.handle is not None and not s.prefilled:
                self._prefill(s)
                did = True
                break
        active = [s for s in self.slots if s.handle is not None and s.prefilled]
        if active:
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
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self.busy() and not self._stop.is_set():
                    self._lock.wait(timeout=1.0)
            if not self._stop.is_set():
                self.step()

    # -- internals ------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Move waiting requests into free slots (caller holds the lock)."""
        while self.waiting:
            handle = self.waiting[0]
            free = [s for s in self.slots if s.handle is None]
            if not free:
                return
            session = handle.request.session
            slot = (next((s for s in free if session is not None and s.session == session), None)
                    or next((s for s in free if s.session is None), None)
                    or min(free, key=lambda s: s.last_used))
            self.waiting.popleft()
            if slot.session != session:  # another session's prefix: forget it
                slot.engine.reset()
                slot.session = session
            slot.handle, slot.prefilled, slot.last_used = handle, False, next(self._clock)

    def _finish(self, slot: _Slot, reason: Literal["stop", "length"] | None,
                error: BaseException | None = None) -> None:
        handle = slot.handle
        assert handle is not None
        if error is not None:
            slot.engine.reset()  # the cache may hold half a prompt
            slot.session = None
            handle.error = error
        else:
            slot.engine.cached_keys = (slot.keys + handle.tokens)[: slot.cache.pos]
            handle.finish_reason = reason
        slot.handle, slot.prefilled = None, False
        handle.done.set()

    def _accept(self, slot: _Slot, logits: torch.Tensor) -> None:
        """Sample the next token of `slot` from logits [1, V]; finish it on a stop id or the budget."""
        handle = slot.handle
        assert handle is not None
        req = handle.request
        tok = int(sample(logits, slot.generator, req.temperature, req.top_p)[0])
        handle.tokens.append(tok)
        slot.next_token = tok
        if req.on_token is not None:
            req.on_token(tok)
        if tok in self.stop_token_ids:
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
        except (AgentError, ValueError, RuntimeError) as e:  # bad prompt, full cache, device error: this one only
            self._finish(slot, None, e)
            return
        handle.cached_prompt_tokens = slot.engine.last_cached_tokens
        slot.keys, slot.prefilled = keys, True
        slot.generator = (torch.Generator(self.model.device).manual_seed(req.seed) if req.seed is not None
                          else None)
        self._accept(slot, logits)

    def _decode(self, active: list[_Slot]) -> None:
        """One token for every active slot, batched over rows 0..hi-1 at per-row positions."""
        hi = max(s.index for s in active) + 1
        rows = self.slots[:hi]
        for s in rows:  # a full idle row gives up its last slot so its throwaway write has a place
            if s.handle is None and s.cache.pos >= s.cache.max_len:
                s.cache.truncate(s.cache.max_len - 1)
                s.engine.cached_keys = s.engine.cached_keys[: s.cache.max_len - 1]
        dev = self.model.device
        tokens = torch.tensor([s.next_token if s in active else 0 for s in rows], device=dev)
        positions = torch.tensor([[s.cache.pos] for s in rows], device=dev)  # [hi, 1]
        window = self.cache.window(hi, slot_bucket(int(positions.max()) + 1, self.cache.max_len))
        with torch.inference_mode():
            embeds = self.model.language_model.model.embed_tokens(tokens[:, None])
            logits = self.model.language_model(embeds, positions, window, last_only=True)[:, -1]  # [hi, V]
        self.decode_steps += 1
        self.decoded_rows += len(active)
        for s in active:
            s.cache.advance(1)
            self._accept(s, logits[s.index : s.index + 1])
