"""Model properties on the tiny checkpoint: caches equal full forwards, fast paths equal references."""

from __future__ import annotations

import math

import pytest
import torch

from kimi_agent.model_runtime import KimiVL
from kimi_agent.model_runtime.generate import decode_step, prefill
from kimi_agent.model_runtime.rope import rotate_pairs, text_rope_cos_sin, vision_rope_cos_sin
from kimi_agent.model_runtime.text import attention_mask, mla_absorbed, mla_naive

PAD = 163605
GRIDS = [(4, 6), (8, 8), (2, 2)]  # 6 + 16 + 1 merged tokens; (8, 8) = the table size (no resize)


def images(grids: list[tuple[int, int]], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(h * w for h, w in grids)
    return torch.randn(n, 3, 14, 14, generator=g), torch.tensor(grids, dtype=torch.long)


def prompt(grids: list[tuple[int, int]], seed: int = 0) -> torch.Tensor:
    """[1, T]: text, then for each image a run of placeholders between text tokens."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randint(0, 160000, (5,), generator=g)]
    for h, w in grids:
        parts += [torch.full((h * w // 4,), PAD), torch.randint(0, 160000, (3,), generator=g)]
    return torch.cat(parts)[None]


@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(tiny_model: KimiVL) -> None:
    ids = prompt(GRIDS)
    pv, hws = images(GRIDS)
    full = tiny_model(ids, pv, hws)  # [1, T, V]
    assert full.dtype == torch.float32 and full.shape == (1, ids.shape[1], 163840)
    n_prompt = ids.shape[1] - 3  # the last 3 text tokens are decoded one by one
    cache = tiny_model.new_cache(1, ids.shape[1])
    last = prefill(tiny_model, ids[:, :n_prompt], cache, pv, hws)
    steps = [last] + [decode_step(tiny_model, ids[:, t], cache) for t in range(n_prompt, ids.shape[1] - 1)]
    assert cache.pos == ids.shape[1] - 1
    torch.testing.assert_close(torch.stack(steps, 1), full[:, n_prompt - 1:-1], atol=2e-4, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["naive_full_kv", "static", "chunked"])
def test_other_cache_paths_equal_full_forward(tiny_model: KimiVL, kind: str) -> None:
    ids = prompt([])[:, :5].repeat(2, 3)  # [2, 15], batch of 2
    ids[1] = ids[1].flip(0)
    full = tiny_model(ids)
    cache = tiny_model.new_cache(2, 32, naive=kind == "naive_full_kv", static=kind == "static")
    first = 10 if kind != "chunked" else 6
    out = [prefill(tiny_model, ids[:, :first], cache)]
    if kind == "chunked":  # a second multi-token prefill after a cached prefix (naive MLA with a mask)
        out.append(prefill(tiny_model, ids[:, first:10], cache))
        first = 10
    out += [decode_step(tiny_model, ids[:, t], cache) for t in range(first, 15)]
    got = torch.stack(out[1:] if kind == "chunked" else out, 1)
    torch.testing.assert_close(got, full[:, 9:], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(("t", "start"), [(1, 9), (5, 0), (3, 7)])
def test_absorbed_mla_equals_naive_per_head(t: int, start: int) -> None:
    g = torch.Generator().manual_seed(t)
    b, h, dn, dr, dv, rank = 2, 3, 16, 8, 12, 20
    s = start + t
    q_nope, q_pe = torch.randn(b, t, h, dn, generator=g), torch.randn(b, t, h, dr, generator=g)
    latent, w = torch.randn(b, s, rank + dr, generator=g), torch.randn(h * (dn + dv), rank, generator=g)
    for static in (False, True):
        mask, causal = attention_mask(torch.arange(start, s), s, static)
        naive = mla_naive(q_nope, q_pe, latent, w, dv, 0.1, mask, causal)
        absorbed = mla_absorbed(q_nope, q_pe, latent, w, dv, 0.1, mask, causal)
        assert naive.shape == (b, t, h, dv)
        torch.testing.assert_close(absorbed, naive, atol=1e-4, rtol=1e-4)
    if t > 1:  # causality holds: the first query must not see later keys
        later = latent.clone()
        later[:, start + 1:] += 1.0
        mask, causal = attention_mask(torch.arange(start, s), s, False)
        same = mla_absorbed(q_nope, q_pe, later, w, dv, 0.1, mask, causal)
        torch.testing.assert_close(same[:, 0], absorbed[:, 0])


@torch.no_grad()
def test_batched_multi_image_vision_equals_one_at_a_time(tiny_model: KimiVL) -> None:
    pv, hws = images(GRIDS)
    packed = tiny_model.vision_tower(pv, hws)
    start = 0
    for i, (h, w) in enumerate(GRIDS):
        alone = tiny_model.vision_tower(pv[start:start + h * w], hws[i:i + 1])[0]
        assert packed[i].shape == (h * w // 4, 4, 32)
        torch.testing.assert_close(packed[i], alone, atol=1e-5, rtol=1e-5)
        start += h * w
    other = pv.clone()
    other[:24] = -other[:24]  # change image 0 only: images 1, 2 must not change (no cross-image leak)
    changed = tiny_model.vision_tower(other, hws)
    assert not torch.allclose(changed[0], packed[0])
    torch.testing.assert_close(changed[1], packed[1])


@torch.no_grad()
def test_patch_merger_order_and_splice(tiny_model: KimiVL) -> None:
    from kimi_agent.model_runtime.vision import patch_merger

    x = torch.arange(4 * 6, dtype=torch.float32)[:, None]  # [h*w, 1]: value = raster index
    merged = patch_merger(x, [(4, 6)], (2, 2))[0][:, :, 0]
    assert merged[0].tolist() == [0, 1, 6, 7] and merged[1].tolist() == [2, 3, 8, 9]
    assert merged[3].tolist() == [12, 13, 18, 19]
    ids = prompt(GRIDS)
    pv, hws = images(GRIDS)
    embeds = tiny_model.embed_inputs(ids, pv, hws)
    feats = tiny_model.image_features(pv, hws)
    torch.testing.assert_close(embeds[0][ids[0] == PAD], feats)
    with pytest.raises(ValueError, match=r"image placeholder tokens 22 != image features 23"):
        tiny_model.embed_inputs(ids[:, 1:][:, [i for i in range(ids.shape[1] - 1) if i != 5]], pv, hws)
    with pytest.raises(ValueError, match="!= image features 0"):
        tiny_model(ids)


def test_vision_rope_pair_order() -> None:
    cos, sin = vision_rope_cos_sin([(2, 3)], head_dim=8, theta=10000.0, device=torch.device("cpu"))
    token = 1 * 3 + 2  # row 1, column 2
    freqs = [10000 ** (-4 * j / 8) for j in range(2)]
    expected = [2 * freqs[0], 1 * freqs[0], 2 * freqs[1], 1 * freqs[1]]  # (column, row) per j
    torch.testing.assert_close(torch.atan2(sin[token], cos[token]), torch.tensor(expected))


def test_text_rope_interleaved_matches_reference_scores() -> None:
    """Interleaved rotation gives the same q.k as the reference de-interleave + rotate_half."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 64, generator=g), torch.randn(6, 64, generator=g)
    pos = torch.arange(6) * 37
    cos, sin = text_rope_cos_sin(pos, 64, 800000.0, torch.float32)
    ours = rotate_pairs(q, cos, sin) @ rotate_pairs(k, cos, sin).T

    def reference(x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x[:, 0::2], x[:, 1::2]), -1)
        c, s = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
        return x * c + torch.cat((-x[:, 32:], x[:, :32]), -1) * s

    torch.testing.assert_close(ours, reference(q) @ reference(k).T, atol=1e-4, rtol=1e-4)
    assert math.isclose(float(cos[1, 1]), math.cos(37 * 800000 ** (-2 / 64)), rel_tol=1e-5)


