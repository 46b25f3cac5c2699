"""MLA attention of one new token per row as one operation, `torch.ops.kimi_agent.mla_decode`: the
latent's norm and rotation, its write into the cache, the absorbed attention over the cache, and
kv_b_proj's value half, i.e. everything between kv_a_proj/q_proj and o_proj of a decode step.

On CUDA in bf16/fp16 it is three Triton kernels (`kernels/mla_decode_triton.py`) instead of about
twenty-five; elsewhere, or for shapes the kernels do not take, it runs `mla_decode_reference`, the
eager formulas of `text.py` (so the CPU computes exactly what it computed before). As a registered
custom operation (which mutates only `cache`) it is one node for `torch.compile` and is captured
into CUDA graphs.
"""

from __future__ import annotations

from typing import Any

import torch

from kimi_agent.model_runtime.fused_norm import rms_norm_reference
from kimi_agent.model_runtime.kernels import run_kernels, triton_enabled
from kimi_agent.model_runtime.rope import rotate_paired


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def mla_kernel_shapes_ok(heads: int, nope: int, rope: int, rank: int, v_dim: int) -> bool:
    """Whether the Triton kernels take these attention sizes: powers of two, and the attention's dot
    products at least 16 wide (Kimi-VL: 16 heads, dn 128, dr 64, R 512, dv 128)."""
    return all(_pow2(n) for n in (nope, rope, rank, v_dim)) and rope >= 16 and rank >= 16 and heads >= 1


def mla_decode_reference(q: torch.Tensor, kva: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor,
                         positions: torch.Tensor, cache: torch.Tensor, norm_weight: torch.Tensor,
                         kv_b_weight: torch.Tensor, eps: float, scale: float, heads: int, nope: int, rope: int,
                         v_dim: int) -> torch.Tensor:
    """The operation in eager PyTorch (the formulas of `text.py`); arguments as `mla_decode`."""
    from kimi_agent.model_runtime.text import mla_absorbed

    b, s, width = cache.shape
    rank = width - rope
    cos2, sin2 = cos2.reshape(-1, rope), sin2.reshape(-1, rope)  # [B or 1, dr]
    c_kv, k_pe = kva.split([rank, rope], dim=-1)
    latent = torch.cat((rms_norm_reference(c_kv, norm_weight, eps), rotate_paired(k_pe, cos2, sin2)), -1)
    cache[torch.arange(b, device=cache.device), positions] = latent.to(cache.dtype)
    q_nope, q_pe = q.reshape(b, 1, heads, nope + rope).split([nope, rope], dim=-1)
    q_pe = rotate_paired(q_pe, cos2[:, None, None], sin2[:, None, None])
    keys = torch.arange(s, device=cache.device)
    mask = (keys[None, :] <= positions[:, None])[:, None, None]  # [B, 1, 1, S]
    out = mla_absorbed(q_nope, q_pe, cache, kv_b_weight, v_dim, scale, mask, False)  # [B, 1, H, dv]
    return out.reshape(b, heads * v_dim)


@torch.library.custom_op("kimi_agent::mla_decode", mutates_args=("cache",))
def mla_decode(q: torch.Tensor, kva: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor, positions: torch.Tensor,
               cache: torch.Tensor, norm_weight: torch.Tensor, kv_b_weight: torch.Tensor, eps: float, scale: float,
               heads: int, nope: int, rope: int, v_dim: int) -> torch.Tensor:
    """One token per row. q [B, H*(dn+dr)] (q_proj's output), kva [B, R+dr] (kv_a_proj_with_mqa's),
    cos2/sin2 [B or 1, dr] (`rope.paired_cos_sin`), positions [B] int64, cache [B, S, R+dr] (this
    layer's latents; the row's new latent is written at its position, and positions 0..position are
    attended), norm_weight [R] (kv_a_layernorm, `eps`), kv_b_weight [H*(dn+dv), R] -> [B, H*dv], the
    input of o_proj."""
    args = (q, kva, cos2, sin2, positions, cache, norm_weight, kv_b_weight)
    kw: dict[str, Any] = dict(eps=eps, scale=scale, heads=heads, nope=nope, rope=rope, v_dim=v_dim)
    if (triton_enabled(q.device.type, q.dtype)
            and mla_kernel_shapes_ok(heads, nope, rope, cache.shape[-1] - rope, v_dim)):
        from kimi_agent.model_runtime.kernels.mla_decode_triton import mla_decode as triton_mla_decode

        return run_kernels("MLA decode", lambda: triton_mla_decode(*args, **kw),
                           lambda: mla_decode_reference(*args, **kw))
    return mla_decode_reference(*args, **kw)


@mla_decode.register_fake
def _(q: torch.Tensor, kva: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor, positions: torch.Tensor,
      cache: torch.Tensor, norm_weight: torch.Tensor, kv_b_weight: torch.Tensor, eps: float, scale: float,
      heads: int, nope: int, rope: int, v_dim: int) -> torch.Tensor:
    return q.new_empty(q.shape[0], heads * v_dim)
