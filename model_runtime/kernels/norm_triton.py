"""Triton kernel of the fused RMSNorm (`model_runtime/fused_norm.py`): one launch per norm, with the
residual add before it optionally folded in, where the eager formula takes four to five kernels
(widen to fp32, rms_norm, narrow, weight multiply, and the residual add).

One program per row of D values. Rounding as the reference (`text.DeepseekV3RMSNorm`): the sum
x + residual rounded to the activation dtype; the norm in fp32; the normalised row rounded to the
activation dtype before the weight multiply, whose product is rounded once more.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl


@triton.jit
def rms_norm_kernel(x_ptr, res_ptr, w_ptr, sum_ptr, out_ptr, eps,  # type: ignore[no-untyped-def]
                    D: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < D
    dt = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * D + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = (x.to(tl.float32) + tl.load(res_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)).to(dt)
        tl.store(sum_ptr + row * D + offs, x, mask=mask)
    xf = x.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / D + eps)
    normed = (xf * inv).to(dt).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * D + offs, (w * normed).to(dt), mask=mask)


def launch_settings(*, d: int, residual: bool) -> dict[str, tuple[dict[str, Any], int]]:
    """How `rms_norm` launches its kernel for rows of `d` (the compile test builds exactly this)."""
    return {"rms_norm_kernel": (dict(D=d, HAS_RESIDUAL=residual, BLOCK=triton.next_power_of_2(d)), 4)}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] (plus `residual` of the same shape) -> (x + residual, or x itself; its RMSNorm)."""
    d = x.shape[-1]
    x = x.contiguous()
    out = torch.empty_like(x)
    total = torch.empty_like(x) if residual is not None else x
    consts, warps = launch_settings(d=d, residual=residual is not None)["rms_norm_kernel"]
    rms_norm_kernel[(x.numel() // d,)](x, residual.contiguous() if residual is not None else x, weight, total, out,
                                       eps, **consts, num_warps=warps)
    return total, out
