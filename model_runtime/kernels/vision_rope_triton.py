"""Triton kernel of MoonViT's 2D RoPE on q and k (`model_runtime/fused_vision.py`): one launch per
encoder layer reads the fused qkv projection [L, 3, H, d] and writes rotated q and k in the [H, L, d]
layout attention wants. The eager formula widens q and k to fp32, rotates them in about seven
elementwise kernels each over the whole image, narrows them again and leaves strided copies.

One program per patch. The rotation runs in fp32 as the reference does (`rope.apply_vision_rope`):
pair (x[2j], x[2j+1]) -> (x0 cos - x1 sin, x0 sin + x1 cos), then narrowed to the input's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_store(src, dst, cos, sin, offs_h, offs_p,  # type: ignore[no-untyped-def]
                  mask, l_stride, D: tl.constexpr):
    x0 = tl.load(src + offs_h[:, None] * D + 2 * offs_p[None, :], mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(src + offs_h[:, None] * D + 2 * offs_p[None, :] + 1, mask=mask, other=0.0).to(tl.float32)
    dt = dst.dtype.element_ty
    out = dst + offs_h[:, None] * l_stride + 2 * offs_p[None, :]
    tl.store(out, (x0 * cos - x1 * sin).to(dt), mask=mask)
    tl.store(out + 1, (x0 * sin + x1 * cos).to(dt), mask=mask)


@triton.jit
def vision_rope_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, L,  # type: ignore[no-untyped-def]
                       H: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr):
    patch = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    pmask = offs_p < D // 2
    mask = (offs_h < H)[:, None] & pmask[None, :]
    cos = tl.load(cos_ptr + patch * (D // 2) + offs_p, mask=pmask, other=0.0)[None, :]
    sin = tl.load(sin_ptr + patch * (D // 2) + offs_p, mask=pmask, other=0.0)[None, :]
    src = qkv_ptr + patch * (3 * H * D)
    l_stride = L * D  # from one head's rows to the next in [H, L, D]
    _rotate_store(src, q_ptr + patch * D, cos, sin, offs_h, offs_p, mask, l_stride, D)
    _rotate_store(src + H * D, k_ptr + patch * D, cos, sin, offs_h, offs_p, mask, l_stride, D)


def launch_settings(*, heads: int, head_dim: int) -> dict[str, tuple[dict[str, Any], int]]:
    """How `vision_rope` launches its kernel (the compile test builds exactly this)."""
    return {"vision_rope_kernel": (dict(H=heads, D=head_dim, BLOCK_H=triton.next_power_of_2(heads),
                                        BLOCK_P=triton.next_power_of_2(head_dim // 2)), 4)}


def vision_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv [L, 3, H, d], cos/sin [L, d/2] fp32 -> rotated q, k [H, L, d] (contiguous, qkv's dtype)."""
    n, _, h, d = qkv.shape
    qkv = qkv.contiguous()
    q = torch.empty(h, n, d, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    consts, warps = launch_settings(heads=h, head_dim=d)["vision_rope_kernel"]
    vision_rope_kernel[(n,)](qkv, cos.contiguous(), sin.contiguous(), q, k, n, **consts, num_warps=warps)
    return q, k
