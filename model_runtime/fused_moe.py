"""The fused decode MoE: a whole DeepSeek-V3 MoE layer (router, routed and shared experts, combine) as
one operation, `torch.ops.kimi_agent.moe_decode`, for the few rows of a decode step.

Why: on a GPU a decode step of this model is bound by its number of small kernels (about thirty per
MoE layer on the grouped_mm path: casts, sort, scatter, cumsum, two grouped matmuls, the shared
experts' three matmuls and the elementwise glue) and by grouped_mm's cost at a handful of rows.
On CUDA the operation is three Triton kernels (`kernels/moe_decode_triton.py`) that read only the
selected experts' weights; elsewhere it runs `moe_decode_reference`, the eager formula with the same
rounding points. As a registered custom operation it is one opaque node for `torch.compile` and is
captured into CUDA graphs like any kernel launch.

Reading each selected expert once per (row, slot) is the right trade for a few rows; with many rows
the grouped matmul, which reads each active expert once for all its rows, wins, so the fused path is
meant for at most `FUSED_MOE_MAX_ROWS` rows (`static_decode` picks per row bucket).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kimi_agent.model_runtime.kernels import run_kernels, triton_enabled
from kimi_agent.model_runtime.moe import DeepseekV3MoE, gathered_experts, route

FUSED_MOE_MAX_ROWS = 4


def fused_moe_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused decode MoE runs as Triton kernels here (`kernels.triton_enabled`)."""
    return triton_enabled(device.type, dtype)


def moe_decode_reference(x: torch.Tensor, gate_weight: torch.Tensor, bias: torch.Tensor, w13: torch.Tensor,
                         w2: torch.Tensor, experts: int, top_k: int, inter: int, shared_inter: int, scale: float,
                         renorm: bool) -> torch.Tensor:
    """The operation in eager PyTorch, rounding where the kernels (and the grouped path) round:
    x [N, D] -> [N, D]. Arguments as `torch.ops.kimi_agent.moe_decode`."""
    d = x.shape[1]
    idx, weights = route(x, gate_weight, bias, top_k, renorm, scale)
    out = gathered_experts(x, idx, weights, w13[: experts * 2 * inter * d].view(experts, 2 * inter, d),
                           w2[: experts * d * inter].view(experts, d, inter), inter)
    if shared_inter:
        gate_up = w13[experts * 2 * inter * d :].view(2 * shared_inter, d)
        down = w2[experts * d * inter :].view(d, shared_inter)
        sg, su = F.linear(x, gate_up).split(shared_inter, dim=-1)
        out = out + F.linear(F.silu(sg) * su, down)
    return out


@torch.library.custom_op("kimi_agent::moe_decode", mutates_args=())
def moe_decode(x: torch.Tensor, gate_weight: torch.Tensor, bias: torch.Tensor, w13: torch.Tensor,
               w2: torch.Tensor, experts: int, top_k: int, inter: int, shared_inter: int, scale: float,
               renorm: bool) -> torch.Tensor:
    """One MoE layer for the rows x [N, D] -> [N, D] (x's dtype). gate_weight [E, D] and bias [E] are
    the router's; w13 is the flat stack of E experts' [2I, D] (gate rows, then up rows) followed by
    the shared experts' [2Is, D]; w2 of E experts' [D, I] followed by the shared [D, Is]
    (`DeepseekV3MoE.stack_experts`). `shared_inter` Is is 0 for a layer without shared experts."""
    args = (x, gate_weight, bias, w13, w2)
    kw: dict[str, Any] = dict(experts=experts, top_k=top_k, inter=inter, shared_inter=shared_inter, scale=scale, renorm=renorm)
    if fused_moe_available(x.device, x.dtype):
        from kimi_agent.model_runtime.kernels.moe_decode_triton import moe_decode as triton_moe_decode

        return run_kernels("MoE", lambda: triton_moe_decode(*args, **kw), lambda: moe_decode_reference(*args, **kw))
    return moe_decode_reference(*args, **kw)


@moe_decode.register_fake
def _(x: torch.Tensor, gate_weight: torch.Tensor, bias: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
      experts: int, top_k: int, inter: int, shared_inter: int, scale: float, renorm: bool) -> torch.Tensor:
    return torch.empty_like(x)


def moe_decode_args(moe: DeepseekV3MoE) -> tuple[Any, ...]:
    """The arguments after x of `moe_decode` (and `moe_decode_reference`) for the layer `moe`
    (`stack_experts` must have run)."""
    assert moe.w13_flat is not None and moe.w2_flat is not None, "call stack_experts() before the fused MoE"
    return (moe.gate.weight, moe.gate.e_score_correction_bias, moe.w13_flat, moe.w2_flat, moe.num_experts,
            moe.top_k, moe.inter, moe.shared_inter, moe.scale, moe.renorm)


def fused_moe_forward(moe: DeepseekV3MoE, x: torch.Tensor) -> torch.Tensor:
    """`moe`'s output for x [N, D] through the fused operation (`stack_experts` must have run)."""
    return torch.ops.kimi_agent.moe_decode(x, *moe_decode_args(moe))
