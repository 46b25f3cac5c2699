"""What accelerator the runtime can use (kept here so torch stays inside model_runtime/)."""

from __future__ import annotations

import importlib.util
import re

from pydantic import BaseModel

from kimi_agent.errors import ConfigError

#: Names `torch_dtype=` / `--dtype` take (besides "auto": the checkpoint's), and the dtype each means.
TORCH_DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
                     "half": "float16", "float32": "float32", "fp32": "float32", "float": "float32"}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(device: object, flag: str = "--device") -> None:
    """`ConfigError` naming `flag` unless `device` is auto, cpu, cuda or cuda:N (nothing is imported)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"{flag} {device!r}: use auto, cpu, cuda or cuda:N.")


def check_dtype_name(dtype: object, flag: str = "--dtype") -> None:
    """`ConfigError` naming `flag` unless `dtype` is "auto" or one of `TORCH_DTYPE_NAMES`."""
    if dtype != "auto" and dtype not in TORCH_DTYPE_NAMES:
        raise ConfigError(f"{flag} {dtype!r}: use bfloat16, float16, float32 or auto (the checkpoint's).")


class DeviceInfo(BaseModel):
    """torch's version and CUDA device, or why there is none."""

    torch_version: str | None
    cuda_device: str | None = None
    cuda_version: str | None = None


def device_info() -> DeviceInfo:
    """Probe torch and CUDA without failing when torch is absent."""
    if importlib.util.find_spec("torch") is None:
        return DeviceInfo(torch_version=None)
    import torch

    if not torch.cuda.is_available():
        return DeviceInfo(torch_version=torch.__version__)
    return DeviceInfo(torch_version=torch.__version__, cuda_device=torch.cuda.get_device_name(0),
                      cuda_version=torch.version.cuda)
