"""The fused RMSNorm: the operations equal the reference formula, and the Triton kernel (run on the
CPU by Triton's interpreter) equals the operations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from support.interpreted_kernels import run_interpreted

from kimi_agent.model_runtime.fused_norm import rms_norm_reference
from kimi_agent.model_runtime.text import DeepseekV3RMSNorm


def test_norm_and_add_norm_keep_the_reference_formula() -> None:
    norm = DeepseekV3RMSNorm(48, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    x, r = torch.randn(3, 5, 48), torch.randn(3, 5, 48)
    ref = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    torch.testing.assert_close(norm(x), ref, atol=1e-6, rtol=1e-6)
    h, normed = norm.add_and_norm(x, r)
    assert torch.equal(h, x + r)
    torch.testing.assert_close(normed, norm(x + r), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_norm_equals_the_reference(dtype: torch.dtype, tmp_path: Path) -> None:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(300, generator=g) * 0.5 + 1).to(dtype)  # D not a power of two: masked lanes
    x, r = (torch.randn(4, 300, generator=g) * 3).to(dtype), torch.randn(4, 300, generator=g).to(dtype)
    (only_sum, only), (total, normed) = run_interpreted(
        [{"fn": "norm_triton.rms_norm", "args": (x, w, 1e-6), "kw": {}},
         {"fn": "norm_triton.rms_norm", "args": (x, w, 1e-6), "kw": {"residual": r}}], tmp_path)
    # fp16/fp32 to their last bits; the interpreter narrows to bf16 by truncation (the GPU rounds)
    tol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 2e-2}[dtype]
    assert torch.equal(only_sum, x)
    torch.testing.assert_close(only, rms_norm_reference(x, w, 1e-6), atol=tol * 4, rtol=tol)
    h = x + r
    torch.testing.assert_close(total, h, atol=tol * 4, rtol=tol)
    torch.testing.assert_close(normed, rms_norm_reference(h, w, 1e-6), atol=tol * 4, rtol=tol)
