"""The language model's RMSNorm as one operation, with the residual add before it optionally folded
in: `torch.ops.kimi_agent.rms_norm` and `torch.ops.kimi_agent.add_rms_norm`.

On CUDA in bf16/fp16 each is one Triton kernel (`kernels/norm_triton.py`) instead of four or five;
elsewhere they run `rms_norm_reference`, the reference's formula and dtype order. As registered
custom operations they are single nodes for `torch.compile` and are captured into CUDA graphs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kimi_agent.model_runtime.kernels import run_kernels, triton_enabled


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * to_input_dtype(x_fp32 * rsqrt(mean(x_fp32^2) + eps)), the reference's dtype order."""
    # F.rms_norm is x * rsqrt(mean(x^2) + eps), one fused kernel on CUDA
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


@torch.library.custom_op("kimi_agent::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D], weight [D] -> RMSNorm(x) [..., D] in x's dtype."""
    if triton_enabled(x.device.type, x.dtype):
        from kimi_agent.model_runtime.kernels.norm_triton import rms_norm as triton_rms_norm

        return run_kernels("RMSNorm", lambda: triton_rms_norm(x, weight, eps)[1],
                           lambda: rms_norm_reference(x, weight, eps))
    return rms_norm_reference(x, weight, eps)


@rms_norm.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("kimi_agent::add_rms_norm", mutates_args=())
def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [..., D] -> (h = x + residual, RMSNorm(h)), both in x's dtype."""
    if triton_enabled(x.device.type, x.dtype):
        from kimi_agent.model_runtime.kernels.norm_triton import rms_norm as triton_rms_norm

        return run_kernels("RMSNorm", lambda: triton_rms_norm(x, weight, eps, residual),
                           lambda: _add_rms_norm_reference(x, residual, weight, eps))
    return _add_rms_norm_reference(x, residual, weight, eps)


def _add_rms_norm_reference(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual
    return h, rms_norm_reference(h, weight, eps)


@add_rms_norm.register_fake
def _(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(x)
