"""`NativeBackend(slots=N)`: one model answering several threads at once (the task runner's
workers) through the batching scheduler gives each the same reply as a one-slot backend would,
streams its text, and is marked safe for concurrent calls. Tiny random checkpoint on CPU."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from kimi_agent.model_runtime.backends.base import Sampling
from kimi_agent.model_runtime.backends.native import NativeBackend
from kimi_agent.model_runtime.kimi_vl import KimiVL
from kimi_agent.model_runtime.processor import KimiVLProcessor


@pytest.fixture(scope="module")
def processor(tiny_checkpoint: Path) -> KimiVLProcessor:
    return KimiVLProcessor.from_pretrained(tiny_checkpoint)


def _conversations() -> list[tuple[list[dict], list[Image.Image]]]:
    out = []
    for i, colour in enumerate(("red", "navy", "olive")):
        messages = [{"role": "system", "content": "You are a GUI agent."},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"step {i}: click it"}]}]
        out.append((messages, [Image.new("RGB", (56 + 28 * i, 56), colour)]))
    return out


def test_concurrent_calls_batch_and_match_one_slot(tiny_model: KimiVL, processor: KimiVLProcessor) -> None:
    sampling = Sampling(max_new_tokens=12)
    single = NativeBackend.from_loaded(tiny_model, processor)
    expected = [single.generate(m, ims, sampling).text for m, ims in _conversations()]
    assert not getattr(single, "concurrent", False)
    batched = NativeBackend.from_loaded(tiny_model, processor, slots=3, max_len=512, decode="eager")
    try:
        assert batched.concurrent
        got: dict[int, str] = {}
        streamed: dict[int, list[str]] = {i: [] for i in range(3)}
        start = threading.Barrier(3)

        def call(i: int, messages: list[dict], images: list[Image.Image]) -> None:
            start.wait(10)
            got[i] = batched.generate(messages, images, sampling, on_text=streamed[i].append).text

        threads = [threading.Thread(target=call, args=(i, m, ims)) for i, (m, ims) in enumerate(_conversations())]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [got[i] for i in range(3)] == expected
        assert ["".join(streamed[i]) for i in range(3)] == expected
        assert batched.scheduler is not None and batched.scheduler.decoded_rows > batched.scheduler.decode_steps
    finally:
        batched.close()
