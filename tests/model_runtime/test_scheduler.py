"""Continuous batching (`BatchScheduler`) on the tiny checkpoint: batched == one at a time, sessions
reuse their slot's prefix, more requests than slots queue, a bad request fails alone, text streams in
whole characters with stop strings, and a cancelled request frees its slot."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from kimi_agent.model_runtime import Engine, KimiVL, KimiVLProcessor
from kimi_agent.model_runtime.scheduler import (
    BatchScheduler,
    GenerationCancelledError,
    GenerationHandle,
    GenerationRequest,
    SchedulerClosedError,
)
from kimi_agent.model_runtime.static_decode import CacheFullError

PAD = 163605


def text(seed: int, n: int) -> torch.Tensor:
    return torch.randint(0, 160000, (n,), generator=torch.Generator().manual_seed(seed))


def image_prompt(seed: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.cat((text(seed, 5), torch.tensor([163602]), torch.full((h * w // 4,), PAD), torch.tensor([163604]),
                     text(seed + 1, 7)))[None]
    pv = torch.randn(h * w, 3, 14, 14, generator=torch.Generator().manual_seed(seed))
    return ids, pv, torch.tensor([[h, w]])


def alone(model: KimiVL, req: GenerationRequest) -> list[int]:
    return Engine(model, decode="eager").generate_ids(req.input_ids, req.pixel_values, req.image_grid_hws,
                                                       max_new_tokens=req.max_new_tokens, temperature=req.temperature,
                                                       top_p=req.top_p, seed=req.seed).token_ids


@pytest.mark.parametrize("lookahead", [False, True])
@pytest.mark.parametrize("decode", ["eager", "static"])
def test_batched_equals_one_at_a_time_and_queues_beyond_the_slots(tiny_model: KimiVL, decode: str,
                                                                  lookahead: bool) -> None:
    """"static": the batched step in fixed-shape row and slot buckets (what CUDA graphs capture).
    lookahead: each step queued before the previous step's tokens are read (the CUDA default)."""
    reqs = [GenerationRequest(text(1, 9)[None], max_new_tokens=7),
            GenerationRequest(*image_prompt(2, 4, 4), max_new_tokens=5),
            GenerationRequest(text(3, 30)[None], max_new_tokens=9),
            GenerationRequest(*image_prompt(4, 2, 6), max_new_tokens=4),
            GenerationRequest(text(5, 3)[None], max_new_tokens=6)]
    sched = BatchScheduler(tiny_model, slots=3, max_len=128, stop_token_ids=(), decode=decode,  # type: ignore[arg-type]
                           lookahead=lookahead)
    handles = [sched.submit(r) for r in reqs]
    sched.run_until_idle()
    for r, h in zip(reqs, handles, strict=True):
        res = h.result(timeout=0)
        assert res.token_ids == alone(tiny_model, r) and res.finish_reason == "length"
    assert sched.decoded_rows / sched.decode_steps > 1.5  # sequences really decoded together
    if decode == "static":  # 3 rows run in the 4-row bucket capped at the 3 slots; 2 rows in the 2-row one
        assert sched.decoder is not None and {r for r, _ in sched.decoder.buckets} <= {1, 2, 3}



@pytest.mark.parametrize("lookahead", [False, True])
@pytest.mark.parametrize("decode", ["eager", "static"])
def test_greedy_and_sampling_requests_in_one_batch_each_get_their_own_tokens(tiny_model: KimiVL, decode: str,
                                                                              lookahead: bool) -> None:
    """The batch's tokens are read back at once (one argmax for the greedy rows, each sampling row
    from its own generator): each request still gets what it gets alone."""
    reqs = [GenerationRequest(text(40, 8)[None], max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3),
            GenerationRequest(text(41, 11)[None], max_new_tokens=8),
            GenerationRequest(text(42, 5)[None], max_new_tokens=8, temperature=0.7, seed=5)]
    sched = BatchScheduler(tiny_model, slots=3, max_len=64, stop_token_ids=(), decode=decode,  # type: ignore[arg-type]
                           lookahead=lookahead)
    handles = [sched.submit(r) for r in reqs]
    sched.run_until_idle()
    got = [h.result(timeout=0).token_ids for h in handles]
    assert got == [alone(tiny_model, r) for r in reqs]
    assert got[0] != alone(tiny_model, GenerationRequest(text(40, 8)[None], max_new_tokens=8))  # really sampled
    assert sched.decoded_rows / sched.decode_steps > 2

