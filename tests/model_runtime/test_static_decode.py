"""Static-shape decode (the logic behind CUDA-graph and compiled decode), on the tiny checkpoint on CPU:
same tokens as eager decode, buckets, capacity checked before writing, sync-free MoE, no recompiles."""

from __future__ import annotations

import pytest
import torch

from kimi_agent.model_runtime import Engine, KimiVL
from kimi_agent.model_runtime.generate import decode_step, prefill, sample
from kimi_agent.model_runtime.kv_cache import MLACache
from kimi_agent.model_runtime.static_decode import (
    DECODE_MOE_ENV,
    CacheFullError,
    StaticDecoder,
    decode_moe_impl,
    moe_impl,
    row_bucket,
    slot_bucket,
)

PAD = 163605


def prompt(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 160000, (batch, length), generator=torch.Generator().manual_seed(seed))


def greedy(model: KimiVL, ids: torch.Tensor, steps: int, cache_len: int, mode: str | None,
           cache_rows: int | None = None, moe: str = "auto") -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy tokens [B][steps] and per-step logits, decoding eagerly (mode None) or statically.
    `cache_rows` > B: the cache holds extra sequences (prefilled with other text) that are not decoded."""
    b = ids.shape[0]
    rows = cache_rows or b
    cache = model.new_cache(rows, cache_len)
    assert isinstance(cache, MLACache)
    step = StaticDecoder(model, cache, mode=mode, moe=moe) if mode else (lambda t: decode_step(model, t, cache))
    full = torch.cat((ids, prompt(rows - b, ids.shape[1], seed=99))) if rows > b else ids
    out, all_logits = [], []
    with torch.inference_mode():
        logits = prefill(model, full, cache)[:b]
        for _ in range(steps):
            tok = sample(logits)
            out.append(tok.tolist())
            logits = step(tok)
            all_logits.append(logits)
    return [list(r) for r in zip(*out, strict=True)], all_logits


def test_buckets() -> None:
    assert [row_bucket(n, 64) for n in (1, 2, 3, 5, 9, 16, 17)] == [1, 2, 4, 8, 16, 16, 32]
    assert row_bucket(3, 3) == 3 and row_bucket(200, 300) == 200
    assert [slot_bucket(n, 100_000) for n in (1, 1024, 1025, 5000)] == [1024, 1024, 2048, 8192]
    assert slot_bucket(1025, 1500) == 1500


def test_static_decode_equals_eager_across_a_slot_bucket(tiny_model: KimiVL) -> None:
    ids = prompt(1, 1018)  # decoding crosses position 1024: two slot buckets, the second capped at 1300
    eager, eager_logits = greedy(tiny_model, ids, 12, 1300, None)
    static, static_logits = greedy(tiny_model, ids, 12, 1300, "static")
    assert static == eager
    for a, b in zip(eager_logits, static_logits, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_static_decode_batch_with_scratch_rows(tiny_model: KimiVL) -> None:
    ids = prompt(3, 20, seed=1)
    eager, _ = greedy(tiny_model, ids, 6, 64, None)
    static, _ = greedy(tiny_model, ids, 6, 64, "static", cache_rows=5)  # 3 rows round up to the 4-row bucket
    assert static == eager


@pytest.mark.parametrize("moe", ["auto", "fused"])  # fused: the custom op is one opaque node in the graph
def test_compiled_decode_equals_eager_without_recompiling(tiny_model: KimiVL, moe: str) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    ids = prompt(1, 30, seed=2)
    eager, _ = greedy(tiny_model, ids, 8, 128, None)
    compiled, _ = greedy(tiny_model, ids, 8, 128, "compile", moe=moe)
    assert compiled == eager
    # another prompt routes tokens to other experts: same bucket, so no recompilation is allowed
    other = prompt(1, 30, seed=3)
    with torch._dynamo.config.patch(error_on_recompile=True):
        again, _ = greedy(tiny_model, other, 8, 128, "compile", moe=moe)
    assert again == greedy(tiny_model, other, 8, 128, None)[0]


def test_capacity_is_checked_before_writing(tiny_model: KimiVL) -> None:
    cache = tiny_model.new_cache(1, 12)
    assert isinstance(cache, MLACache)
    with torch.inference_mode():
        prefill(tiny_model, prompt(1, 12), cache)
    before = cache.data.clone()
    dec = StaticDecoder(tiny_model, cache, mode="static")
    with pytest.raises(CacheFullError, match="position 12 is past its 12 slots"):
        dec(torch.tensor([5]))
    assert cache.pos == 12 and torch.equal(cache.data, before)
    with pytest.raises(ValueError, match="2 rows but the cache holds 1"):
        dec(torch.tensor([5, 6]))


def test_decoder_refuses_bad_setups(tiny_model: KimiVL) -> None:
    cache = tiny_model.new_cache(1, 16)
    assert isinstance(cache, MLACache)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        StaticDecoder(tiny_model, cache, mode="graph")
    with pytest.raises(ValueError, match="owning"):
        StaticDecoder(tiny_model, cache.window(1, 16), mode="static")
    with pytest.raises(ValueError, match="outside cache"):
        cache.window(2, 16)


def test_gathered_moe_equals_grouped(tiny_model: KimiVL) -> None:
    x = torch.randn(2, 5, tiny_model.config.text.hidden_size, generator=torch.Generator().manual_seed(4))
    moe = tiny_model.moe_layers()[0]
    with torch.inference_mode():
        with moe_impl(tiny_model, "grouped"):
            ref = moe(x)
        with moe_impl(tiny_model, "gathered"):
            got = moe(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert {m.impl for m in tiny_model.moe_layers()} == {"auto"}  # restored


def test_static_decode_with_the_fused_moe_equals_eager(tiny_model: KimiVL) -> None:
    ids = prompt(2, 30, seed=8)
    eager, eager_logits = greedy(tiny_model, ids, 6, 64, None)
    fused, fused_logits = greedy(tiny_model, ids, 6, 64, "static", moe="fused")
    assert fused == eager
    for a, b in zip(eager_logits, fused_logits, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_decode_moe_is_picked_per_row_bucket(tiny_model: KimiVL, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu, bf16 = torch.device("cuda"), torch.device("cpu"), torch.bfloat16
    monkeypatch.setattr("kimi_agent.model_runtime.kernels.triton_installed", lambda: True)
    assert [decode_moe_impl(cuda, bf16, rows) for rows in (1, 4, 8)] == ["fused", "fused", "grouped_mm"]
    assert decode_moe_impl(cuda, torch.float16, 2) == "fused"
    assert decode_moe_impl(cuda, torch.float32, 1) == "gathered"
    assert decode_moe_impl(cpu, bf16, 1) == "gathered"
    assert decode_moe_impl(cuda, bf16, 1, "grouped_mm") == "grouped_mm"
    monkeypatch.setattr("kimi_agent.model_runtime.kernels.triton_installed", lambda: False)
    assert decode_moe_impl(cuda, bf16, 1) == "grouped_mm"
    cache = tiny_model.new_cache(1, 16)
    assert isinstance(cache, MLACache)
    monkeypatch.setenv(DECODE_MOE_ENV, "fastest")
    with pytest.raises(ValueError, match=r"decode MoE 'fastest'; use one of auto, fused.*KIMI_AGENT_DECODE_MOE"):
        StaticDecoder(tiny_model, cache, mode="static")
    monkeypatch.setenv(DECODE_MOE_ENV, "fused")
    decoder = StaticDecoder(tiny_model, cache, mode="static")
    with torch.inference_mode():
        prefill(tiny_model, prompt(1, 5), cache)
        decoder(torch.tensor([7]))
    assert [b.moe for b in decoder.buckets.values()] == ["fused"]


def test_engine_static_decode_keeps_one_cache_and_refuses_overflow(tiny_model: KimiVL) -> None:
    ids = prompt(1, 40, seed=5)
    eager = Engine(tiny_model, decode="eager").generate_ids(ids, max_new_tokens=6)
    engine = Engine(tiny_model, decode="static", max_cache_tokens=64)
    first = engine.generate_ids(ids, max_new_tokens=6)
    assert first.token_ids == eager.token_ids
    storage = engine.cache.data.data_ptr() if engine.cache else None
    longer = torch.cat((ids[0], torch.tensor(first.token_ids), prompt(1, 10, seed=6)[0]))[None]
    second = engine.generate_ids(longer, max_new_tokens=4)
    assert engine.cache is not None and engine.cache.data.data_ptr() == storage  # never reallocated
    assert second.cached_prompt_tokens == 40 + len(first.token_ids) - 1
    assert second.token_ids == Engine(tiny_model, decode="eager").generate_ids(longer, max_new_tokens=4).token_ids
    pos = engine.cache.pos
    with pytest.raises(CacheFullError, match="exceeds the engine's max_cache_tokens=64"):
        engine.generate_ids(longer, max_new_tokens=30)
    assert engine.cache.pos == pos  # nothing was written
    with pytest.raises(ValueError, match="decode mode 'fast'"):
        Engine(tiny_model, decode="fast")  # type: ignore[arg-type]
