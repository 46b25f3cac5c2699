"""`TransformersBackend`: the official Kimi-VL remote code, for users who want the reference.

Loads a local snapshot with `AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)` and
`AutoProcessor`. The remote code only runs on transformers 4.48.2-4.51.x (the optional extra
`kimi-agent[reference]`); anything else fails here with that sentence instead of deep inside the
remote code. torch and transformers are imported only when this backend is constructed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import BackendError, ModelUnavailableError
from kimi_agent.model_runtime.backends.base import Message, Reply, Sampling

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from PIL import Image

SUPPORTED = ((4, 48, 2), (4, 52, 0))  # [low, high)
INSTALL_HINT = ("the official Kimi-VL remote code supports transformers 4.48.2-4.51.x: "
                "pip install 'kimi-agent[reference]' (or 'transformers>=4.48.2,<4.52'), or use the native backend")


def _version_tuple(v: str) -> tuple[int, int, int]:
    nums: list[int] = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit()) or "0"
        nums.append(int(digits))
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


def check_transformers() -> Any:
    """Import transformers and check its version; raise `ModelUnavailableError` with the fix."""
    try:
        import transformers
    except ImportError:
        raise ModelUnavailableError(f"transformers is not installed; {INSTALL_HINT}.") from None
    version = getattr(transformers, "__version__", "0")
    if not (SUPPORTED[0] <= _version_tuple(version) < SUPPORTED[1]):
        raise ModelUnavailableError(f"transformers {version} is installed, but {INSTALL_HINT}.")
    return transformers


class TransformersBackend:
    """Kimi-VL through Hugging Face transformers and the checkpoint's own modelling code."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "bfloat16") -> None:
        transformers = check_transformers()
        import torch

        log.warning("--backend transformers runs the Python code in %s (trust_remote_code): only for a model "
                    "folder you trust; the native backend reads it as data only", model_dir)

        self._torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), torch_dtype=getattr(torch, dtype), device_map=device, trust_remote_code=True)
        self.processor = transformers.AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=True)
        self._streamer_cls = transformers.TextIteratorStreamer

    def generate(self, messages: list[Message], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        t0 = time.perf_counter()
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=images or None, text=text, return_tensors="pt").to(self.model.device)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        if sampling.seed is not None:
            self._torch.manual_seed(sampling.seed)
        streamer = self._streamer_cls(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self.model.generate(**inputs, streamer=streamer, **kwargs)
            except BaseException as e:  # re-raised on the caller's thread below
                errors.append(e)
                streamer.end()

        worker = threading.Thread(target=run, name="kimi-transformers-generate", daemon=True)
        worker.start()
        pieces: list[str] = []
        for piece in streamer:
            pieces.append(piece)
            if on_text is not None and piece:
                on_text(piece)
        worker.join()
        if errors:
            raise BackendError(f"transformers generation failed: {type(errors[0]).__name__}: {errors[0]}")
        n_prompt = int(inputs["input_ids"].shape[-1])
        return Reply(text="".join(pieces), prompt_tokens=n_prompt, latency_ms=(time.perf_counter() - t0) * 1000)
