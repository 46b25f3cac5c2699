"""Static-shape decode: one new token per sequence over fixed windows of a latent cache, run eagerly,
through `torch.compile`, or replayed from captured CUDA graphs.

A captured graph has fixed shapes and fixed addresses, so:
- the decoder never owns or replaces storage: it reads and writes the caller's `MLACache`, which
  must not be reallocated while the decoder lives (the `Engine` allocates it once at its maximum);
- shapes come in buckets: rows (sequences) round up to 1, 2, 4, 8, 16, ... (capped at the cache's
  batch size; rows beyond the caller's are scratch) and the attention reads the first `slots` cache
  positions, the smallest power of two >= 1024 that covers the position, capped at `max_len`. One
  graph (or compiled variant) per (rows, slots) bucket, made when first needed;
- the capacity is checked before anything is written (`CacheFullError`), and a call with more rows
  than the cache has is refused, never broadcast;
- the MoE runs a path with no host synchronisation (`decode_moe_impl`, per row bucket): the fused
  decode MoE (three Triton kernels) for up to `FUSED_MOE_MAX_ROWS` rows in bf16/fp16 on CUDA,
  grouped_mm for more rows in bf16 on CUDA, per-slot weight gathers otherwise, so routing never
  changes shapes (no recompiles). `moe=` or `$KIMI_AGENT_DECODE_MOE` (fused, grouped_mm, gathered)
  picks one path for every bucket instead.

Call like `decode_step`: `logits = decoder(tokens)` with tokens [n] int64 -> logits [n, V] fp32; the
cache is advanced by 1. All rows decode at position `cache.pos`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.fused_moe import FUSED_MOE_MAX_ROWS, fused_moe_available
from kimi_agent.model_runtime.kv_cache import MLACache
from kimi_agent.model_runtime.moe import DeepseekV3MoE, MoEImpl, sync_free_moe_impl

if TYPE_CHECKING:
    from kimi_agent.model_runtime.kimi_vl import KimiVL

DecodeMode = Literal["eager", "static", "compile", "graph", "compile+graph"]
DECODE_MODES: tuple[str, ...] = ("eager", "static", "compile", "graph", "compile+graph")
ROW_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
MIN_SLOTS = 1024
DECODE_MOE_ENV = "KIMI_AGENT_DECODE_MOE"
DECODE_MOE_IMPLS: tuple[str, ...] = ("auto", "fused", "grouped_mm", "gathered")


class CacheFullError(AgentError):
    """A decode step would write past the end of a preallocated cache."""


def row_bucket(n: int, max_rows: int) -> int:
    """Smallest row bucket >= n, capped at the cache's batch size."""
    return min(next((b for b in ROW_BUCKETS if b >= n), n), max_rows)


def slot_bucket(needed: int, max_len: int) -> int:
    """Smallest power of two >= max(needed, MIN_SLOTS), capped at `max_len`."""
    slots = MIN_SLOTS
    while slots < needed:
        slots *= 2
    return min(slots, max_len)


def decode_moe_impl(device: torch.device, dtype: torch.dtype, rows: int, requested: str = "auto") -> MoEImpl:
    """The sync-free MoE path of a decode bucket of `rows` rows (module docstring); `requested` other
    than "auto" is used as is."""
    if requested not in DECODE_MOE_IMPLS:
        raise ValueError(f"decode MoE {requested!r}; use one of {', '.join(DECODE_MOE_IMPLS)} "
                         f"(from moe= or ${DECODE_MOE_ENV})")
    if requested != "auto":
        return requested
    if rows <= FUSED_MOE_MAX_ROWS and fused_moe_available(device, dtype):
        return "fused"
    return sync_free_moe_impl(device, dtype)


@contextlib.contextmanager
def moe_impl(model: KimiVL, impl: MoEImpl, layers: list[DeepseekV3MoE] | None = None) -> Iterator[None]:
    """Run the model's MoE layers (`layers`, default all: a walk over every module, so pass them on
    hot paths) with `impl`, restoring their previous setting afterwards."""
    layers = model.moe_layers() if layers is None else layers
    before = [m.impl for m in layers]
    for m in layers:
        m.impl = impl
    try:
        yield
    finally:
        for m, b in zip(layers, before, strict=True):
            m.impl = b


def _step(model: KimiVL, tokens: torch.Tensor, positions: torch.Tensor, window: MLACache) -> torch.Tensor:
    """tokens [R, 1], positions [1] (or per row [R, 1]) -> logits [R, V] fp32; writes the latents at
    `positions`."""
    embeds = model.language_model.model.embed_tokens(tokens)
    return model.language_model(embeds, positions, window, last_only=True)[:, -1]


@dataclass
class _Bucket:
    """Fixed inputs/outputs of one (rows, slots) shape; `graph` is set once captured."""

    tokens: torch.Tensor  # [R, 1] int64
    positions: torch.Tensor  # [1] (all rows at one position) or [R, 1] (each row at its own) int64
    window: MLACache
    moe: MoEImpl  # the MoE path of this bucket's rows (`decode_moe_impl`)
    logits: torch.Tensor | None = None  # [R, V] fp32 (graph output)
    graph: torch.cuda.CUDAGraph | None = None


