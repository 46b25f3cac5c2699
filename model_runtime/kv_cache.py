"""KV caches owned by the caller and passed into the model (the model stores nothing).

`MLACache` is the one the runtime uses: per token and layer it keeps MLA's compressed latent
(kv_lora_rank = 512 normalised c_kv numbers followed by qk_rope_head_dim = 64 rotated k_pe numbers),
i.e. 576 numbers instead of 16 heads x (192 + 128). `FullKVCache` keeps the expanded per-head K and
V; it exists only as the naive baseline of `bench/runtime.py` and for tests.

Both are preallocated for `max_len` positions and share the API: `reset()`, `pos`, `layer(i)`,
`advance(n)`, `truncate(n)`, `copy_prefix_from(other)`. Writes go to the positions given by the model
(`store`), reads return the first `pos + T` positions, or all `max_len` when `static` is set (fixed
shapes for CUDA graphs; the attention then masks by position).

Every allocation is sized first (`check_cache_fits`): a cache larger than the device's free memory
(CUDA: `torch.cuda.mem_get_info`; CPU: MemAvailable of /proc/meminfo) is refused with
`KVCacheSizeError` naming the config fields, instead of an allocator traceback or a host driven to OOM.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.config import DeepseekV3TextConfig

# Share of the free memory one cache may take (the rest is left for activations and other tenants).
CACHE_MEMORY_FRACTION = 0.9


class KVCacheSizeError(ConfigError):
    """A KV cache would not fit the device's free memory (the message names the fields and the sizes)."""


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Free memory of `device` in bytes (CUDA: `mem_get_info`; CPU: MemAvailable), None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_cache_fits(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str, what: str) -> None:
    """Raise `KVCacheSizeError` if a tensor of `shape` and `dtype` would exceed `CACHE_MEMORY_FRACTION` of
    the free memory of `device`. `what` spells the shape's factors (the config fields) for the message."""
    size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    free = free_memory_bytes(device)
    if free is not None and size > CACHE_MEMORY_FRACTION * free:
        raise KVCacheSizeError(f"the KV cache needs {size / 2**30:,.2f} GiB ({what} in {dtype}), but {device} "
                               f"has {free / 2**30:,.2f} GiB free; lower max_len / the batch size, or check "
                               "these config.json fields")


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str, what: str) -> torch.Tensor:
    check_cache_fits(shape, dtype, device, what)
    try:
        return torch.zeros(*shape, device=device, dtype=dtype)
    except (torch.OutOfMemoryError, RuntimeError) as e:  # free memory changed since the check
        raise KVCacheSizeError(f"the KV cache ({what} in {dtype}) could not be allocated on {device}: "
                               f"{str(e).splitlines()[0][:200]}") from None


class _Cache:
    def __init__(self, num_layers: int, batch_size: int, max_len: int, static: bool) -> None:
        self.num_layers, self.batch_size, self.max_len, self.static = num_layers, batch_size, max_len, static
        self._pos = 0

    @property
    def pos(self) -> int:
        """Number of positions already filled (the next token's position)."""
        return self._pos

    def reset(self) -> None:
        self._pos = 0

    def advance(self, n: int) -> None:
        if self._pos + n > self.max_len:
            raise ValueError(f"KV cache overflow: {self._pos} + {n} > max_len {self.max_len}")
        self._pos += n

    def truncate(self, n: int) -> None:
        """Forget everything after the first `n` positions (their slots get overwritten later)."""
        if not 0 <= n <= self._pos:
            raise ValueError(f"cannot truncate a cache at {self._pos} to {n}")
        self._pos = n

    def read_len(self, new_tokens: int) -> int:
        return self.max_len if self.static else self._pos + new_tokens


