"""Rotary position embeddings of Kimi-VL.

- Language model: interleaved (GPT-J style) RoPE on the 64 rope dims, pairs (x[2i], x[2i+1]) rotated
  by pos * theta^(-2i/d); the angle table is built in fp32 and cast to the activation dtype.
- MoonViT: 2D RoPE; pair 2j rotates by column * f_j, pair 2j+1 by row * f_j with
  f_j = theta^(-4j/d) (KIMI_VL.md §2.4); the rotation itself runs in fp32.

Both rotate interleaved pairs, so they share `rotate_pairs`.
"""

from __future__ import annotations

import torch


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., 2k], x[..., 2k+1]) by angles with cos/sin [..., d/2] (broadcast)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # [..., d/2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def paired_cos_sin(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [..., d/2] -> the per-element tables [..., d] of `rotate_paired`: (c0, c0, c1, c1, ...)
    and (-s0, s0, -s1, s1, ...). Made once per forward and shared by every layer."""
    return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)


def rotate_paired(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """`rotate_pairs` with the tables of `paired_cos_sin`: x * cos2 + swap_pairs(x) * sin2, bit for
    bit the same result in every dtype (the same products, each rounded once, then one add) in 4
    operations instead of 7, which is 4 kernels instead of 7 per call on a GPU."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0, x3, x2, ...)
    return x * cos2 + swapped * sin2


class PairedRopeTable:
    """The `paired_cos_sin` tables of the language model for positions 0..n-1, made once and looked up
    by position: two index kernels per forward instead of about twelve. Grown by doubling; a table it
    outgrows stays alive, since a captured CUDA graph may still read it. The values are those of
    `text_rope_cos_sin` + `paired_cos_sin` (the same elementwise formulas)."""

    def __init__(self, dim: int, theta: float) -> None:
        self.dim, self.theta = dim, theta
        self.tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.outgrown: list[tuple[torch.Tensor, torch.Tensor]] = []

    def lookup(self, positions: torch.Tensor, bound: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos2, sin2 [T, dim] for positions [T], every one of which is below `bound` (the caller's
        guarantee: a static cache's length)."""
        key = (positions.device, dtype)
        have = self.tables.get(key)
        if have is None or have[0].shape[0] < bound:
            if have is not None:
                self.outgrown.append(have)
            n = max(4096, 1 << (bound - 1).bit_length())
            cos, sin = text_rope_cos_sin(torch.arange(n, device=positions.device), self.dim, self.theta, dtype)
            self.tables[key] = have = paired_cos_sin(cos, sin)
        return have[0][positions], have[1][positions]


def text_rope_cos_sin(positions: torch.Tensor, dim: int, theta: float,
                      dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, dim/2] for 1-D positions [T]; fp32 angles, cast to `dtype` like the reference."""
    inv_freq = theta ** -(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [T, dim/2]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def vision_rope_cos_sin(grid_hws: list[tuple[int, int]], head_dim: int, theta: float,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim/2] fp32 for packed images; positions restart at (0, 0) per image."""
    freqs = theta ** -(torch.arange(0, head_dim, 4, device=device, dtype=torch.float32)[: head_dim // 4]
                       / head_dim)  # [d/4]
    rows, cols = [], []
    for h, w in grid_hws:
        idx = torch.arange(h * w, device=device)
        rows.append(idx // w)
        cols.append(idx % w)
    row = torch.cat(rows).to(torch.float32)[:, None] * freqs  # [L, d/4]
    col = torch.cat(cols).to(torch.float32)[:, None] * freqs  # [L, d/4]
    angles = torch.stack((col, row), dim=-1).flatten(1)  # [L, d/2]: column at even pairs, row at odd
    return angles.cos(), angles.sin()


def apply_vision_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [L, H, d] rotated in fp32 with cos/sin [L, d/2]; returns x's dtype."""
    return rotate_pairs(x.float(), cos[:, None, :], sin[:, None, :]).to(x.dtype)
