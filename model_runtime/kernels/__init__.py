"""Hand-written GPU kernels (Triton) of the runtime, used on CUDA for bf16/fp16 models.

Each kernel module here imports `triton` at its top, so it is imported only where a CUDA path needs
it; this package itself does not import Triton. `KIMI_AGENT_TRITON=0` turns every Triton path off
(the eager PyTorch formulas run instead), an escape hatch should a kernel misbehave on some GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

TRITON_ENV = "KIMI_AGENT_TRITON"
T = TypeVar("T")
# How a launcher runs each of its kernels: kernel name -> (compile-time constants, num_warps)
Settings = dict[str, tuple[dict[str, Any], int]]
# Replacements for some of them: kernel name -> (constants to replace, num_warps or None to keep)
Overrides = Mapping[str, tuple[Mapping[str, Any], int | None]]


def with_overrides(settings: Settings, overrides: Overrides | None) -> Settings:
    """`settings` with some kernels' constants and warps replaced (the launch sweep's hook,
    bench/kernel_sweep.py); a kernel or constant the launcher does not have is a KeyError."""
    if not overrides:
        return settings
    out = dict(settings)
    for name, (constants, warps) in overrides.items():
        if name not in settings:
            raise KeyError(f"no kernel {name!r} in this launcher (it has {', '.join(settings)})")
        base, base_warps = settings[name]
        if unknown := set(constants) - set(base):
            raise KeyError(f"{name} has no constant(s) {', '.join(sorted(unknown))}")
        out[name] = ({**base, **constants}, base_warps if warps is None else warps)
    return out


@functools.cache
def triton_installed() -> bool:
    """Whether Triton is installed (PyTorch's CUDA wheels on Linux bring it)."""
    return importlib.util.find_spec("triton") is not None


def triton_enabled(device_type: str, dtype: torch.dtype) -> bool:
    """Whether Triton kernels run for tensors of this device type and dtype: CUDA, bf16/fp16,
    Triton installed, and not turned off with KIMI_AGENT_TRITON=0."""
    return (device_type == "cuda" and dtype in (torch.bfloat16, torch.float16) and triton_installed()
            and os.environ.get(TRITON_ENV, "1") != "0")


log = logging.getLogger(__name__)
_UNBUILDABLE: dict[str, str] = {}  # kernel family -> why its kernels could not be built on this machine


def unbuildable() -> dict[str, str]:
    """The kernel families that failed to build here (family -> the error), which run eagerly instead."""
    return dict(_UNBUILDABLE)


def run_kernels(family: str, kernels: Callable[[], T], eager: Callable[[], T]) -> T:
    """`kernels()` (a family's Triton launches), or `eager()` once the family failed to build here.

    A kernel that Triton cannot compile for this GPU (`CompilationError`) or that needs more shared
    memory or registers than it has (`OutOfResources`) fails at its first launch, which a decoder
    makes while warming up, before any CUDA graph is captured. The family is then marked, a warning
    names it and the error, and its eager formulas run from then on: the step still gives the
    right answer, only slower. Any other error propagates."""
    if family not in _UNBUILDABLE:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources

        try:
            return kernels()
        except (CompilationError, OutOfResources) as e:
            lines = str(e).strip().splitlines()  # a compile error ends with its message, after the source
            _UNBUILDABLE[family] = f"{type(e).__name__}: {lines[-1] if lines else repr(e)}"
            log.warning("the Triton %s kernels cannot be built on this GPU (%s); using the eager formulas",
                        family, _UNBUILDABLE[family])
    return eager()
