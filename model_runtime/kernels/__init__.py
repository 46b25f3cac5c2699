"""Hand-written GPU kernels (Triton) of the runtime, used on CUDA for bf16/fp16 models.

Each kernel module here imports `triton` at its top, so it is imported only where a CUDA path needs
it; this package itself does not import Triton. `KIMI_AGENT_TRITON=0` turns every Triton path off
(the eager PyTorch formulas run instead), an escape hatch should a kernel misbehave on some GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os

TRITON_ENV = "KIMI_AGENT_TRITON"


@functools.cache
def triton_installed() -> bool:
    """Whether Triton is installed (PyTorch's CUDA wheels on Linux bring it)."""
    return importlib.util.find_spec("triton") is not None


def triton_enabled(device_type: str, dtype: object) -> bool:
    """Whether Triton kernels run for tensors of this device type and dtype: CUDA, bf16/fp16,
    Triton installed, and not turned off with KIMI_AGENT_TRITON=0."""
    import torch

    return (device_type == "cuda" and dtype in (torch.bfloat16, torch.float16) and triton_installed()
            and os.environ.get(TRITON_ENV, "1") != "0")