@torch.no_grad()
def test_moe_grouped_paths_equal_per_token_reference(tiny_model: KimiVL) -> None:
    moe = tiny_model.language_model.model.layers[1].mlp
    x = torch.randn(13, 32, generator=torch.Generator().manual_seed(1))
    idx, w = moe.route_tokens_to_experts(x)
    ref = moe.experts_per_token_reference(x, idx, w)
    torch.testing.assert_close(moe.experts_grouped(x, idx, w), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe.experts_grouped(x, idx, w, use_grouped_mm=True), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe.experts_loop(x, idx, w), ref, atol=1e-5, rtol=1e-5)
    assert len(set(idx.flatten().tolist())) > 3  # several experts really in use


@torch.no_grad()
def test_router_bias_selects_but_does_not_weight(tiny_model: KimiVL) -> None:
    moe = tiny_model.language_model.model.layers[2].mlp
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    saved = moe.gate.e_score_correction_bias.clone()
    try:
        moe.gate.e_score_correction_bias.zero_()
        moe.gate.e_score_correction_bias[7] = 100.0  # expert 7 always chosen ...
        idx, w = moe.route_tokens_to_experts(x)
    finally:
        moe.gate.e_score_correction_bias.copy_(saved)
    assert (idx == 7).any(-1).all()
    scores = torch.sigmoid(x @ moe.gate.weight.T)  # ... but weighted by its plain sigmoid score
    picked = scores.gather(1, idx)
    torch.testing.assert_close(w, picked / picked.sum(-1, keepdim=True) * 2.446)
    assert torch.allclose(w.sum(-1), torch.full((5,), 2.446))


