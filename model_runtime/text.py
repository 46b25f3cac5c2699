"""The DeepSeek-V3 language model of Kimi-VL (MLA attention, first layer dense, the rest MoE).

MLA with `q_lora_rank: null`: q = q_proj(x) per head [128 nope | 64 rope]; one shared latent
c_kv (512, RMSNorm eps 1e-6) + one shared rope key k_pe (64) per token. Two equivalent
formulations (KIMI_VL.md §4.3):
- `mla_naive`: expand the latent with kv_b_proj into per-head K [128 | 64] and V [128] (prefill);
- `mla_absorbed`: fold kv_b_proj's K half into the query and its V half into the output, and attend
  directly over the cached latent (decode; one matmul shared by all heads).
Softmax scale 192^-0.5, softmax in fp32. Names equal the checkpoint keys under `language_model.`.
"""

from __future__ import annotations

from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from kimi_agent.model_runtime import fused_mla, fused_norm  # noqa: F401  (register torch.ops.kimi_agent.*)
from kimi_agent.model_runtime.config import DeepseekV3TextConfig
from kimi_agent.model_runtime.kv_cache import FullKVCache, MLACache
from kimi_agent.model_runtime.moe import DeepseekV3MLP, DeepseekV3MoE
from kimi_agent.model_runtime.rope import PairedRopeTable, paired_cos_sin, rotate_paired, text_rope_cos_sin

Cache: TypeAlias = MLACache | FullKVCache


class DeepseekV3RMSNorm(nn.Module):
    """weight * to_input_dtype(x_fp32 * rsqrt(mean(x_fp32^2) + eps)), the reference's dtype order;
    one operation (`fused_norm.py`: one Triton kernel on CUDA in bf16/fp16)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.kimi_agent.rms_norm(x, self.weight, self.eps)

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h = x + residual, self(h)) in one operation."""
        return torch.ops.kimi_agent.add_rms_norm(x, residual, self.weight, self.eps)


def attention_mask(positions: torch.Tensor, kv_len: int, static: bool) -> tuple[torch.Tensor | None, bool]:
    """(bool mask [T, S] or None, is_causal) for queries at `positions` [T] over keys 0..kv_len-1;
    per-row positions [B, T] (sequences of different lengths decoding together) give [B, 1, T, S]."""
    if positions.dim() == 2:
        keys = torch.arange(kv_len, device=positions.device)
        return (keys[None, None, :] <= positions[:, :, None])[:, None], False
    t = positions.shape[0]
    if not static and kv_len == t:  # fresh sequence: plain causal
        return None, t > 1
    if not static and t == 1:  # one new token sees everything cached
        return None, False
    keys = torch.arange(kv_len, device=positions.device)
    return keys[None, :] <= positions[:, None], False


def mla_naive(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, kv_b_weight: torch.Tensor,
              v_dim: int, scale: float, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """Per-head MLA. q_nope [B,T,H,dn], q_pe [B,T,H,dr], latent [B,S,R+dr] -> [B,T,H,dv]."""
    b, s, _ = latent.shape
    h, dn, dr = q_nope.shape[2], q_nope.shape[3], q_pe.shape[3]
    c_kv, k_pe = latent.split([latent.shape[-1] - dr, dr], dim=-1)
    kv = F.linear(c_kv, kv_b_weight).view(b, s, h, dn + v_dim)  # [B, S, H, dn+dv]
    k_nope, v = kv.split([dn, v_dim], dim=-1)
    k = torch.cat((k_nope, k_pe[:, :, None, :].expand(b, s, h, dr)), dim=-1)  # [B, S, H, dn+dr]
    q = torch.cat((q_nope, q_pe), dim=-1)  # [B, T, H, dn+dr]
    return sdpa_heads(q, k, v, scale, mask, is_causal)


def sdpa_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None,
               is_causal: bool) -> torch.Tensor:
    """SDPA on [B, T|S, H, d] layouts -> [B, T, H, dv].

    MLA's value size (128) differs from its query/key size (192); fused SDPA kernels (flash,
    memory-efficient, the CPU flash kernel) need them equal, else SDPA falls back to its slow math
    path. So v is zero-padded to the key size and the padding columns are dropped from the output
    (they are exactly zero, so the result is unchanged)."""
    dv = v.shape[-1]
    if dv != q.shape[-1]:
        v = F.pad(v, (0, q.shape[-1] - dv))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=is_causal, scale=scale)
    return out.transpose(1, 2)[..., :dv]


