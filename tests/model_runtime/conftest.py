"""Tiny random Kimi-VL checkpoints in the official layout (config.json schema, bf16 safetensors in
3 shards + model.safetensors.index.json, the ignorable rotary_emb.inv_freq tensors, and the real
tokenizer/template/preprocessor files) for loading through `KimiVL.from_pretrained`.

Every structural feature of Kimi-VL-A3B is kept at toy size: dense first layer, MoE layers with
shared experts and a correction bias, MLA with q_lora_rank null, 2x2 patch merge, a 64x64-style
position table (8x8 here) that gets interpolated. The vocab stays the real 163,840 so real ids work.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
TOKENIZER_FILES = ("tiktoken.model", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
                   "generation_config.json")


def tiny_config(**text_overrides: Any) -> dict[str, Any]:
    """The real config.json with tiny sizes (text_config keys can be overridden)."""
    cfg = json.loads((REAL_DIR / "config.json").read_text())
    cfg["vision_config"].update(num_attention_heads=2, num_hidden_layers=2, hidden_size=32, intermediate_size=48,
                                init_pos_emb_height=8, init_pos_emb_width=8)
    cfg["text_config"].update(hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1, n_routed_experts=8,
                              num_experts_per_tok=3, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
                              v_head_dim=12)
    cfg["text_config"].update(text_overrides)
    cfg["vocab_size"] = cfg["text_config"]["vocab_size"]
    return cfg


def random_state(cfg_dict: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Random tensors under the official names (plus inv_freq), shaped from a meta-device model."""
    import torch

    from kimi_agent.model_runtime.config import KimiVLConfig
    from kimi_agent.model_runtime.weights import build_on_meta

    g = torch.Generator().manual_seed(seed)
    model = build_on_meta(KimiVLConfig.from_dict(cfg_dict))
    state: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith(("norm0.weight", "norm1.weight", "layernorm.weight")):
            t = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith("embed_tokens.weight") or name.endswith("pos_emb.weight"):
            t = torch.randn(p.shape, generator=g)
        elif name.endswith("e_score_correction_bias"):
            t = 0.3 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p.shape[-1] if p.dim() == 2 else max(1, p[0].numel()) if p.dim() > 2 else 1
            t = torch.randn(p.shape, generator=g) * (fan_in ** -0.5 if p.dim() >= 2 else 0.1)
        state[name] = t.to(torch.bfloat16)
    rope = cfg_dict["text_config"]["qk_rope_head_dim"]
    for i in range(cfg_dict["text_config"]["num_hidden_layers"]):
        state[f"language_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(rope // 2)
    return state


def write_checkpoint(path: Path, cfg_dict: dict[str, Any], *, seed: int = 0, num_shards: int = 3) -> Path:
    """Write config + sharded safetensors + index (+ tokenizer files) into `path`."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    for f in TOKENIZER_FILES:
        shutil.copy(REAL_DIR / f, path / f)
    state = random_state(cfg_dict, seed)
    names = sorted(state, key=lambda n: (not n.startswith(("vision", "multi", "language_model.model.embed")), n))
    weight_map = {}
    for k in range(num_shards):
        shard = f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors"
        part = names[k * len(names) // num_shards:(k + 1) * len(names) // num_shards]
        save_file({n: state[n].contiguous() for n in part}, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full tiny checkpoint directory (config, 3 weight shards + index, tokenizer files)."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny_kimi_vl"), tiny_config())


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Any:
    """The tiny checkpoint loaded in fp32 on CPU (shared: tests must not modify it)."""
    import torch

    from kimi_agent.model_runtime import KimiVL

    return KimiVL.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)


@pytest.fixture
def small_checkpoint_factory(tmp_path: Path) -> Callable[..., Path]:
    """Writes a cheap checkpoint (vocab 1024) for loader-error tests: factory(**text_overrides)."""

    def make(**overrides: Any) -> Path:
        cfg = tiny_config(vocab_size=1024, **overrides)
        cfg["media_placeholder_token_id"] = 1023  # must have an embedding row (the real tokenizer's is 163605)
        return write_checkpoint(tmp_path / "ckpt", copy.deepcopy(cfg))

    return make