@torch.no_grad()
def test_generate_greedy_matches_argmax_and_stops(tiny_model: KimiVL) -> None:
    ids = prompt([])[:, :5]
    out = tiny_model.generate(ids, max_new_tokens=4, temperature=0.0)
    assert out.shape == (1, 4)
    seq = ids
    for t in range(4):
        nxt = tiny_model(seq)[:, -1].argmax(-1)
        assert int(nxt) == int(out[0, t])
        seq = torch.cat((seq, nxt[:, None]), 1)
    first = int(out[0, 0])  # make the first generated token a stop id: generation ends there
    stopped = tiny_model.generate(ids, max_new_tokens=4, stop_token_ids=(first,))
    assert stopped.tolist() == [[first]]
    batch = tiny_model.generate(torch.cat((ids, ids.flip(1))), max_new_tokens=3)
    assert batch.shape == (2, 3) and batch[0].tolist() == out[0, :3].tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rotate_paired_is_bit_identical_to_rotate_pairs(dtype: torch.dtype) -> None:
    """The language model's 4-operation rotation gives exactly the reference's 7-operation result."""
    from kimi_agent.model_runtime.rope import paired_cos_sin, rotate_paired

    torch.manual_seed(0)
    pos = torch.arange(0, 4000, 37)
    cos, sin = text_rope_cos_sin(pos, 64, 800000.0, dtype)  # [T, 32]
    x = (torch.randn(2, pos.shape[0], 16, 64) * 3).to(dtype)  # [B, T, H, dr]
    cos2, sin2 = paired_cos_sin(cos, sin)
    assert torch.equal(rotate_paired(x, cos2[:, None], sin2[:, None]), rotate_pairs(x, cos[:, None], sin[:, None]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_table_lookup_equals_the_per_forward_tables(dtype: torch.dtype) -> None:
    from kimi_agent.model_runtime.rope import PairedRopeTable, paired_cos_sin

    table = PairedRopeTable(64, 800000.0)
    pos = torch.tensor([0, 1, 37, 4095, 1000, 4094])
    expected = paired_cos_sin(*text_rope_cos_sin(pos, 64, 800000.0, dtype))
    got = table.lookup(pos, 4096, dtype)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    first = table.tables[(pos.device, dtype)][0]
    far = torch.tensor([9000, 5])
    got = table.lookup(far, 9001, dtype)  # grows by doubling to 16384 positions
    assert all(torch.equal(a, b) for a, b in zip(got, paired_cos_sin(*text_rope_cos_sin(far, 64, 800000.0, dtype)),
                                                  strict=True))
    assert table.tables[(pos.device, dtype)][0].shape[0] == 16384
    assert table.outgrown[0][0] is first  # kept alive: a captured graph may still read it


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_keeps_the_reference_formula_and_dtype_order(dtype: torch.dtype) -> None:
    """weight * to_input_dtype(x_fp32 * rsqrt(mean(x_fp32^2) + eps)), as the reference computes it."""
    from kimi_agent.model_runtime.text import DeepseekV3RMSNorm

    torch.manual_seed(0)
    norm = DeepseekV3RMSNorm(512, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(512))
    x = (torch.randn(3, 7, 512) * 5).to(dtype)
    h = x.float()
    reference = norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
    torch.testing.assert_close(norm(x), reference, rtol=0, atol=1e-6 if dtype == torch.float32 else 0)
