"""Absurd configs fail in the parser (ConfigError naming the field) before any module is built,
and every bound leaves the real Kimi-VL-A3B config and the tiny test configs loadable."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.config import (
    MAX_ROUTED_EXPERT_MODULES,
    TEXT_LIMITS,
    VISION_LIMITS,
    KimiVLConfig,
)

REAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
SHARED_REAL_DIR = Path("/work/shared/models/Kimi-VL-A3B-Instruct")
REAL = json.loads((REAL_DIR / "config.json").read_text())

# (section, key, value, message pattern): one absurd value each, the rest of the real config intact.
ABSURD = [
    ("text_config", "num_hidden_layers", 100_000,
     r"key 'text_config\.num_hidden_layers' in .*config\.json must be <= 256 \(this runtime's bound\), got 100,000"),
    ("text_config", "num_hidden_layers", -3, r"'text_config\.num_hidden_layers' .* must be >= 1, got -3"),
    ("text_config", "vocab_size", 10**12, r"'text_config\.vocab_size' .* must be <= 1,048,576 .*got 1,000,000,000,000"),
    ("text_config", "vocab_size", 0, r"'text_config\.vocab_size' .* must be >= 1, got 0"),
    ("text_config", "hidden_size", -2048, r"'text_config\.hidden_size' .* must be >= 1, got -2048"),
    ("text_config", "hidden_size", 10**9, r"'text_config\.hidden_size' .* must be <= 65,536"),
    ("text_config", "intermediate_size", 0, r"'text_config\.intermediate_size' .* must be >= 1"),
    ("text_config", "moe_intermediate_size", 10**7, r"'text_config\.moe_intermediate_size' .* must be <= 65,536"),
    ("text_config", "num_attention_heads", 0, r"'text_config\.num_attention_heads' .* must be >= 1"),
    ("text_config", "n_routed_experts", 1_000_000, r"'text_config\.n_routed_experts' .* must be <= 1,024"),
    ("text_config", "n_shared_experts", 0, r"'text_config\.n_shared_experts' .* must be >= 1, got 0"),
    ("text_config", "n_shared_experts", -1, r"'text_config\.n_shared_experts' .* must be >= 1, got -1"),
    ("text_config", "num_experts_per_tok", 65, r"'text_config\.num_experts_per_tok' .* \(65\) exceeds n_routed_experts \(64\)"),
    ("text_config", "first_k_dense_replace", -1, r"'text_config\.first_k_dense_replace' .* must be >= 0, got -1"),
    ("text_config", "first_k_dense_replace", 28, r"'text_config\.first_k_dense_replace' .* \(28\) exceeds num_hidden_layers"),
    ("text_config", "kv_lora_rank", 1 << 20, r"'text_config\.kv_lora_rank' .* must be <= 16,384"),
    ("text_config", "qk_rope_head_dim", 63, r"'text_config\.qk_rope_head_dim' .* must be even, got 63"),
    ("text_config", "v_head_dim", 0, r"'text_config\.v_head_dim' .* must be >= 1"),
    ("text_config", "max_position_embeddings", 1 << 40, r"'text_config\.max_position_embeddings' .* must be <= 16,777,216"),
    ("text_config", "rms_norm_eps", 0.0, r"'text_config\.rms_norm_eps' .* must be a finite number in \[1e-12, 1\], got 0\.0"),
    ("text_config", "rms_norm_eps", float("nan"), r"'text_config\.rms_norm_eps' .* got nan"),
    ("text_config", "rope_theta", float("inf"), r"'text_config\.rope_theta' .* got inf"),
    ("text_config", "rope_theta", -1.0, r"'text_config\.rope_theta' .* got -1\.0"),
    ("text_config", "routed_scaling_factor", 0, r"'text_config\.routed_scaling_factor' .* got 0\.0"),
    ("vision_config", "num_hidden_layers", 100_000, r"'vision_config\.num_hidden_layers' .* must be <= 256"),
    ("vision_config", "hidden_size", 0, r"'vision_config\.hidden_size' .* must be >= 1, got 0"),
    ("vision_config", "patch_size", -14, r"'vision_config\.patch_size' .* must be >= 1, got -14"),
    ("vision_config", "init_pos_emb_height", 1 << 20, r"'vision_config\.init_pos_emb_height' .* must be <= 1,024"),
    ("vision_config", "merge_kernel_size", [2, 10**6], r"'vision_config\.merge_kernel_size' .* two ints in \[1, 16\]"),
    ("vision_config", "merge_kernel_size", [True, 2], r"'vision_config\.merge_kernel_size'"),
    (None, "media_placeholder_token_id", 1 << 40,
     r"'media_placeholder_token_id' .* must be a token id in \[0, 1,048,576\), got 1099511627776"),
    (None, "media_placeholder_token_id", -1, r"'media_placeholder_token_id' .* got -1"),
    (None, "torch_dtype", "float64", r"'torch_dtype' .* must be one of \('bfloat16', 'float16', 'float32'\)"),
]


def _with(section: str | None, key: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(REAL)
    (data[section] if section else data)[key] = value
    return data


@pytest.mark.parametrize(("section", "key", "value", "match"), ABSURD,
                         ids=[f"{s or 'top'}.{k}={v!r}" for s, k, v, _ in ABSURD])
def test_absurd_value_is_a_config_error_naming_the_field(tmp_path: Path, section: str | None, key: str,
                                                         value: Any, match: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_with(section, key, value)))
    with pytest.raises(ConfigError, match=match):
        KimiVLConfig.from_pretrained_dir(tmp_path)


def test_too_many_expert_modules_in_all() -> None:
    # each field within its own bound, the product over the bound: 200 MoE layers x 1,000 experts
    data = _with("text_config", "num_hidden_layers", 201)
    data["text_config"]["n_routed_experts"] = 1000
    with pytest.raises(ConfigError, match=rf"200,000 expert modules, over this runtime's bound of "
                                          rf"{MAX_ROUTED_EXPERT_MODULES:,}"):
        KimiVLConfig.from_dict(data)


def test_bounds_admit_real_configs() -> None:
    for directory in (REAL_DIR, SHARED_REAL_DIR):
        if directory.is_dir():
            cfg = KimiVLConfig.from_pretrained_dir(directory)
            assert (cfg.text.num_hidden_layers, cfg.torch_dtype) == (27, "bfloat16")
    # DeepSeek-V3's language-model sizes (61 layers, 256 experts, 7168 wide, 128 heads) are in bounds
    data = copy.deepcopy(REAL)
    data["text_config"].update(num_hidden_layers=61, first_k_dense_replace=3, n_routed_experts=256,
                               num_experts_per_tok=8, hidden_size=7168, intermediate_size=18432,
                               moe_intermediate_size=2048, num_attention_heads=128, n_shared_experts=1,
                               vocab_size=129280, media_placeholder_token_id=0)
    data["media_placeholder_token_id"] = 0
    assert KimiVLConfig.from_dict(data).text.n_routed_experts == 256
    assert all(low <= REAL["text_config"][k] <= high for k, (low, high) in TEXT_LIMITS.items())
    assert all(low <= REAL["vision_config"][k] <= high for k, (low, high) in VISION_LIMITS.items())


def test_absurd_checkpoint_config_fails_before_building(small_checkpoint_factory: Callable[..., Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kimi_agent.model_runtime import KimiVL

    def must_not_build(*_: object) -> None:
        raise AssertionError("the model was built from an absurd config")

    ckpt = small_checkpoint_factory()
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 100_000
    (ckpt / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr("kimi_agent.model_runtime.weights.build_on_meta", must_not_build)
    with pytest.raises(ConfigError, match=r"'text_config\.num_hidden_layers' in .*ckpt/config\.json must be <= 256"):
        KimiVL.from_pretrained(ckpt, device="cpu", torch_dtype=torch.float32)
