"""Triton kernels of the fused decode MoE (`model_runtime/fused_moe.py`): three launches per MoE layer
instead of about thirty kernels, each reading only the weights it needs.

1. `route_kernel`, one program per token: router scores over the E experts (bf16/fp16 weights and
   input widened to fp32, fp32 sums, as `F.linear(x.float(), gate.weight.float())`), sigmoid,
   selection by score + `e_score_correction_bias`, top-K by K argmax passes, renormalised and
   scaled weights. Writes K routed slots and, if the layer has shared experts, one shared slot
   (expert id E, weight 1) per token.
2. `gate_up_kernel`, one program per (slot, block of intermediate units): act = silu(x W_gate^T) *
   (x W_up^T) for the slot's expert, rounded to the activation dtype at the same points as the
   eager path (gate and up outputs, silu, product).
3. `down_combine_kernel`, one program per (token, block of hidden units): each slot's act W_down^T
   rounded to the activation dtype, the routed ones summed in fp32 with their weights, the shared
   slot added in the activation dtype, as `routed + shared_experts(x)` does.

Weights are the MoE's flat stacks (`DeepseekV3MoE.stack_experts`): `w13` holds E experts' [2I, D]
(gate rows then up rows) followed by the shared experts' [2Is, D]; `w2` holds E experts' [D, I]
followed by the shared [D, Is]. Shapes (D, I, Is, E, K) are compile-time constants, so one model
compiles each kernel once. Imported only where Triton is installed; tests run these kernels on the
CPU with `TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kimi_agent.model_runtime.kernels import Overrides, Settings, with_overrides


@triton.jit
def route_kernel(x_ptr, gate_ptr, bias_ptr, idx_ptr, wt_ptr, scale,  # type: ignore[no-untyped-def]
                 D: tl.constexpr, E: tl.constexpr, K: tl.constexpr, SLOTS: tl.constexpr,
                 HAS_SHARED: tl.constexpr, RENORM: tl.constexpr,
                 BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    n = tl.program_id(0)
    offs_e = tl.arange(0, BLOCK_E)
    emask = offs_e < E
    acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        x = tl.load(x_ptr + n * D + offs_d, mask=dmask, other=0.0).to(tl.float32)
        w = tl.load(gate_ptr + offs_e[:, None] * D + offs_d[None, :], mask=emask[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    scores = tl.sigmoid(acc)
    bias = tl.load(bias_ptr + offs_e, mask=emask, other=0.0).to(tl.float32)
    choice = tl.where(emask, scores + bias, float("-inf"))
    rank = tl.full((BLOCK_E,), -1, tl.int32)
    for j in tl.static_range(K):  # K passes of argmax: rank[e] = j for the j-th best choice
        best = tl.argmax(choice, axis=0)
        hit = offs_e == best
        rank = tl.where(hit, j, rank)
        choice = tl.where(hit, float("-inf"), choice)
    chosen = rank >= 0
    weights = scores
    if RENORM:
        weights = scores / (tl.sum(tl.where(chosen, scores, 0.0), axis=0) + 1e-20)
    weights = weights * scale
    tl.store(idx_ptr + n * SLOTS + rank, offs_e, mask=chosen)
    tl.store(wt_ptr + n * SLOTS + rank, weights, mask=chosen)
    if HAS_SHARED:
        tl.store(idx_ptr + n * SLOTS + K, E)
        tl.store(wt_ptr + n * SLOTS + K, 1.0)


@triton.jit
def gate_up_kernel(x_ptr, w13_ptr, idx_ptr, act_ptr,  # type: ignore[no-untyped-def]
                   D: tl.constexpr, INTER: tl.constexpr, INTER_S: tl.constexpr, E: tl.constexpr, SLOTS: tl.constexpr,
                   BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr):
    slot = tl.program_id(0)
    n = slot // SLOTS
    e = tl.load(idx_ptr + slot).to(tl.int64)
    shared = e == E
    inter = tl.where(shared, INTER_S, INTER)  # this slot's intermediate size
    rows = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    rmask = rows < inter  # blocks past a routed expert's I load and store nothing
    gate_rows = w13_ptr + e * (2 * INTER * D) + rows[:, None] * D  # the shared block starts right after expert E-1
    up_rows = gate_rows + inter * D
    acc_g = tl.zeros((BLOCK_I,), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_I,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        x = tl.load(x_ptr + n * D + offs_d, mask=dmask, other=0.0).to(tl.float32)
        m = rmask[:, None] & dmask[None, :]
        acc_g += tl.sum(tl.load(gate_rows + offs_d[None, :], mask=m, other=0.0).to(tl.float32) * x[None, :], axis=1)
        acc_u += tl.sum(tl.load(up_rows + offs_d[None, :], mask=m, other=0.0).to(tl.float32) * x[None, :], axis=1)
    dt = act_ptr.dtype.element_ty
    g = acc_g.to(dt).to(tl.float32)
    u = acc_u.to(dt).to(tl.float32)
    silu = (g * tl.sigmoid(g)).to(dt).to(tl.float32)
    tl.store(act_ptr + slot * INTER_S + rows, (silu * u).to(dt), mask=rmask)


@triton.jit
def _row_dots(a_ptr, w_ptr, rows, rmask,  # type: ignore[no-untyped-def]
              N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """fp32 dot products of the [BLOCK_R, N] row-major rows `rows` of w_ptr with the N values at a_ptr."""
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for c0 in range(0, N, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < N
        a = tl.load(a_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * N + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * a[None, :], axis=1)
    return acc


@triton.jit
def down_combine_kernel(act_ptr, w2_ptr, idx_ptr, wt_ptr, out_ptr,  # type: ignore[no-untyped-def]
                        D: tl.constexpr, INTER: tl.constexpr, INTER_S: tl.constexpr, E: tl.constexpr, K: tl.constexpr,
                        SLOTS: tl.constexpr, HAS_SHARED: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < D
    dt = out_ptr.dtype.element_ty
    routed = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for j in tl.static_range(K):
        slot = n * SLOTS + j
        e = tl.load(idx_ptr + slot).to(tl.int64)
        y = _row_dots(act_ptr + slot * INTER_S, w2_ptr + e * (D * INTER), rows, rmask, INTER, BLOCK_D, BLOCK_C)
        routed += y.to(dt).to(tl.float32) * tl.load(wt_ptr + slot)
    out = routed.to(dt)
    if HAS_SHARED:  # the shared experts' [D, Is] block follows expert E-1's [D, I]
        y = _row_dots(act_ptr + (n * SLOTS + K) * INTER_S, w2_ptr + E * D * INTER, rows, rmask, INTER_S, BLOCK_D, BLOCK_C)
        out = (out.to(tl.float32) + y.to(dt).to(tl.float32)).to(dt)
    tl.store(out_ptr + n * D + rows, out, mask=rmask)


def _pow2(n: int, cap: int) -> int:
    """Smallest power of two >= n, at most `cap`."""
    return min(triton.next_power_of_2(max(n, 1)), cap)




def launch_settings(*, d: int, experts: int, top_k: int, inter: int, shared_inter: int, renorm: bool) -> Settings:
    """How `moe_decode` launches each kernel for these sizes (the compile test builds exactly these)."""
    has_shared = shared_inter > 0
    slots, widest = top_k + int(has_shared), max(inter, shared_inter)
    return {
        "route_kernel": (dict(D=d, E=experts, K=top_k, SLOTS=slots, HAS_SHARED=has_shared,
                              RENORM=renorm and top_k > 1, BLOCK_E=_pow2(experts, 1024), BLOCK_D=_pow2(d, 256)), 8),
        "gate_up_kernel": (dict(D=d, INTER=inter, INTER_S=widest, E=experts, SLOTS=slots,
                                BLOCK_I=_pow2(widest, 16), BLOCK_D=_pow2(d, 256)), 4),
        # 8 rows per program: 256 programs for D = 2048 at one row; 1024-wide loads keep bytes in flight
        "down_combine_kernel": (dict(D=d, INTER=inter, INTER_S=widest, E=experts, K=top_k, SLOTS=slots,
                                     HAS_SHARED=has_shared, BLOCK_D=_pow2(d, 8), BLOCK_C=_pow2(widest, 1024)), 4),
    }


def moe_decode(x: torch.Tensor, gate_weight: torch.Tensor, bias: torch.Tensor, w13: torch.Tensor,
               w2: torch.Tensor, *, experts: int, top_k: int, inter: int, shared_inter: int, scale: float,
               renorm: bool, overrides: Overrides | None = None) -> torch.Tensor:
    """x [N, D] (bf16/fp16), gate_weight [E, D], bias [E], flat w13/w2 (module docstring) ->
    [N, D] in x's dtype. `shared_inter` 0: the layer has no shared experts. `overrides`: other
    launch settings than `launch_settings` (the sweep's)."""
    n, d = x.shape
    if 0 < shared_inter < inter:  # the shared block's layout takes the act buffer's row width (Is >= I)
        raise ValueError(f"shared experts' intermediate size {shared_inter} is below the routed experts' {inter}")
    x = x.contiguous()
    cfg = with_overrides(launch_settings(d=d, experts=experts, top_k=top_k, inter=inter, shared_inter=shared_inter,
                                         renorm=renorm), overrides)
    (route, route_warps), (gate_up, gate_up_warps), (down, down_warps) = cfg.values()
    slots, widest = gate_up["SLOTS"], gate_up["INTER_S"]
    idx = torch.empty(n * slots, dtype=torch.int32, device=x.device)
    wt = torch.empty(n * slots, dtype=torch.float32, device=x.device)
    act = torch.empty(n * slots, widest, dtype=x.dtype, device=x.device)
    out = torch.empty_like(x)
    route_kernel[(n,)](x, gate_weight, bias, idx, wt, scale, **route, num_warps=route_warps)
    gate_up_kernel[(n * slots, triton.cdiv(widest, gate_up["BLOCK_I"]))](x, w13, idx, act, **gate_up,
                                                                       num_warps=gate_up_warps)
    down_combine_kernel[(n, triton.cdiv(d, down["BLOCK_D"]))](act, w2, idx, wt, out, **down, num_warps=down_warps)
    return out