def mla_absorbed(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, kv_b_weight: torch.Tensor,
                 v_dim: int, scale: float, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """MLA over the latent cache with kv_b_proj absorbed. Same shapes as `mla_naive`."""
    b, t, h, dn = q_nope.shape
    rank = latent.shape[-1] - q_pe.shape[-1]
    w = kv_b_weight.view(h, dn + v_dim, rank)  # [H, dn+dv, R]
    q_lat = torch.einsum("bthd,hdr->bhtr", q_nope, w[:, :dn])  # [B, H, T, R]
    q_full = torch.cat((q_lat, q_pe.transpose(1, 2)), dim=-1).flatten(1, 2)  # [B, H*T, R+dr]
    scores = torch.matmul(q_full, latent.transpose(1, 2)).float() * scale  # [B, H*T, S], heads share keys
    if is_causal:
        mask = torch.ones(t, t, dtype=torch.bool, device=latent.device).tril()
    if mask is not None:  # one kernel: keep where the mask allows, -inf elsewhere
        scores = torch.where(mask, scores.view(b, h, t, -1), float("-inf")).flatten(1, 2)
    probs = scores.softmax(-1).to(latent.dtype)
    o_lat = torch.matmul(probs, latent[..., :rank]).view(b, h, t, rank)  # [B, H, T, R]
    return torch.einsum("bhtr,hdr->bthd", o_lat, w[:, dn:])  # [B, T, H, dv]


class DeepseekV3Attention(nn.Module):
    """MLA attention; `absorb_max_tokens`: calls with at most this many new tokens use the absorbed
    formulation over the latent cache, longer ones the naive per-head one."""

    def __init__(self, cfg: DeepseekV3TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx, self.cfg = layer_idx, cfg
        self.num_heads = cfg.num_attention_heads
        self.absorb_max_tokens = 4
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = DeepseekV3RMSNorm(cfg.kv_lora_rank, eps=cfg.kv_layernorm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, self.num_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(self.num_heads * cfg.v_head_dim, cfg.hidden_size, bias=False)
        self.qkv_a: torch.Tensor | None = None  # [H*qk + R + dr, D] once `stack_projections` ran

    @torch.no_grad()
    def stack_projections(self) -> None:
        """Put q_proj's and kv_a_proj_with_mqa's weights into one [H*qk + R + dr, D] matrix, so both
        are one matmul; the two parameters become views of it (same names, no extra memory)."""
        n = self.q_proj.weight.shape[0]
        self.qkv_a = torch.cat((self.q_proj.weight, self.kv_a_proj_with_mqa.weight))
        self.q_proj.weight = nn.Parameter(self.qkv_a[:n], requires_grad=False)
        self.kv_a_proj_with_mqa.weight = nn.Parameter(self.qkv_a[n:], requires_grad=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., D] -> q_proj(x) [..., H*qk] and kv_a_proj_with_mqa(x) [..., R+dr] (views of one
        matmul's output once `stack_projections` ran)."""
        if self.qkv_a is None:
            return self.q_proj(x), self.kv_a_proj_with_mqa(x)
        both = F.linear(x, self.qkv_a)
        return both.split([self.q_proj.weight.shape[0], both.shape[-1] - self.q_proj.weight.shape[0]], dim=-1)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                kv_cache: Cache | None, mask: tuple[torch.Tensor | None, bool] | None = None) -> torch.Tensor:
        """x [B, T, D], cos/sin [T, dr] (or [B, T, dr]) from `paired_cos_sin`, positions [T] (or per
        row [B, T]) -> [B, T, D]. `mask`: `attention_mask`'s answer for this call when the caller
        made it once for every layer (a static cache), else it is made here."""
        cfg, t = self.cfg, x.shape[1]
        if t == 1 and isinstance(kv_cache, MLACache):  # a decode step: one fused operation
            return self.o_proj(self._decode_one(x, cos, sin, positions, kv_cache)[:, None])
        if cos.dim() == 2:
            cos, sin = cos[None], sin[None]  # [1, T, dr]
        q, kva = self.project(x)
        q_nope, q_pe = q.unflatten(-1, (self.num_heads, cfg.qk_head_dim)).split(
            [cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        q_pe = rotate_paired(q_pe, cos[:, :, None], sin[:, :, None])
        c_kv, k_pe = kva.split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        latent = torch.cat((self.kv_a_layernorm(c_kv), rotate_paired(k_pe, cos, sin)), -1)  # [B,T,576]
        if isinstance(kv_cache, FullKVCache):
            out = self._attend_full_cache(q_nope, q_pe, latent, positions, kv_cache)
        else:
            static = kv_cache is not None and kv_cache.static
            if kv_cache is not None:
                latent = kv_cache.store(self.layer_idx, positions, latent)  # [B, S, 576]
            attn_mask, causal = (mask if mask is not None
                                 else attention_mask(positions, latent.shape[1], static))
            attend = mla_absorbed if t <= self.absorb_max_tokens else mla_naive
            out = attend(q_nope, q_pe, latent, self.kv_b_proj.weight, cfg.v_head_dim, cfg.softmax_scale,
                         attn_mask, causal)
        return self.o_proj(out.flatten(2))

    def _decode_one(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                    cache: MLACache) -> torch.Tensor:
        """One new token per row, x [B, 1, D] -> [B, H*dv] (before o_proj) through
        `torch.ops.kimi_agent.mla_decode`, which also writes the row's latent into `cache`."""
        cfg, b = self.cfg, x.shape[0]
        pos = positions.reshape(-1)
        pos = pos.expand(b) if pos.shape[0] != b else pos  # [B]
        layer = cache.layer(self.layer_idx)[:, : cache.read_len(1)]  # [B, S, R+dr]
        q, kva = self.project(x[:, 0])  # [B, H*qk], [B, R+dr]
        return torch.ops.kimi_agent.mla_decode(
            q, kva, cos, sin, pos, layer,
            self.kv_a_layernorm.weight, self.kv_b_proj.weight, self.kv_a_layernorm.eps, cfg.softmax_scale,
            self.num_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim)

    def _attend_full_cache(self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor,
                           positions: torch.Tensor, cache: FullKVCache) -> torch.Tensor:
        """Naive baseline: expand K/V for the new tokens, cache them per head, attend. -> [B,T,H,dv]."""
        cfg, (b, t, h, _) = self.cfg, q_nope.shape
        c_kv, k_pe = latent.split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        kv = self.kv_b_proj(c_kv).view(b, t, h, -1)
        k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)
        k = torch.cat((k_nope, k_pe[:, :, None].expand(b, t, h, cfg.qk_rope_head_dim)), dim=-1)
        k_all, v_all = cache.store(self.layer_idx, positions, k, v)  # [B, S, H, *]
        mask, causal = attention_mask(positions, k_all.shape[1], cache.static)
        return sdpa_heads(torch.cat((q_nope, q_pe), -1), k_all, v_all, cfg.softmax_scale, mask, causal)


class DeepseekV3DecoderLayer(nn.Module):
    def __init__(self, cfg: DeepseekV3TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = DeepseekV3RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DeepseekV3Attention(cfg, layer_idx)
        self.post_attention_layernorm = DeepseekV3RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp: nn.Module = (DeepseekV3MoE(cfg) if cfg.is_moe_layer(layer_idx)
                               else DeepseekV3MLP(cfg.hidden_size, cfg.intermediate_size))

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                positions: torch.Tensor, kv_cache: Cache | None,
                mask: tuple[torch.Tensor | None, bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output is x + pending (added by the next norm: one kernel with it) ->
        (h, mlp_out) whose sum is this layer's output. pending None: x is the layer's input."""
        if pending is None:
            normed = self.input_layernorm(x)
        else:
            x, normed = self.input_layernorm.add_and_norm(x, pending)  # x = the previous layer's output
        attn = self.self_attn(normed, cos, sin, positions, kv_cache, mask)
        h, normed = self.post_attention_layernorm.add_and_norm(x, attn)  # h = x + attn
        return h, self.mlp(normed)


class DeepseekV3Model(nn.Module):
    def __init__(self, cfg: DeepseekV3TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DeepseekV3DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = DeepseekV3RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rope_table = PairedRopeTable(cfg.qk_rope_head_dim, cfg.rope_theta)

    def forward(self, inputs_embeds: torch.Tensor, positions: torch.Tensor,
                kv_cache: Cache | None) -> torch.Tensor:
        """inputs_embeds [B, T, D], positions [T] or per row [B, T] -> final hidden states [B, T, D]."""
        static = isinstance(kv_cache, MLACache) and kv_cache.static
        if static:  # positions below the cache's length: look them up (decode graphs)
            assert kv_cache is not None
            cos, sin = self.rope_table.lookup(positions.flatten(), kv_cache.max_len, inputs_embeds.dtype)
        else:
            cos, sin = paired_cos_sin(*text_rope_cos_sin(positions.flatten(), self.cfg.qk_rope_head_dim,
                                                         self.cfg.rope_theta, inputs_embeds.dtype))
        # cos, sin [T, dr] each, shared by every layer
        if positions.dim() == 2:
            cos, sin = cos.view(*positions.shape, -1), sin.view(*positions.shape, -1)
        mask = None
        if static and inputs_embeds.shape[1] > 1:
            # every layer reads the same max_len slots (one new token: `mla_decode` masks by itself)
            assert kv_cache is not None
            mask = attention_mask(positions, kv_cache.max_len, True)
        x, pending = inputs_embeds, None
        for layer in self.layers:
            x, pending = layer(x, pending, cos, sin, positions, kv_cache, mask)
        if pending is None:  # no layers
            return self.norm(x)
        return self.norm.add_and_norm(x, pending)[1]


class DeepseekV3ForCausalLM(nn.Module):
    """`model` + untied `lm_head`. The caller advances the cache after a forward."""

    def __init__(self, cfg: DeepseekV3TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DeepseekV3Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, inputs_embeds: torch.Tensor, positions: torch.Tensor | None = None,
                kv_cache: Cache | None = None, *, last_only: bool = False) -> torch.Tensor:
        """inputs_embeds [B, T, D] -> fp32 logits [B, T, V] (or [B, 1, V] with `last_only`).

        `positions` [T] default to the cache's next positions (0.. without a cache)."""
        if positions is None:
            start = kv_cache.pos if kv_cache is not None else 0
            positions = torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)
        hidden = self.model(inputs_embeds, positions, kv_cache)
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm_head(hidden).float()
