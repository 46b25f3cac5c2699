"""MoonViT: the native-resolution vision encoder of Kimi-VL.

Patch embedding + a learnable 64x64 position table resized bicubically to each image's grid, 27
pre-norm blocks with 2D RoPE and attention that is block-diagonal per image (each image attends
only to itself; one SDPA call per image over the packed sequence), a final LayerNorm and the 2x2
patch merger. Module attribute names equal the checkpoint keys under `vision_tower.`.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from kimi_agent.model_runtime import fused_vision  # noqa: F401  (registers torch.ops.kimi_agent.vision_rope)
from kimi_agent.model_runtime.config import MoonViTConfig
from kimi_agent.model_runtime.rope import vision_rope_cos_sin


def grid_list(grid_hws: torch.Tensor) -> list[tuple[int, int]]:
    """[N, 2] int tensor -> [(h, w), ...] on the host."""
    return [(int(h), int(w)) for h, w in grid_hws.tolist()]


class Learnable2DInterpPosEmb(nn.Module):
    """Position table `weight` [H0, W0, D], resized to each grid with bicubic interpolation."""

    def __init__(self, height: int, width: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(height, width, dim))

    def forward(self, grids: list[tuple[int, int]]) -> torch.Tensor:
        """[L, D] position embeddings for the packed images."""
        table = self.weight.permute(2, 0, 1)[None]  # [1, D, H0, W0]
        out = []
        for h, w in grids:
            if (h, w) == tuple(self.weight.shape[:2]):  # bicubic to the same size is the identity
                out.append(self.weight.flatten(0, 1))
            else:
                resized = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
                out.append(resized[0].permute(1, 2, 0).flatten(0, 1))  # [h*w, D]
        return torch.cat(out)


class MoonVisionPatchEmbed(nn.Module):
    def __init__(self, cfg: MoonViTConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(3, cfg.hidden_size, kernel_size=p, stride=p)
        self.pos_emb = Learnable2DInterpPosEmb(cfg.init_pos_emb_height, cfg.init_pos_emb_width, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """pixel_values [L, 3, p, p] -> [L, D]."""
        x = self.proj(pixel_values.to(self.proj.weight.dtype)).flatten(1)  # [L, D]
        return x + self.pos_emb(grids)


class MLP2(nn.Module):
    """fc1(gelu_tanh(fc0(x)))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc0 = nn.Linear(dim, hidden)
        self.fc1 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(F.gelu(self.fc0(x), approximate="tanh"))


class MoonVitEncoderLayer(nn.Module):
    def __init__(self, cfg: MoonViTConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.norm0 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.wo = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.mlp = MLP2(cfg.hidden_size, cfg.intermediate_size)

    def attention(self, x: torch.Tensor, cu_seqlens: list[int], cos: torch.Tensor,
                  sin: torch.Tensor) -> torch.Tensor:
        """Non-causal attention, block-diagonal per image. x [L, D] -> [L, D]."""
        qkv = self.wqkv(x).view(x.shape[0], 3, self.num_heads, self.head_dim)  # [L, 3, H, d]
        q, k = torch.ops.kimi_agent.vision_rope(qkv, cos, sin)  # [H, L, d] each, rotated
        v = qkv[:, 2].transpose(0, 1)
        outs = [  # 4-D inputs [1, H, n_i, d] so SDPA can pick a fused kernel (3-D ones take the math path)
            F.scaled_dot_product_attention(q[None, :, a:b], k[None, :, a:b], v[None, :, a:b])[0]  # [H, n_i, d]
            for a, b in pairwise(cu_seqlens)
        ]
        return self.wo(torch.cat(outs, dim=1).transpose(0, 1).flatten(1))  # [L, H*d] -> [L, D]

    def forward(self, x: torch.Tensor, cu_seqlens: list[int], cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm0(x), cu_seqlens, cos, sin)
        return x + self.mlp(self.norm1(x))


class MoonVitEncoder(nn.Module):
    def __init__(self, cfg: MoonViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(MoonVitEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """x [L, D] packed patches of all images -> [L, D]."""
        cos, sin = vision_rope_cos_sin(grids, self.cfg.head_dim, self.cfg.rope_theta, x.device)
        cu_seqlens = [0]
        for h, w in grids:
            cu_seqlens.append(cu_seqlens[-1] + h * w)
        for block in self.blocks:
            x = block(x, cu_seqlens, cos, sin)
        return self.final_layernorm(x)


def patch_merger(x: torch.Tensor, grids: list[tuple[int, int]],
                 merge: tuple[int, int]) -> list[torch.Tensor]:
    """[L, D] -> per image [h/mh * w/mw, mh*mw, D]; sub-patches in raster order within a window."""
    mh, mw = merge
    out, start = [], 0
    for h, w in grids:
        img = x[start:start + h * w].view(h // mh, mh, w // mw, mw, x.shape[-1])
        out.append(img.permute(0, 2, 1, 3, 4).reshape(h // mh * (w // mw), mh * mw, x.shape[-1]))
        start += h * w
    return out


class MoonViT(nn.Module):
    """Vision tower: `patch_embed`, `encoder` (blocks + final_layernorm), then the patch merger."""

    def __init__(self, cfg: MoonViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = MoonVisionPatchEmbed(cfg)
        self.encoder = MoonVitEncoder(cfg)

    def forward(self, pixel_values: torch.Tensor, image_grid_hws: torch.Tensor) -> list[torch.Tensor]:
        """pixel_values [L, 3, p, p], image_grid_hws [N, 2] -> N tensors [n_i, 4, D]."""
        grids = grid_list(image_grid_hws)
        mh, mw = self.cfg.merge_kernel_size
        assert all(h % mh == 0 and w % mw == 0 for h, w in grids), f"grids {grids} not divisible by merge"
        assert pixel_values.shape[0] == sum(h * w for h, w in grids), (
            f"pixel_values {tuple(pixel_values.shape)} vs grids {grids}")
        x = self.encoder(self.patch_embed(pixel_values, grids), grids)
        return patch_merger(x, grids, self.cfg.merge_kernel_size)