@pytest.mark.parametrize("lookahead", [False, True])
def test_a_session_keeps_its_slot_and_prefix(tiny_model: KimiVL, lookahead: bool) -> None:
    sched = BatchScheduler(tiny_model, slots=2, max_len=128, stop_token_ids=(), lookahead=lookahead)
    ids, pv, hws = image_prompt(7, 4, 4)
    first = sched.submit(GenerationRequest(ids, pv, hws, max_new_tokens=4, session="episode-a"))
    other = sched.submit(GenerationRequest(text(8, 12)[None], max_new_tokens=4, session="episode-b"))
    sched.run_until_idle()
    step2 = torch.cat((ids[0], torch.tensor(first.result(0).token_ids), text(9, 6)))[None]
    again = sched.submit(GenerationRequest(step2, pv, hws, max_new_tokens=5, session="episode-a"))
    sched.run_until_idle()
    res = again.result(0)
    # without lookahead the last token is never fed; with it, the step past it fed it too
    assert res.cached_prompt_tokens == ids.shape[1] + (4 if lookahead else 3)
    assert res.token_ids == alone(tiny_model, GenerationRequest(step2, pv, hws, max_new_tokens=5))
    assert other.result(0).token_ids == alone(tiny_model, GenerationRequest(text(8, 12)[None], max_new_tokens=4))


def test_a_request_that_does_not_fit_fails_alone(tiny_model: KimiVL) -> None:
    sched = BatchScheduler(tiny_model, slots=2, max_len=32, stop_token_ids=())
    bad = sched.submit(GenerationRequest(text(10, 30)[None], max_new_tokens=8))
    good = sched.submit(GenerationRequest(text(11, 10)[None], max_new_tokens=8))
    sched.run_until_idle()
    with pytest.raises(CacheFullError, match="exceeds this cache's 32 slots"):
        bad.result(0)
    assert good.result(0).token_ids == alone(tiny_model, GenerationRequest(text(11, 10)[None], max_new_tokens=8))


@pytest.mark.parametrize("lookahead", [False, True])
def test_background_thread_serves_concurrent_callers(tiny_model: KimiVL, lookahead: bool) -> None:
    sched = BatchScheduler(tiny_model, slots=4, max_len=64, stop_token_ids=(), lookahead=lookahead)
    sched.start()
    try:
        reqs = [GenerationRequest(text(20 + i, 4 + i)[None], max_new_tokens=5) for i in range(6)]
        results: dict[int, list[int]] = {}

        def call(i: int) -> None:
            results[i] = sched.generate(reqs[i], timeout=120).token_ids

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
    finally:
        sched.stop()
    assert results == {i: alone(tiny_model, r) for i, r in enumerate(reqs)}


@pytest.fixture(scope="module")
def processor(tiny_checkpoint: Path) -> KimiVLProcessor:
    return KimiVLProcessor.from_pretrained(tiny_checkpoint)


def _partial_character(processor: KimiVLProcessor, token: int) -> bool:
    """Whether the token's bytes are not whole UTF-8 characters."""
    try:
        processor.tokenizer.decode_bytes([token]).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@pytest.mark.parametrize("lookahead", [False, True])