class MLACache(_Cache):
    """Latent cache `data` [layers, B, max_len, kv_lora_rank + rope_dim]; `layer(i)` -> [B, max_len, 576]."""

    def __init__(self, num_layers: int, batch_size: int, max_len: int, kv_lora_rank: int, rope_dim: int, *,
                 device: torch.device | str, dtype: torch.dtype, static: bool = False) -> None:
        super().__init__(num_layers, batch_size, max_len, static)
        self.kv_lora_rank = kv_lora_rank
        self.data = _zeros((num_layers, batch_size, max_len, kv_lora_rank + rope_dim), dtype, device,
                           f"num_hidden_layers {num_layers} x batch {batch_size} x max_len {max_len:,} x "
                           f"(kv_lora_rank {kv_lora_rank} + qk_rope_head_dim {rope_dim})")

    @classmethod
    def for_config(cls, cfg: DeepseekV3TextConfig, batch_size: int, max_len: int, *,
                   device: torch.device | str, dtype: torch.dtype, static: bool = False) -> MLACache:
        return cls(cfg.num_hidden_layers, batch_size, max_len, cfg.kv_lora_rank, cfg.qk_rope_head_dim,
                   device=device, dtype=dtype, static=static)

    def layer(self, i: int) -> torch.Tensor:
        return self.data[i]

    def store(self, i: int, positions: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Write latent [B, T, 576] at positions [T] (or per row [B, T]); return the readable [B, S, 576] view."""
        buf = self.data[i]
        if positions.dim() == 2:
            rows = torch.arange(buf.shape[0], device=buf.device)[:, None].expand_as(positions)
            buf.index_put_((rows, positions), latent.to(buf.dtype))
        else:
            buf.index_copy_(1, positions, latent.to(buf.dtype))
        return buf[:, : self.read_len(latent.shape[1])]

    def _view(self, data: torch.Tensor, max_len: int, static: bool) -> MLACache:
        """An MLACache over `data` (a view of this cache's storage) with its own `pos`, starting at 0."""
        view = MLACache.__new__(MLACache)
        _Cache.__init__(view, self.num_layers, data.shape[1], max_len, static)
        view.kv_lora_rank, view.data = self.kv_lora_rank, data
        return view

    def row(self, r: int) -> MLACache:
        """A one-sequence cache over row `r` of this one (shared storage, its own `pos`, starting at 0):
        how a batching scheduler gives each sequence its slot of one preallocated cache."""
        if not 0 <= r < self.batch_size:
            raise ValueError(f"row {r} outside cache of {self.batch_size} rows")
        return self._view(self.data[:, r:r + 1], self.max_len, static=False)

    def window(self, rows: int, read_len: int) -> MLACache:
        """A static view of the first `rows` sequences that reads exactly `read_len` slots (fixed shapes
        for captured decode graphs). It shares this cache's storage; its `pos` is not tracked."""
        if not (0 < rows <= self.batch_size and 0 < read_len <= self.max_len):
            raise ValueError(f"window ({rows} rows, {read_len} slots) outside cache "
                             f"({self.batch_size} rows, {self.max_len} slots)")
        return self._view(self.data[:, :rows, :read_len], read_len, static=True)

    def copy_prefix_from(self, other: MLACache, n: int | None = None) -> None:
        """Copy the first `n` (default: all filled) positions of `other` and continue from there."""
        n = other.pos if n is None else n
        assert n <= min(other.pos, self.max_len), f"prefix {n} vs other.pos {other.pos}, max {self.max_len}"
        self.data[:, :, :n].copy_(other.data[:, :, :n])
        self._pos = n

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token occupies across all layers (per sequence)."""
        return self.num_layers * self.data.shape[-1] * self.data.element_size()


class FullKVCache(_Cache):
    """Naive cache of expanded keys `k` [layers, B, max_len, H, qk_dim] and values `v` [.., H, v_dim]."""

    def __init__(self, cfg: DeepseekV3TextConfig, batch_size: int, max_len: int, *,
                 device: torch.device | str, dtype: torch.dtype, static: bool = False) -> None:
        super().__init__(cfg.num_hidden_layers, batch_size, max_len, static)
        shape = (cfg.num_hidden_layers, batch_size, max_len, cfg.num_attention_heads)
        what = (f"num_hidden_layers {cfg.num_hidden_layers} x batch {batch_size} x max_len {max_len:,} x "
                f"num_attention_heads {cfg.num_attention_heads} x (qk_nope_head_dim + qk_rope_head_dim "
                f"{cfg.qk_head_dim} + v_head_dim {cfg.v_head_dim})")
        check_cache_fits((*shape, cfg.qk_head_dim + cfg.v_head_dim), dtype, device, what)
        self.k = _zeros((*shape, cfg.qk_head_dim), dtype, device, what)
        self.v = _zeros((*shape, cfg.v_head_dim), dtype, device, what)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[i], self.v[i]

    def store(self, i: int, positions: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k [B, T, H, qk], v [B, T, H, dv] at positions [T]; return readable [B, S, H, *] views."""
        self.k[i].index_copy_(1, positions, k.to(self.k.dtype))
        self.v[i].index_copy_(1, positions, v.to(self.v.dtype))
        s = self.read_len(k.shape[1])
        return self.k[i][:, :s], self.v[i][:, :s]

    def copy_prefix_from(self, other: FullKVCache, n: int | None = None) -> None:
        n = other.pos if n is None else n
        self.k[:, :, :n].copy_(other.k[:, :, :n])
        self.v[:, :, :n].copy_(other.v[:, :, :n])
        self._pos = n

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * (self.k[0, 0, 0].numel() + self.v[0, 0, 0].numel()) * self.k.element_size()
