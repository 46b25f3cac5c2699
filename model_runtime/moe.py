"""DeepSeek-V3 feed-forward blocks: the dense SwiGLU MLP and the sigmoid-routed MoE.

Routing (`route_tokens_to_experts`, fp32): sigmoid scores; `e_score_correction_bias` is added for
*selection* only; the top-k weights are the raw scores, renormalised and scaled by
`routed_scaling_factor`. Experts run grouped: (token, expert) pairs are sorted by expert, each
active expert runs once on its contiguous slice (or one `grouped_mm` over stacked weights on CUDA),
and results are combined in fp32 with one `index_add_`. There is no Python loop over tokens.
`experts_loop` (HF-style loop over all experts) and `experts_per_token_reference` exist for the
benchmark baseline and tests. impl "fused" runs the whole layer as one operation (`fused_moe.py`:
three Triton kernels on CUDA), for decode steps of a few rows.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kimi_agent.model_runtime.config import DeepseekV3TextConfig

MoEImpl = Literal["auto", "grouped", "grouped_mm", "gathered", "fused", "loop"]


def _grouped_mm_fn():  # type: ignore[no-untyped-def]
    """`F.grouped_mm` (public since torch 2.9/2.10), else the older private `torch._grouped_mm`, else None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available() -> bool:
    """Whether this torch has a grouped matmul (a CUDA kernel; bf16 operands)."""
    return _grouped_mm_fn() is not None


def sync_free_moe_impl(device: torch.device, dtype: torch.dtype) -> MoEImpl:
    """The MoE path that never synchronises with the host (required inside CUDA graphs and for one
    compiled graph per shape): stacked `grouped_mm` for bf16 on CUDA, else per-slot weight gathers."""
    if device.type == "cuda" and dtype == torch.bfloat16 and grouped_mm_available():
        return "grouped_mm"
    return "gathered"


def route(x: torch.Tensor, gate_weight: torch.Tensor, bias: torch.Tensor, top_k: int, renorm: bool,
          scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], router weight [E, D] (any float dtype; used in fp32) -> expert ids [N, k] (int64) and
    combine weights [N, k] (fp32): sigmoid scores, `bias` steers selection only."""
    scores = torch.sigmoid(F.linear(x.float(), gate_weight.float()))  # [N, E]
    idx = (scores + bias.float()).topk(top_k, dim=-1).indices  # [N, k]
    weights = scores.gather(1, idx)  # [N, k]
    if renorm and top_k > 1:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return idx, weights * scale


def gathered_experts(x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                     w2: torch.Tensor, inter: int) -> torch.Tensor:
    """Sum_k weights[n,k] * expert_{idx[n,k]}(x[n]) with stacked w13 [E, 2I, D], w2 [E, D, I]: each
    (token, slot)'s weights gathered, batched matmuls, fp32 combine. -> [N, D] (x dtype)."""
    n, k = idx.shape
    flat_idx = idx.flatten()  # [N*k]
    h = torch.bmm(w13[flat_idx], x.repeat_interleave(k, dim=0)[:, :, None])[..., 0]  # [N*k, 2I]
    gate, up = h.split(inter, dim=-1)
    ys = torch.bmm(w2[flat_idx], (F.silu(gate) * up)[:, :, None])[..., 0]  # [N*k, D]
    return (ys.float().view(n, k, -1) * weights[..., None]).sum(1).to(x.dtype)


