"""Triton kernels of the fused MLA decode attention (`model_runtime/fused_mla.py`): one new token per
row attends over the latent cache in three launches instead of about twenty-five kernels.

1. `prep_kernel`, grid (B, H + 1, R / BLOCK_R). Programs h < H absorb kv_b_proj's key half into the
   query, q_lat[h] = q_nope[h] @ W_uk[h] ([dn] x [dn, R], BLOCK_R columns each), and rotate q_pe[h];
   they write q_full [B, H, R+dr]. Program H makes the row's latent, [RMSNorm(c_kv) | rotated k_pe],
   and writes it into the cache at the row's position.
2. `attend_kernel`, grid (B, splits): each program covers CHUNK cache positions of one row for all
   heads at once (flash-decoding): scores = q_full @ latent^T over the positions <= the row's
   position, an online softmax, and the unnormalised sum of probability x c_kv, kept with its
   running max and sum (fp32 partials [B, splits, H, R]). A split past the row's position does
   nothing (the grid follows the cache window's bucket, the work follows the position).
3. `combine_kernel`, grid (B, H, dv / BLOCK_V): merges a head's splits up to the row's position
   (BLOCK_SP at a time), rounds o_lat to the activation dtype, and folds in kv_b_proj's value half,
   out[h] = W_uv[h] @ o_lat ([dv, R] x [R], BLOCK_V outputs each) -> out [B, H*dv].

Rounding follows the eager `mla_absorbed` where it can (q_lat, the rotation's products and sum, the
latent, scores rounded before the scale, o_lat and out); the softmax differs in order only (online,
fp32). Shapes (H, dn, dr, R, dv) are compile-time constants; the attention's dots need dims >= 16 on
a GPU, as Kimi-VL's have (R 512, dr 64; heads are padded to 16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kimi_agent.model_runtime.kernels import Overrides, Settings, with_overrides

CHUNK = 64  # cache positions per attend program
BLOCK_S = 32  # positions per step inside one


@triton.jit
def _rotate(x_ptr, cos_ptr, sin_ptr, DR: tl.constexpr, dt: tl.constexpr):  # type: ignore[no-untyped-def]
    """rotate_paired: x * cos2 + swap_pairs(x) * sin2, each product and the sum rounded to dt."""
    offs = tl.arange(0, DR)
    x = tl.load(x_ptr + offs).to(tl.float32)
    swapped = tl.load(x_ptr + (offs ^ 1)).to(tl.float32)
    a = (x * tl.load(cos_ptr + offs).to(tl.float32)).to(dt).to(tl.float32)
    b = (swapped * tl.load(sin_ptr + offs).to(tl.float32)).to(dt).to(tl.float32)
    return (a + b).to(dt)


@triton.jit
def prep_kernel(q_ptr, kva_ptr, cos_ptr, sin_ptr, pos_ptr, cache_ptr,  # type: ignore[no-untyped-def]
                norm_w_ptr, kvb_ptr, qf_ptr, eps,
                q_stride, kva_stride, cos_stride, pos_stride, cache_row_stride,
                H: tl.constexpr, DN: tl.constexpr, DR: tl.constexpr, R: tl.constexpr, DV: tl.constexpr,
                BLOCK_DN: tl.constexpr, BLOCK_R: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    part = tl.program_id(2)  # which BLOCK_R columns of q_lat this program makes
    dt = qf_ptr.dtype.element_ty
    cos = cos_ptr + b * cos_stride
    sin = sin_ptr + b * cos_stride
    if h < H:
        q_row = q_ptr + b * q_stride + h * (DN + DR)
        w_head = kvb_ptr + h.to(tl.int64) * ((DN + DV) * R)  # W_uk[h]: rows 0..DN-1 of this head's block
        offs_r = part * BLOCK_R + tl.arange(0, BLOCK_R)
        acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for d0 in range(0, DN, BLOCK_DN):
            offs_d = d0 + tl.arange(0, BLOCK_DN)
            qn = tl.load(q_row + offs_d).to(tl.float32)
            w = tl.load(w_head + offs_d[:, None] * R + offs_r[None, :]).to(tl.float32)
            acc += tl.sum(w * qn[:, None], axis=0)
        out = qf_ptr + b * (H * (R + DR)) + h * (R + DR)
        tl.store(out + offs_r, acc.to(dt))
        if part == 0:
            tl.store(out + R + tl.arange(0, DR), _rotate(q_row + DN, cos, sin, DR, dt))
    elif part == 0:  # program H: the row's latent
        offs_r = tl.arange(0, R)
        kv = kva_ptr + b * kva_stride
        c = tl.load(kv + offs_r).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(c * c, axis=0) / R + eps)
        normed = (c * inv).to(dt).to(tl.float32) * tl.load(norm_w_ptr + offs_r).to(tl.float32)
        slot = cache_ptr + b * cache_row_stride + tl.load(pos_ptr + b * pos_stride) * (R + DR)
        tl.store(slot + offs_r, normed.to(dt))
        tl.store(slot + R + tl.arange(0, DR), _rotate(kv + R, cos, sin, DR, dt))


@triton.jit
def attend_kernel(qf_ptr, cache_ptr, pos_ptr, acc_ptr, ml_ptr, scale,  # type: ignore[no-untyped-def]
                  pos_stride, cache_row_stride, splits,
                  H: tl.constexpr, DR: tl.constexpr, R: tl.constexpr, BLOCK_H: tl.constexpr,
                  CHUNK_S: tl.constexpr, BLOCK_S: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    dt = qf_ptr.dtype.element_ty
    offs_h = tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    offs_r = tl.arange(0, R)
    offs_p = tl.arange(0, DR)
    q_rows = qf_ptr + b * (H * (R + DR)) + offs_h[:, None] * (R + DR)
    q_lat = tl.load(q_rows + offs_r[None, :], mask=hmask[:, None], other=0.0)  # [BLOCK_H, R]
    q_pe = tl.load(q_rows + R + offs_p[None, :], mask=hmask[:, None], other=0.0)  # [BLOCK_H, DR]
    last = tl.load(pos_ptr + b * pos_stride).to(tl.int32)  # attend to positions 0..last
    start = split * CHUNK_S
    end = tl.minimum(start + CHUNK_S, last + 1)
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    denom = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, R), dtype=tl.float32)
    rows = cache_ptr + b * cache_row_stride
    for s0 in range(start, end, BLOCK_S):  # no iteration when the split lies past the row's position
        offs_s = s0 + tl.arange(0, BLOCK_S)
        smask = offs_s < end
        keys = rows + offs_s[:, None] * (R + DR)
        k_lat = tl.load(keys + offs_r[None, :], mask=smask[:, None], other=0.0)  # [BLOCK_S, R]
        k_pe = tl.load(keys + R + offs_p[None, :], mask=smask[:, None], other=0.0)  # [BLOCK_S, DR]
        scores = tl.dot(q_lat, tl.trans(k_lat)) + tl.dot(q_pe, tl.trans(k_pe))  # [BLOCK_H, BLOCK_S]
        scores = scores.to(dt).to(tl.float32) * scale
        scores = tl.where(smask[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(dt), k_lat)
        m = m_new
    part = (b * splits + split) * H
    keep = hmask & (offs_h * 0 + start <= last)  # a split past the row's position writes nothing: combine stops first
    tl.store(acc_ptr + (part + offs_h[:, None]) * R + offs_r[None, :], acc, mask=keep[:, None])
    tl.store(ml_ptr + (part + offs_h) * 2, m, mask=keep)
    tl.store(ml_ptr + (part + offs_h) * 2 + 1, denom, mask=keep)


@triton.jit
def combine_kernel(acc_ptr, ml_ptr, pos_ptr, kvb_ptr, out_ptr,  # type: ignore[no-untyped-def]
                   pos_stride, splits,
                   H: tl.constexpr, DN: tl.constexpr, R: tl.constexpr, DV: tl.constexpr, CHUNK_S: tl.constexpr,
                   BLOCK_SP: tl.constexpr, BLOCK_V: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    part = tl.program_id(2)  # which BLOCK_V outputs of the head this program makes
    dt = out_ptr.dtype.element_ty
    offs_r = tl.arange(0, R)
    used = tl.minimum(tl.load(pos_ptr + b * pos_stride).to(tl.int32) // CHUNK_S + 1, splits)  # splits with keys
    heads = (b * splits) * H + h  # split s of this row and head: heads + s * H
    top = tl.full((BLOCK_SP,), float("-inf"), tl.float32)
    for s0 in range(0, used, BLOCK_SP):
        offs_s = s0 + tl.arange(0, BLOCK_SP)
        m = tl.load(ml_ptr + (heads + offs_s * H) * 2, mask=offs_s < used, other=float("-inf"))
        top = tl.maximum(top, m)
    peak = tl.max(top, axis=0)  # split 0 always holds position 0, so this is finite
    total = tl.zeros((BLOCK_SP,), dtype=tl.float32)
    o = tl.zeros((R,), dtype=tl.float32)
    for s0 in range(0, used, BLOCK_SP):
        offs_s = s0 + tl.arange(0, BLOCK_SP)
        smask = offs_s < used
        m = tl.load(ml_ptr + (heads + offs_s * H) * 2, mask=smask, other=float("-inf"))
        w = tl.where(smask, tl.exp(m - peak), 0.0)
        total += w * tl.load(ml_ptr + (heads + offs_s * H) * 2 + 1, mask=smask, other=0.0)
        tile = tl.load(acc_ptr + (heads + offs_s[:, None] * H) * R + offs_r[None, :], mask=smask[:, None], other=0.0)
        o += tl.sum(w[:, None] * tile, axis=0)
    o_lat = (o / tl.sum(total, axis=0)).to(dt).to(tl.float32)
    offs_v = part * BLOCK_V + tl.arange(0, BLOCK_V)
    w_head = kvb_ptr + h.to(tl.int64) * ((DN + DV) * R) + DN * R  # W_uv[h]: rows DN.. of this head's block
    w = tl.load(w_head + offs_v[:, None] * R + offs_r[None, :]).to(tl.float32)
    tl.store(out_ptr + b * (H * DV) + h * DV + offs_v, tl.sum(w * o_lat[None, :], axis=1).to(dt))




def launch_settings(*, heads: int, nope: int, rope: int, rank: int, v_dim: int) -> Settings:
    """How `mla_decode` launches each kernel for these sizes (the compile test builds exactly these)."""
    sizes = dict(H=heads, DR=rope, R=rank)
    return {
        "prep_kernel": (dict(sizes, DN=nope, DV=v_dim, BLOCK_DN=min(16, nope), BLOCK_R=min(128, rank)), 4),
        "attend_kernel": (dict(sizes, BLOCK_H=max(16, triton.next_power_of_2(heads)), CHUNK_S=CHUNK,
                               BLOCK_S=BLOCK_S), 8),
        "combine_kernel": (dict(H=heads, DN=nope, R=rank, DV=v_dim, CHUNK_S=CHUNK, BLOCK_SP=8,
                                BLOCK_V=min(32, v_dim)), 4),
    }


def mla_decode(q: torch.Tensor, kva: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor, positions: torch.Tensor,
               cache: torch.Tensor, norm_weight: torch.Tensor, kv_b_weight: torch.Tensor, *, eps: float, scale: float,
               heads: int, nope: int, rope: int, v_dim: int, overrides: Overrides | None = None) -> torch.Tensor:
    """One token per row: q [B, H*(dn+dr)], kva [B, R+dr] (rows may be strided), cos2/sin2 [B or 1, dr],
    positions [B] (stride 0 allowed), cache [B, S, R+dr] (written at each row's position) -> attention
    output [B, H*dv] before o_proj. kv_b_weight [H*(dn+dv), R], norm_weight [R] (kv_a_layernorm).
    `overrides`: other launch settings than `launch_settings` (the sweep's; CHUNK_S the same in
    attend_kernel and combine_kernel)."""
    b, s, width = cache.shape
    rank = width - rope
    assert cache.stride(2) == 1 and cache.stride(1) == width, "cache rows must be contiguous latents"
    q = q if q.stride(-1) == 1 else q.contiguous()  # rows may be strided (views of one matmul's output)
    kva = kva if kva.stride(-1) == 1 else kva.contiguous()
    cos2, sin2 = cos2.reshape(-1, rope), sin2.reshape(-1, rope)
    cos_stride = 0 if cos2.shape[0] == 1 else cos2.stride(0)
    pos_stride = positions.stride(0) if positions.shape[0] > 1 else 0
    cfg = with_overrides(launch_settings(heads=heads, nope=nope, rope=rope, rank=rank, v_dim=v_dim), overrides)
    (prep, prep_warps), (attend, attend_warps), (combine, combine_warps) = cfg.values()
    chunk = attend["CHUNK_S"]
    if combine["CHUNK_S"] != chunk:
        raise ValueError(f"attend_kernel and combine_kernel need the same CHUNK_S, not {chunk} and {combine['CHUNK_S']}")
    qf = torch.empty(b, heads, width, dtype=q.dtype, device=q.device)
    prep_kernel[(b, heads + 1, rank // prep["BLOCK_R"])](
        q, kva, cos2, sin2, positions, cache, norm_weight, kv_b_weight, qf, eps, q.stride(0), kva.stride(0),
        cos_stride, pos_stride, cache.stride(0), **prep, num_warps=prep_warps)
    splits = triton.cdiv(s, chunk)
    acc = torch.empty(b, splits, heads, rank, dtype=torch.float32, device=q.device)
    ml = torch.empty(b, splits, heads, 2, dtype=torch.float32, device=q.device)
    attend_kernel[(b, splits)](qf, cache, positions, acc, ml, scale, pos_stride, cache.stride(0), splits, **attend,
                               num_warps=attend_warps)
    out = torch.empty(b, heads * v_dim, dtype=q.dtype, device=q.device)
    combine_kernel[(b, heads, v_dim // combine["BLOCK_V"])](acc, ml, positions, kv_b_weight, out, pos_stride, splits,
                                                            **combine, num_warps=combine_warps)
    return out
