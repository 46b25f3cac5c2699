"""MoonViT's fused 2D RoPE: the Triton kernel (run on the CPU by Triton's interpreter) equals the
eager formula, and the vision tower goes through the operation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from support.interpreted_kernels import run_interpreted

from kimi_agent.model_runtime.fused_vision import vision_rope_reference
from kimi_agent.model_runtime.kimi_vl import KimiVL
from kimi_agent.model_runtime.rope import vision_rope_cos_sin


@pytest.mark.parametrize(("dtype", "heads", "head_dim", "grids"), [
    (torch.float32, 3, 72, [(4, 6)]),  # MoonViT's head size: 36 pairs, padded to 64 inside the kernel
    (torch.float16, 2, 8, [(2, 4), (6, 2)]),  # two packed images
    (torch.bfloat16, 16, 72, [(2, 2)]),
])
def test_triton_vision_rope_equals_the_reference(dtype: torch.dtype, heads: int, head_dim: int,
                                                 grids: list[tuple[int, int]], tmp_path: Path) -> None:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    patches = sum(h * w for h, w in grids)
    qkv = (torch.randn(patches, 3, heads, head_dim, generator=torch.Generator().manual_seed(heads)) * 2).to(dtype)
    cos, sin = vision_rope_cos_sin(grids, head_dim, 10000.0, torch.device("cpu"))
    [(q, k)] = run_interpreted([{"fn": "vision_rope_triton.vision_rope", "args": (qkv, cos, sin), "kw": {}}], tmp_path)
    ref_q, ref_k = vision_rope_reference(qkv, cos, sin)
    assert q.shape == k.shape == (heads, patches, head_dim) and q.is_contiguous() and q.dtype == dtype
    # fp32/fp16 to their last bits (a fused multiply-add may round once less); the interpreter
    # narrows to bf16 by truncation (the GPU rounds)
    tol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(q, ref_q, atol=tol * 8, rtol=tol)
    torch.testing.assert_close(k, ref_k, atol=tol * 8, rtol=tol)


def test_the_vision_tower_rotates_through_the_operation(tiny_model: KimiVL, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    op = torch.ops.kimi_agent.vision_rope

    def counting(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(args[0].shape)
        return op(*args)

    monkeypatch.setattr(torch.ops.kimi_agent, "vision_rope", counting)
    pixels = torch.randn(16, 3, 14, 14)
    with torch.inference_mode():
        tiny_model.vision_tower(pixels, torch.tensor([[4, 4]]))
    assert len(calls) == tiny_model.config.vision.num_hidden_layers and calls[0][:2] == (16, 3)