class DeepseekV3MLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """Router parameters: `weight` [E, D] and `e_score_correction_bias` [E]."""

    def __init__(self, cfg: DeepseekV3TextConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.e_score_correction_bias = nn.Parameter(torch.empty(cfg.n_routed_experts))


class DeepseekV3MoE(nn.Module):
    """Routed experts (`experts.E.*`) plus always-on `shared_experts`."""

    def __init__(self, cfg: DeepseekV3TextConfig) -> None:
        super().__init__()
        self.top_k, self.scale, self.renorm = cfg.num_experts_per_tok, cfg.routed_scaling_factor, cfg.norm_topk_prob
        self.num_experts, self.inter = cfg.n_routed_experts, cfg.moe_intermediate_size
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList(DeepseekV3MLP(cfg.hidden_size, self.inter) for _ in range(self.num_experts))
        self.shared_experts = DeepseekV3MLP(cfg.hidden_size, self.inter * cfg.n_shared_experts)
        self.impl: MoEImpl = "auto"
        self.shared_inter = self.inter * cfg.n_shared_experts  # Is, 0 without shared experts
        self.w13_flat: torch.Tensor | None = None  # E x [2I, D] then the shared [2Is, D], once `stack_experts` ran
        self.w2_flat: torch.Tensor | None = None  # E x [D, I] then the shared [D, Is]
        self.w13: torch.Tensor | None = None  # [E, 2I, D], a view of w13_flat
        self.w2: torch.Tensor | None = None  # [E, D, I], a view of w2_flat
        self.gate_fp32: torch.Tensor | None = None  # [E, D] router weight in fp32, once `stack_experts` ran

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        flat = x.flatten(0, 1)  # [N, D]
        if self.impl == "fused":
            from kimi_agent.model_runtime.fused_moe import fused_moe_forward

            return fused_moe_forward(self, flat).view_as(x)
        idx, weights = self.route_tokens_to_experts(flat)
        impl = self.impl
        if impl == "auto":
            impl = ("grouped_mm" if self.w13 is not None and x.is_cuda and x.dtype == torch.bfloat16
                    and grouped_mm_available() else "grouped")
        if impl == "loop":
            routed = self.experts_loop(flat, idx, weights)
        elif impl == "gathered":
            routed = self.experts_gathered(flat, idx, weights)
        else:
            routed = self.experts_grouped(flat, idx, weights, use_grouped_mm=impl == "grouped_mm")
        return (routed + self.shared_experts(flat)).view_as(x)

    def route_tokens_to_experts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> expert ids [N, k] (int64) and combine weights [N, k] (fp32); see `route`."""
        gate_w = self.gate_fp32 if self.gate_fp32 is not None else self.gate.weight
        return route(x, gate_w, self.gate.e_score_correction_bias, self.top_k, self.renorm, self.scale)

    def experts_grouped(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, *,
                        use_grouped_mm: bool = False) -> torch.Tensor:
        """Sum_k w[n,k] * expert_{idx[n,k]}(x[n]) with tokens grouped per expert. -> [N, D] (x dtype)."""
        flat_idx = idx.flatten()  # [N*k]
        order = flat_idx.argsort(stable=True)  # slots sorted by expert
        token = order // self.top_k  # [N*k] token of each sorted slot
        xs = x[token]  # [N*k, D], contiguous per expert
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=x.device).scatter_add_(
            0, flat_idx, torch.ones_like(flat_idx))  # [E] tokens per expert (bincount would sync on CUDA)
        if use_grouped_mm:
            assert self.w13 is not None and self.w2 is not None, "call stack_experts() before grouped_mm"
            offs = counts.cumsum(0).to(torch.int32)  # [E], stays on device (no host sync)
            grouped_mm = _grouped_mm_fn()
            h = grouped_mm(xs, self.w13.transpose(1, 2), offs=offs)  # [N*k, 2I]
            gate, up = h.split(self.inter, dim=-1)
            ys = grouped_mm((F.silu(gate) * up).contiguous(), self.w2.transpose(1, 2), offs=offs)  # [N*k, D]
        else:
            sizes = counts.tolist()
            parts = [self.experts[e](chunk) for e, chunk in enumerate(xs.split(sizes)) if sizes[e]]
            ys = torch.cat(parts)  # [N*k, D]
        weighted = ys.float() * weights.flatten()[order, None]  # [N*k, D] fp32
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        return out.index_add_(0, token, weighted).to(x.dtype)

    def experts_gathered(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sync-free in any dtype (`gathered_experts`): fixed shapes for a given N, so one
        capture/compile serves every routing; it copies N*k experts' weights, so use it for decode
        (small N) only. -> [N, D] (x dtype)."""
        assert self.w13 is not None and self.w2 is not None, "call stack_experts() before gathered experts"
        return gathered_experts(x, idx, weights, self.w13, self.w2, self.inter)

    def experts_loop(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Naive baseline: a Python loop over every expert, each masking its tokens. -> [N, D]."""
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in range(self.num_experts):
            token, slot = (idx == e).nonzero(as_tuple=True)
            if token.numel():
                y = self.experts[e](x[token]).float() * weights[token, slot, None]
                out.index_add_(0, token, y)
        return out.to(x.dtype)

    def experts_per_token_reference(self, x: torch.Tensor, idx: torch.Tensor,
                                    weights: torch.Tensor) -> torch.Tensor:
        """Test reference: one token and one selected expert at a time. -> [N, D]."""
        rows = []
        for n in range(x.shape[0]):
            acc = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
            for k in range(idx.shape[1]):
                acc += weights[n, k] * self.experts[int(idx[n, k])](x[n : n + 1])[0].float()
            rows.append(acc.to(x.dtype))
        return torch.stack(rows)

    @torch.no_grad()
    def stack_experts(self) -> None:
        """Move expert weights into two flat buffers per layer: `w13_flat` = every expert's [gate; up]
        [2I, D] then the shared experts' [2Is, D], `w2_flat` = every expert's down [D, I] then the
        shared [D, Is]. `w13` [E, 2I, D] and `w2` [E, D, I] view the routed part; every expert and
        shared-expert parameter becomes a view of them (same names, no extra memory)."""
        e, i, s = self.num_experts, self.inter, self.shared_inter
        ref = self.gate.weight
        d = ref.shape[1]
        self.w13_flat = torch.empty(e * 2 * i * d + 2 * s * d, dtype=self.shared_experts.down_proj.weight.dtype,
                                    device=ref.device)
        self.w2_flat = torch.empty(e * d * i + d * s, dtype=self.w13_flat.dtype, device=ref.device)
        self.w13 = self.w13_flat[: e * 2 * i * d].view(e, 2 * i, d)
        self.w2 = self.w2_flat[: e * d * i].view(e, d, i)
        for k, m in enumerate(self.experts):
            assert isinstance(m, DeepseekV3MLP)
            self.w13[k, :i].copy_(m.gate_proj.weight)
            self.w13[k, i:].copy_(m.up_proj.weight)
            self.w2[k].copy_(m.down_proj.weight)
            m.gate_proj.weight = nn.Parameter(self.w13[k, :i], requires_grad=False)
            m.up_proj.weight = nn.Parameter(self.w13[k, i:], requires_grad=False)
            m.down_proj.weight = nn.Parameter(self.w2[k], requires_grad=False)
        shared_gate_up = self.w13_flat[e * 2 * i * d :].view(2 * s, d)
        shared_down = self.w2_flat[e * d * i :].view(d, s)
        sh = self.shared_experts
        shared_gate_up[:s].copy_(sh.gate_proj.weight)
        shared_gate_up[s:].copy_(sh.up_proj.weight)
        shared_down.copy_(sh.down_proj.weight)
        sh.gate_proj.weight = nn.Parameter(shared_gate_up[:s], requires_grad=False)
        sh.up_proj.weight = nn.Parameter(shared_gate_up[s:], requires_grad=False)
        sh.down_proj.weight = nn.Parameter(shared_down, requires_grad=False)
        self.gate_fp32 = self.gate.weight.float()
