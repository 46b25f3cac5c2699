"""MoonViT's 2D RoPE on q and k as one operation, `torch.ops.kimi_agent.vision_rope`: from the
fused qkv projection to rotated q and k in the [H, L, d] layout of attention.

On CUDA in bf16/fp16 it is one Triton kernel per encoder layer (`kernels/vision_rope_triton.py`)
instead of about sixteen elementwise kernels over the whole image in fp32; elsewhere it runs
`vision_rope_reference`, the eager formula of `rope.apply_vision_rope`.
"""

from __future__ import annotations

import torch

from kimi_agent.model_runtime.kernels import run_kernels, triton_enabled
from kimi_agent.model_runtime.rope import apply_vision_rope


def vision_rope_reference(qkv: torch.Tensor, cos: torch.Tensor,
                          sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The operation in eager PyTorch; arguments as `vision_rope`."""
    q = apply_vision_rope(qkv[:, 0], cos, sin).transpose(0, 1)
    k = apply_vision_rope(qkv[:, 1], cos, sin).transpose(0, 1)
    return q, k


@torch.library.custom_op("kimi_agent::vision_rope", mutates_args=())
def vision_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv [L, 3, H, d] (wqkv's output), cos/sin [L, d/2] fp32 (`rope.vision_rope_cos_sin`) -> rotated
    q and k [H, L, d] in qkv's dtype."""
    if triton_enabled(qkv.device.type, qkv.dtype):
        from kimi_agent.model_runtime.kernels.vision_rope_triton import vision_rope as triton_vision_rope

        return run_kernels("vision RoPE", lambda: triton_vision_rope(qkv, cos, sin),
                           lambda: vision_rope_reference(qkv, cos, sin))
    return vision_rope_reference(qkv, cos, sin)


@vision_rope.register_fake
def _(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, d = qkv.shape
    return qkv.new_empty(h, n, d), qkv.new_empty(h, n, d)
