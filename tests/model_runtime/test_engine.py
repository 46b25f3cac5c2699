"""Engine prefix reuse, sampling, and the native backend on the tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kimi_agent.model_runtime import Engine, KimiVL
from kimi_agent.model_runtime.generate import sample

PAD = 163605


def turn(seed: int, n: int = 6) -> torch.Tensor:
    return torch.randint(0, 160000, (n,), generator=torch.Generator().manual_seed(seed))


def with_image(h: int, w: int) -> torch.Tensor:
    return torch.cat((torch.tensor([163602]), torch.full((h * w // 4,), PAD), torch.tensor([163604])))


@pytest.fixture
def vision_calls(tiny_model: KimiVL) -> list[int]:
    """Number of patches each vision-tower call received."""
    calls: list[int] = []
    handle = tiny_model.vision_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    yield calls
    handle.remove()


def test_second_call_prefills_only_the_suffix_and_matches_a_fresh_call(tiny_model: KimiVL,
                                                                       vision_calls: list[int]) -> None:
    g = torch.Generator().manual_seed(0)
    pv = torch.randn(16 + 4, 3, 14, 14, generator=g)
    hws = torch.tensor([[4, 4], [2, 2]])
    step1 = torch.cat((turn(1), with_image(4, 4), turn(2)))[None]
    engine = Engine(tiny_model, min_cache_tokens=16)  # small, so the second call must grow the cache
    first = engine.generate_ids(step1, pv[:16], hws[:1], max_new_tokens=3)
    assert first.cached_prompt_tokens == 0 and vision_calls == [16]
    # step 2 = step 1 + the reply + a new observation with a second image
    step2 = torch.cat((step1[0], torch.tensor(first.token_ids), turn(3), with_image(2, 2), turn(4)))[None]
    second = engine.generate_ids(step2, pv, hws, max_new_tokens=5)
    reused = step1.shape[1] + len(first.token_ids) - 1  # the last sampled token was never fed
    assert second.cached_prompt_tokens == reused and engine.last_prefill_tokens == step2.shape[1] - reused
    assert vision_calls == [16, 4]  # the first image was not encoded again
    fresh = Engine(tiny_model).generate_ids(step2, pv, hws, max_new_tokens=5)
    assert fresh.cached_prompt_tokens == 0 and fresh.token_ids == second.token_ids
    again = engine.generate_ids(step2, pv, hws, max_new_tokens=5)  # identical prompt: all but 1 token reused
    assert again.cached_prompt_tokens == step2.shape[1] - 1 and again.token_ids == second.token_ids


def test_same_ids_with_a_different_image_reencodes_it(tiny_model: KimiVL, vision_calls: list[int]) -> None:
    g = torch.Generator().manual_seed(1)
    shot1, shot2 = torch.randn(16, 3, 14, 14, generator=g), torch.randn(16, 3, 14, 14, generator=g)
    hws = torch.tensor([[4, 4]])
    ids = torch.cat((turn(5), with_image(4, 4), turn(6)))[None]  # same ids for both screenshots
    engine = Engine(tiny_model)
    engine.generate_ids(ids, shot1, hws, max_new_tokens=2)
    second = engine.generate_ids(ids, shot2, hws, max_new_tokens=3)
    assert second.cached_prompt_tokens == 7  # cut back to the image's first placeholder
    assert vision_calls == [16, 16]
    assert second.token_ids == Engine(tiny_model).generate_ids(ids, shot2, hws, max_new_tokens=3).token_ids
    with pytest.raises(ValueError, match="image placeholder tokens 4 != image features 8"):
        engine.generate_ids(ids, torch.cat((shot1, shot2)), torch.tensor([[4, 4], [4, 4]]))



@pytest.mark.parametrize("decode", ["eager", "static"])
def test_lookahead_gives_the_same_tokens_and_a_cache_that_the_next_call_reuses(tiny_model: KimiVL,
                                                                            decode: str) -> None:
    """Lookahead (each step queued before the previous token is read, as on CUDA) forced on the CPU."""
    g = torch.Generator().manual_seed(2)
    pv, hws = torch.randn(16, 3, 14, 14, generator=g), torch.tensor([[4, 4]])
    step1 = torch.cat((turn(7), with_image(4, 4), turn(8)))[None]
    free = Engine(tiny_model, decode=decode, max_cache_tokens=256, lookahead=False)  # type: ignore[arg-type]
    free.stop_token_ids = ()
    ref = free.generate_ids(step1, pv, hws, max_new_tokens=10).token_ids
    j = next(i for i in range(2, 10) if ref[i] not in ref[:i])
    engines = {ahead: Engine(tiny_model, decode=decode, max_cache_tokens=256, lookahead=ahead)  # type: ignore[arg-type]
               for ahead in (False, True)}
    for engine in engines.values():
        engine.stop_token_ids = (ref[j],)  # the reply ends on a stop id mid-way
    first = {a: e.generate_ids(step1, pv, hws, max_new_tokens=10) for a, e in engines.items()}
    assert first[True].token_ids == first[False].token_ids == ref[:j + 1]
    prompt = step1.shape[1]
    assert engines[False].cache.pos == prompt + j  # the stop id was not fed
    assert engines[True].cache.pos == prompt + j + 1  # one step past it: the stop id is in the cache
    step2 = torch.cat((step1[0], torch.tensor(ref[:j + 1]), turn(9)))[None]  # the reply, then a new turn
    second = {a: e.generate_ids(step2, pv, hws, max_new_tokens=6, temperature=0.9, seed=4)
              for a, e in engines.items()}
    assert second[True].token_ids == second[False].token_ids  # sampled: the same draws in the same order
    assert second[True].cached_prompt_tokens == second[False].cached_prompt_tokens + 1 == prompt + j + 1
    assert second[True].token_ids == Engine(tiny_model).generate_ids(step2, pv, hws, max_new_tokens=6,
                                                                     temperature=0.9, seed=4).token_ids
    assert len(second[True].token_ids) == 6  # ended by max_new_tokens: no step past the last token
    assert engines[True].cache.pos == engines[False].cache.pos == step2.shape[1] + 5

def test_sample_temperature_top_p_and_seed() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]])
    assert sample(logits).tolist() == [1]
    draws = {int(sample(logits, torch.Generator().manual_seed(s), 1.0, 0.5)) for s in range(30)}
    assert draws == {1}  # top-p 0.5 keeps only the most likely token
    wide = [int(sample(logits, torch.Generator().manual_seed(s), 1.0, 1.0)) for s in range(40)]
    assert {1, 2} <= set(wide)
    again = [int(sample(logits, torch.Generator().manual_seed(s), 1.0, 1.0)) for s in range(40)]
    assert again == wide


def test_sample_with_a_vanishing_temperature_or_top_p_is_the_most_likely_token() -> None:
    """A client's temperature of 1e-38 (every other logit / t overflows) or 1e-46 (0 in float32), or
    top_p of 1e-46 (0 in float32), is a valid request: they pick the top token instead of failing
    multinomial on NaN or zeros (which failed every request decoding in the same batch)."""
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0], [7.0, -1.0, 6.5, 0.0]])
    g = torch.Generator().manual_seed(0)
    assert sample(logits, g, 1e-38, 1.0).tolist() == [1, 0]
    assert sample(logits, g, 1.0, 1e-46).tolist() == [1, 0]
    assert sample(logits, g, 1e-38, 1e-46).tolist() == [1, 0]
    assert sample(logits, g, 1e-46, 1.0).tolist() == [1, 0]  # 0 in float32: greedy, not 0/0
    assert sample(logits, g, 5e-324, 0.5).tolist() == [1, 0]


def test_native_backend_streams_and_reuses_prefix(tiny_checkpoint: Path) -> None:
    from PIL import Image

    from kimi_agent.model_runtime.backends import Backend, Sampling, make_backend

    backend = make_backend("native", tiny_checkpoint, device="cpu", dtype="float32")
    assert isinstance(backend, Backend)
    image = Image.new("RGB", (56, 56), (200, 30, 30))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Click OK."}]}]
    pieces: list[str] = []
    reply = backend.generate(messages, [image], Sampling(max_new_tokens=4), on_text=pieces.append)
    assert reply.completion_tokens is not None and 1 <= reply.completion_tokens <= 4
    assert "".join(pieces) == reply.text and reply.cached_prompt_tokens == 0
    follow = [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "Next."}]
    second = backend.generate(follow, [image], Sampling(max_new_tokens=2))
    assert second.cached_prompt_tokens is not None and second.cached_prompt_tokens >= reply.prompt_tokens - 1
