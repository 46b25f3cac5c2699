"""KimiVL: MoonViT + projector + DeepSeek-V3, composed under the checkpoint's top-level names
(`vision_tower`, `multi_modal_projector`, `language_model`).

`embed_inputs` is the one multimodal merge: encode all images packed, project, and scatter the rows
into the `<|media_pad|>` positions, with a hard count check.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kimi_agent.model_runtime.config import KimiVLConfig
from kimi_agent.model_runtime.hub import resolve_model_dir
from kimi_agent.model_runtime.kv_cache import FullKVCache, MLACache
from kimi_agent.model_runtime.moe import DeepseekV3MoE, MoEImpl
from kimi_agent.model_runtime.projector import KimiVLMultiModalProjector
from kimi_agent.model_runtime.text import DeepseekV3ForCausalLM
from kimi_agent.model_runtime.vision import MoonViT

CHECKPOINT_FILES = ["*.json", "*.safetensors", "tiktoken.model", "*.jinja"]


class KimiVL(nn.Module):
    def __init__(self, config: KimiVLConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = MoonViT(config.vision)
        self.multi_modal_projector = KimiVLMultiModalProjector(config)
        self.language_model = DeepseekV3ForCausalLM(config.text)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, device: torch.device | str = "cpu",
                        torch_dtype: torch.dtype | str | None = None, dtype: torch.dtype | str | None = None,
                        revision: str | None = None, token: str | bool | None = None,
                        verify: bool = False) -> KimiVL:
        """Load an official checkpoint (local directory or hub id such as moonshotai/Kimi-VL-A3B-Instruct).

        Keywords follow transformers: `torch_dtype` (or its alias `dtype`) is a torch dtype, a name such
        as "bfloat16", or "auto" for the checkpoint's own dtype; bfloat16 when neither is given.
        `revision` (branch, tag or commit) and `token` apply to hub ids and are passed to
        `huggingface_hub`; a local directory is used as is. `verify=True` also checks every tensor for
        NaN/inf after loading it (one extra pass). Errors: `ModelUnavailableError`, `ConfigError`,
        `WeightLoadError`, each naming the file and the field or tensor.
        """
        from kimi_agent.model_runtime.weights import build_on_meta, load_weights, resolve_torch_dtype

        requested = resolve_torch_dtype(torch_dtype, dtype)
        model_dir = resolve_model_dir(path_or_hub_id, allow_patterns=CHECKPOINT_FILES, revision=revision,
                                      token=token)
        config = KimiVLConfig.from_pretrained_dir(model_dir)
        load_dtype = getattr(torch, config.torch_dtype) if requested == "auto" else requested
        model = build_on_meta(config)
        load_weights(model, model_dir, device=device, dtype=load_dtype, verify=verify)
        assert isinstance(model, KimiVL)
        model.eval().requires_grad_(False)
        model.stack_experts()
        return model

    @property
    def device(self) -> torch.device:
        return self.language_model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.lm_head.weight.dtype

    def moe_layers(self) -> list[DeepseekV3MoE]:
        return [m for m in self.modules() if isinstance(m, DeepseekV3MoE)]

    def stack_experts(self) -> None:
        """Stack weights per layer: the experts (grouped matmuls, the fused MoE) and the attention's
        q_proj + kv_a_proj_with_mqa (one matmul); parameter names are unchanged."""
        for moe in self.moe_layers():
            moe.stack_experts()
        for layer in self.language_model.model.layers:
            layer.self_attn.stack_projections()

    def set_moe_impl(self, impl: MoEImpl) -> None:
        for moe in self.moe_layers():
            moe.impl = impl

    def new_cache(self, batch_size: int, max_len: int, *, naive: bool = False,
                  static: bool = False) -> MLACache | FullKVCache:
        """A preallocated KV cache for this model (latent MLA cache; `naive`: full per-head K/V)."""
        cfg = self.config.text
        if naive:
            return FullKVCache(cfg, batch_size, max_len, device=self.device, dtype=self.dtype, static=static)
        return MLACache.for_config(cfg, batch_size, max_len, device=self.device, dtype=self.dtype, static=static)

    def image_features(self, pixel_values: torch.Tensor, image_grid_hws: torch.Tensor) -> torch.Tensor:
        """pixel_values [L, 3, 14, 14], image_grid_hws [N, 2] -> LM embeddings [sum_i h_i*w_i/4, D]."""
        merged = self.vision_tower(pixel_values.to(self.device), image_grid_hws)  # N x [n_i, 4, D_vis]
        return self.multi_modal_projector(torch.cat(merged))

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                     image_grid_hws: torch.Tensor | None = None, *,
                     image_features: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] -> [B, T, D]: token embeddings with image features at `<|media_pad|>`.

        `image_features` [n, D] (from `image_features()`, e.g. cached) replaces encoding the pixels."""
        embeds = self.language_model.model.embed_tokens(input_ids)  # [B, T, D]
        is_image = input_ids == self.config.media_placeholder_token_id  # [B, T]
        n_tokens = int(is_image.sum())
        features = image_features
        if features is None and pixel_values is not None and image_grid_hws is not None and image_grid_hws.numel():
            features = self.image_features(pixel_values, image_grid_hws)  # [n, D]
        n_features = 0 if features is None else features.shape[0]
        if n_tokens != n_features:
            raise ValueError(f"image placeholder tokens {n_tokens} != image features {n_features}")
        if features is None:
            return embeds
        return embeds.masked_scatter(is_image[..., None], features.to(embeds.dtype))

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                image_grid_hws: torch.Tensor | None = None, *, kv_cache: MLACache | FullKVCache | None = None,
                positions: torch.Tensor | None = None, last_only: bool = False,
                image_features: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] -> fp32 logits [B, T, vocab] (the cache, if given, is written, not advanced)."""
        embeds = self.embed_inputs(input_ids, pixel_values, image_grid_hws, image_features=image_features)
        return self.language_model(embeds, positions, kv_cache, last_only=last_only)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                 image_grid_hws: torch.Tensor | None = None, *, max_new_tokens: int = 16,
                 temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None,
                 stop_token_ids: tuple[int, ...] | None = None) -> torch.Tensor:
        """New token ids [B, n] (n <= max_new_tokens; rows that stopped early repeat their stop id)."""
        from kimi_agent.model_runtime.generate import STOP_TOKEN_IDS, generate_batch

        return generate_batch(self, input_ids, pixel_values, image_grid_hws, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_p=top_p, generator=generator,
                              stop_token_ids=STOP_TOKEN_IDS if stop_token_ids is None else stop_token_ids)
