"""Typed configs from the real Kimi-VL-A3B-Instruct files; errors name the key and the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.config import GenerationConfig, KimiVLConfig

REAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
REAL = json.loads((REAL_DIR / "config.json").read_text())


def test_real_config_values_and_derived_fields() -> None:
    cfg = KimiVLConfig.from_pretrained_dir(REAL_DIR)
    assert cfg.media_placeholder_token_id == 163605
    assert (cfg.vision.hidden_size, cfg.vision.head_dim, cfg.vision.merge_kernel_size) == (1152, 72, (2, 2))
    t = cfg.text
    assert (t.qk_head_dim, t.kv_lora_rank, t.num_experts_per_tok, t.n_routed_experts) == (192, 512, 6, 64)
    assert t.softmax_scale == pytest.approx(0.0721688, rel=1e-6)
    assert t.kv_layernorm_eps == 1e-6 and t.rms_norm_eps == 1e-5 and t.rope_theta == 800000.0
    assert t.routed_scaling_factor == 2.446
    assert not t.is_moe_layer(0) and all(t.is_moe_layer(i) for i in range(1, 27))


def test_generation_config() -> None:
    gen = GenerationConfig.from_pretrained_dir(REAL_DIR)
    assert gen.eos_token_ids == (163585,) and gen.temperature == 0.2 and gen.do_sample
    assert GenerationConfig.from_dict({"eos_token_id": 7}).eos_token_ids == (7,)
    with pytest.raises(ConfigError, match="eos_token_id"):
        GenerationConfig.from_dict({"eos_token_id": "x"})


def test_unknown_keys_are_ignored() -> None:
    data = copy.deepcopy(REAL)
    data["text_config"]["some_future_key"] = 1
    data["brand_new"] = {"x": 1}
    assert KimiVLConfig.from_dict(data) == KimiVLConfig.from_dict(REAL)


@pytest.mark.parametrize(("section", "key", "value", "match"), [
    ("text_config", "hidden_size", None, r"missing key 'text_config\.hidden_size' in .*config\.json"),
    ("text_config", "hidden_size", "2048", r"'text_config\.hidden_size' in .*must be int"),
    ("text_config", "num_hidden_layers", 0, r"'text_config\.num_hidden_layers'.*must be >= 1, got 0"),
    ("text_config", "q_lora_rank", 1536, r"'text_config\.q_lora_rank'.*must be null"),
    ("text_config", "scoring_func", "softmax", r"'text_config\.scoring_func'"),
    ("vision_config", "patch_size", None, r"missing key 'vision_config\.patch_size'"),
    ("vision_config", "merge_kernel_size", [2], r"merge_kernel_size"),
    (None, "media_placeholder_token_id", None, r"missing key 'media_placeholder_token_id'"),
])
def test_missing_or_invalid_keys_name_key_and_file(tmp_path: Path, section: str | None, key: str,
                                                   value: object, match: str) -> None:
    data = copy.deepcopy(REAL)
    target = data[section] if section else data
    if value is None:
        del target[key]
    else:
        target[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match):
        KimiVLConfig.from_pretrained_dir(tmp_path)


def test_unknown_architecture_and_bad_json(tmp_path: Path) -> None:
    data = copy.deepcopy(REAL)
    data["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"unsupported architecture \['LlamaForCausalLM'\]"):
        KimiVLConfig.from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        KimiVLConfig.from_pretrained_dir(tmp_path)
