"""`NativeBackend`: Kimi-VL in this process on our own runtime (the default backend).

Loads `KimiVL` and `KimiVLProcessor` once from a local snapshot or hub id, and answers through an
`Engine`, so the system prompt and unchanged history of an agent's previous step are not prefilled
again (`Reply.cached_prompt_tokens`). With `slots > 1` it answers through a continuous-batching
`BatchScheduler` instead: `generate` may then be called from several threads at once (the task
runner's workers), their requests decode together, and each conversation keeps its prefix in the
slot that holds it. torch is imported only when this backend is constructed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import BackendError
from kimi_agent.model_runtime.backends.base import Message, Reply, Sampling

if TYPE_CHECKING:
    from PIL import Image


GENERATE_TIMEOUT_S = 3600.0  # one reply; bounds a wedged batch loop


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class NativeBackend:
    """The in-process runtime: `NativeBackend(model_dir_or_hub_id, device=..., dtype=..., slots=1)`.

    `slots`: conversations served at once (1: one `Engine`, calls must not overlap; more: a
    `BatchScheduler` with that many cache slots of `max_len` tokens, thread-safe `generate`).
    """

    name = "native"

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "bfloat16",
                 in_token_limit: int | None = None, slots: int = 1, max_len: int = 16384) -> None:
        import torch

        from kimi_agent.model_runtime.kimi_vl import KimiVL
        from kimi_agent.model_runtime.processor import KimiVLProcessor

        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
        model = KimiVL.from_pretrained(model_dir, device=_pick_device(device), dtype=torch_dtype)
        self._attach(model, KimiVLProcessor.from_pretrained(model_dir, in_token_limit=in_token_limit),
                     slots=slots, max_len=max_len)

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, *, slots: int = 1, max_len: int = 16384,
                    decode: str = "auto") -> NativeBackend:
        """A backend around an already loaded `KimiVL` and `KimiVLProcessor`."""
        self = cls.__new__(cls)
        self._attach(model, processor, slots=slots, max_len=max_len, decode=decode)
        return self

    def _attach(self, model: Any, processor: Any, *, slots: int, max_len: int, decode: str = "auto") -> None:
        from kimi_agent.model_runtime.engine import Engine
        from kimi_agent.model_runtime.scheduler import BatchScheduler

        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model, self.processor = model, processor
        self.engine = Engine(model, processor) if slots == 1 else None
        self.scheduler = (BatchScheduler(model, processor, slots=slots, max_len=max_len, decode=decode)
                          if slots > 1 else None)
        self.concurrent = self.scheduler is not None  # callers may call generate from several threads
        if self.scheduler is not None:
            self.scheduler.start()

    def close(self) -> None:
        """Stop the batching thread (a no-op with one slot)."""
        if self.scheduler is not None:
            self.scheduler.stop()

    def generate(self, messages: list[Message], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                                  "top_p": sampling.top_p, "seed": sampling.seed}
        try:
            if self.engine is not None:
                result = self.engine.generate(messages, images, on_text=on_text, **kwargs)
            else:
                result = self._batched(messages, images, on_text, kwargs)
        except RuntimeError as e:  # torch failures (out of memory, device errors) surface as BackendError
            raise BackendError(f"native runtime failed while generating: {e}") from e
        return Reply(text=result.text, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                     completion_tokens=len(result.token_ids), cached_prompt_tokens=result.cached_prompt_tokens,
                     latency_ms=result.latency_ms)

    def _batched(self, messages: list[Message], images: list[Image.Image], on_text: Callable[[str], None] | None,
                 kwargs: dict[str, Any]) -> Any:
        from kimi_agent.model_runtime.scheduler import GenerationRequest

        assert self.scheduler is not None
        batch = self.processor(messages=messages, images=images)
        handle = self.scheduler.submit(GenerationRequest(batch["input_ids"], batch.get("pixel_values"),
                                                         batch.get("image_grid_hws"), on_text=on_text, **kwargs))
        try:
            return handle.result(timeout=GENERATE_TIMEOUT_S)
        except TimeoutError as e:
            handle.cancel()
            raise BackendError(f"the batched generation did not finish within {GENERATE_TIMEOUT_S:g} s") from e