def test_text_streams_whole_characters_and_stop_strings_end_it(tiny_model: KimiVL, processor: KimiVLProcessor,
                                                                lookahead: bool) -> None:
    sched = BatchScheduler(tiny_model, processor, slots=2, max_len=256, lookahead=lookahead)
    ids = processor(messages=[{"role": "user", "content": "写一首关于秋天的诗"}])["input_ids"]
    pieces: list[str] = []
    finished: list[GenerationHandle] = []
    # seed 1 samples a token that holds only part of a multi-byte UTF-8 character (checked below): the
    # decoder holds its bytes back, so the pieces are exactly the reply's text
    whole = sched.submit(GenerationRequest(ids, max_new_tokens=48, temperature=1.0, seed=1, on_text=pieces.append,
                                           on_finish=finished.append))
    sched.run_until_idle()
    res = whole.result(0)
    assert any(_partial_character(processor, t) for t in res.token_ids), "the case no longer splits a character"
    expected = processor.decode([t for t in res.token_ids if t not in sched.stop_token_ids], skip_special_tokens=True)
    assert "".join(pieces) == res.text == expected
    assert len(pieces) > 10 and finished == [whole]

    stop = expected[len(expected) // 2:len(expected) // 2 + 3]
    cut = sched.submit(GenerationRequest(ids, max_new_tokens=48, temperature=1.0, seed=1, stop=("never", stop)))
    sched.run_until_idle()
    got = cut.result(0)
    assert (got.text, got.finish_reason) == (expected[: expected.find(stop)], "stop")
    assert len(got.token_ids) < len(res.token_ids)
    assert got.cached_prompt_tokens == ids.shape[1] - 1  # the same prompt landed in the slot holding it
    with pytest.raises(ValueError, match="need a scheduler with a processor"):
        BatchScheduler(tiny_model, slots=1, max_len=64).submit(GenerationRequest(ids, stop=("x",)))


@pytest.mark.parametrize("lookahead", [False, True])
def test_cancel_frees_the_slot_and_keeps_the_prefix(tiny_model: KimiVL, processor: KimiVLProcessor,
                                                    lookahead: bool) -> None:
    sched = BatchScheduler(tiny_model, processor, slots=2, max_len=512, stop_token_ids=(), lookahead=lookahead)
    long_a, long_b = text(30, 20)[None], text(31, 25)[None]
    finished: list[GenerationHandle] = []
    a = sched.submit(GenerationRequest(long_a, max_new_tokens=400, on_finish=finished.append))
    b = sched.submit(GenerationRequest(long_b, max_new_tokens=400, on_finish=finished.append))
    queued = sched.submit(GenerationRequest(text(32, 5)[None], max_new_tokens=4, on_finish=finished.append))
    for _ in range(6):
        sched.step()
    assert sched.load() == (1, 0)  # both slots generating, one waiting
    a.cancel()
    queued.cancel()
    sched.step()  # a's slot is freed at once; the waiting request never starts
    assert sched.load() == (0, 1) and a.done.is_set() and queued.done.is_set()
    assert finished == [queued, a] and sched.cancelled == 2
    with pytest.raises(GenerationCancelledError):
        a.result(0)
    assert queued.tokens == [] and 0 < len(a.tokens) < 400
    again = sched.submit(GenerationRequest(torch.cat((long_a[0], torch.tensor(a.tokens[:2])))[None], max_new_tokens=3))
    while not again.done.is_set():
        sched.step()
    assert again.result(0).cached_prompt_tokens == long_a.shape[1] + 1  # the cancelled request's prefix
    assert again.result(0).token_ids == alone(tiny_model, again.request)
    b.cancel()
    sched.run_until_idle()
    assert b.finish_reason == "cancelled" and sched.cancelled == 3


@pytest.mark.parametrize("lookahead", [False, True])
def test_stop_fails_what_is_left(tiny_model: KimiVL, lookahead: bool) -> None:
    sched = BatchScheduler(tiny_model, slots=1, max_len=256, stop_token_ids=(), lookahead=lookahead)
    running = sched.submit(GenerationRequest(text(40, 8)[None], max_new_tokens=200))
    waiting = sched.submit(GenerationRequest(text(41, 8)[None], max_new_tokens=2))
    sched.step()
    sched.stop()
    for h in (running, waiting):
        with pytest.raises(SchedulerClosedError):
            h.result(0)
    assert not sched.busy()


@pytest.mark.parametrize("lookahead", [False, True])
def test_a_stop_id_ends_a_request_while_others_go_on_and_its_session_reuses_the_cache(tiny_model: KimiVL,
                                                                                     lookahead: bool) -> None:
    """A stop id picked from what the first request generates alone: that request ends on it (the
    stop id is its last token) while a longer one in the same batch goes on; its session's next
    request reuses the cache, which with lookahead also holds the stop id."""
    first = GenerationRequest(text(50, 10)[None], max_new_tokens=12, session="a")
    other = GenerationRequest(text(51, 14)[None], max_new_tokens=12, session="b")
    reference = alone(tiny_model, first)
    stop = reference[4]
    ended = reference[: reference.index(stop) + 1]
    sched = BatchScheduler(tiny_model, slots=2, max_len=128, stop_token_ids=(stop,), lookahead=lookahead)
    handles = [sched.submit(first), sched.submit(other)]
    sched.run_until_idle()
    got = handles[0].result(0)
    assert (got.token_ids, got.finish_reason) == (ended, "stop")
    assert handles[1].result(0).token_ids == until(alone(tiny_model, other), stop)
    follow = GenerationRequest(torch.cat((first.input_ids[0], torch.tensor(ended), text(52, 5)))[None],
                               max_new_tokens=4, session="a")
    again = sched.submit(follow)
    sched.run_until_idle()
    assert again.result(0).cached_prompt_tokens == 10 + len(ended) - (0 if lookahead else 1)
    assert again.result(0).token_ids == until(alone(tiny_model, follow), stop)


def until(tokens: list[int], stop: int) -> list[int]:
    """`tokens` up to and with the first `stop`, as a scheduler that stops on it returns them."""
    return tokens[: tokens.index(stop) + 1] if stop in tokens else tokens