class _BucketedDecoder:
    """What `StaticDecoder` and `RowDecoder` share: the mode, the sync-free MoE, one bucket per
    (rows, slots) shape, and running or replaying a bucket's step."""

    def __init__(self, model: KimiVL, cache: MLACache, *, mode: DecodeMode, warmup: int, moe: str) -> None:
        if mode not in ("static", "compile", "graph", "compile+graph"):
            raise ValueError(f"{type(self).__name__} mode {mode!r}; use static, compile, graph or compile+graph")
        if "graph" in mode and model.device.type != "cuda":
            raise ValueError(f"decode mode {mode!r} needs a CUDA device; the model is on {model.device}")
        if cache.static:
            raise ValueError("pass the owning (dynamic) cache; the decoder makes its own static windows")
        self.model, self.cache, self.mode, self.warmup = model, cache, mode, warmup
        self.moe_request = os.environ.get(DECODE_MOE_ENV, "auto") if moe == "auto" else moe
        decode_moe_impl(model.device, model.dtype, 1, self.moe_request)  # a bad name fails here, not mid-run
        self.moe_layers = model.moe_layers()
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self._fn: Callable[..., torch.Tensor] = _step
        if "compile" in mode:
            import torch._dynamo as dynamo

            # one compiled variant per bucket: allow more than the default 8 without a warning
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            self._fn = torch.compile(_step, dynamic=False, fullgraph=True)

    def _check(self, n: int, top: int) -> None:
        """Refuse `n` rows beyond the cache's sequences, or a write at position `top` past its slots."""
        if n > self.cache.batch_size:
            raise ValueError(f"{n} rows but the cache holds {self.cache.batch_size} sequences")
        if top + 1 > self.cache.max_len:
            raise CacheFullError(f"KV cache full: position {top} is past its {self.cache.max_len} slots")

    def _bucket(self, rows: int, slots: int, where: torch.Tensor) -> _Bucket:
        """The bucket of this shape, made (and captured, writing at positions `where`: [1] or [R, 1]
        on the host) when first needed."""
        key = (rows, slots)
        if key not in self.buckets:
            dev = self.model.device
            bucket = _Bucket(torch.zeros(rows, 1, dtype=torch.long, device=dev), where.to(dev),
                             self.cache.window(rows, slots),
                             decode_moe_impl(dev, self.model.dtype, rows, self.moe_request))
            if "graph" in self.mode:
                self._capture(bucket)
            self.buckets[key] = bucket
        return self.buckets[key]

    def _run(self, bucket: _Bucket, n: int) -> torch.Tensor:
        """The bucket's step on its filled inputs -> logits of its first `n` rows [n, V]."""
        with torch.inference_mode():
            if bucket.graph is not None:  # no Python runs inside a replay: the MoE path is baked in
                bucket.graph.replay()
                assert bucket.logits is not None
                return bucket.logits[:n].clone()
            with moe_impl(self.model, bucket.moe, self.moe_layers):
                return self._fn(self.model, bucket.tokens, bucket.positions, bucket.window)[:n]

    def _capture(self, bucket: _Bucket) -> None:
        """Warm up on a side stream (kernel selection, compilation), then capture one step. Warm-up
        and capture write only at the bucket's `positions` (scratch slots the caller picked: the first
        free one of each row), which real steps overwrite."""
        with torch.inference_mode(), moe_impl(self.model, bucket.moe, self.moe_layers):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(max(self.warmup, 1)):
                    self._fn(self.model, bucket.tokens, bucket.positions, bucket.window)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                bucket.logits = self._fn(self.model, bucket.tokens, bucket.positions, bucket.window)
        bucket.graph = graph


class StaticDecoder(_BucketedDecoder):
    """Decode steps in fixed-shape buckets over `cache`, all rows at `cache.pos` (see the module docstring).

    mode: "static" runs the fixed-shape step eagerly (the reference the others must equal);
    "compile" runs it through `torch.compile` (any device); "graph" captures it as a CUDA graph;
    "compile+graph" captures the compiled step. moe: "auto" (per row bucket, or `$KIMI_AGENT_DECODE_MOE`),
    "fused", "grouped_mm" or "gathered".
    """

    def __init__(self, model: KimiVL, cache: MLACache, *, mode: DecodeMode = "graph",
                 warmup: int = 2, moe: str = "auto") -> None:
        super().__init__(model, cache, mode=mode, warmup=warmup, moe=moe)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        n, pos = tokens.shape[0], self.cache.pos
        self._check(n, pos)
        bucket = self._bucket(row_bucket(n, self.cache.batch_size), slot_bucket(pos + 1, self.cache.max_len),
                              torch.tensor([pos]))
        bucket.tokens[:n, 0].copy_(tokens)
        bucket.positions.fill_(pos)
        logits = self._run(bucket, n)
        self.cache.advance(1)
        return logits


class RowDecoder(_BucketedDecoder):
    """Decode steps for sequences at their own positions, as a batching scheduler runs its slots:
    `decoder(tokens, positions)` with tokens [R] int64 for rows 0..R-1 of `cache` and their R positions
    (ints) -> logits [R, V] fp32; each row's latent is written at its position. R should be a row
    bucket (`row_bucket`): one graph or compiled variant per (R, slots) shape. Nothing is advanced:
    the caller keeps every row's position. Same modes and checks as `StaticDecoder`."""

    def __init__(self, model: KimiVL, cache: MLACache, *, mode: DecodeMode = "graph",
                 warmup: int = 2, moe: str = "auto") -> None:
        super().__init__(model, cache, mode=mode, warmup=warmup, moe=moe)

    def __call__(self, tokens: torch.Tensor, positions: list[int]) -> torch.Tensor:
        n = tokens.shape[0]
        if len(positions) != n:
            raise ValueError(f"{n} tokens but {len(positions)} positions")
        self._check(n, max(positions))
        cuda = self.model.device.type == "cuda"  # page-locked: the copy waits for no step queued before it
        where = torch.tensor(positions, dtype=torch.long, pin_memory=cuda)[:, None]  # [R, 1] on the host
        bucket = self._bucket(n, slot_bucket(max(positions) + 1, self.cache.max_len), where)
        bucket.tokens[:, 0].copy_(tokens)
        bucket.positions.copy_(where, non_blocking=cuda)
        return self._run(bucket, n)
