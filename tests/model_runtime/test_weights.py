"""Weight names/shapes of the full-size model, and clear loader errors on broken checkpoints."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kimi_agent.errors import ModelUnavailableError, WeightLoadError
from kimi_agent.model_runtime import KimiVL
from kimi_agent.model_runtime.config import KimiVLConfig
from kimi_agent.model_runtime.weights import build_on_meta, is_ignored

REAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"

# name -> shape, from the table in KIMI_VL.md §5
DOC_SHAPES = {
    "language_model.model.embed_tokens.weight": (163840, 2048),
    "language_model.lm_head.weight": (163840, 2048),
    "language_model.model.norm.weight": (2048,),
    "language_model.model.layers.5.input_layernorm.weight": (2048,),
    "language_model.model.layers.5.self_attn.q_proj.weight": (3072, 2048),
    "language_model.model.layers.5.self_attn.kv_a_proj_with_mqa.weight": (576, 2048),
    "language_model.model.layers.5.self_attn.kv_a_layernorm.weight": (512,),
    "language_model.model.layers.5.self_attn.kv_b_proj.weight": (4096, 512),
    "language_model.model.layers.5.self_attn.o_proj.weight": (2048, 2048),
    "language_model.model.layers.0.mlp.gate_proj.weight": (11264, 2048),
    "language_model.model.layers.0.mlp.down_proj.weight": (2048, 11264),
    "language_model.model.layers.26.mlp.gate.weight": (64, 2048),
    "language_model.model.layers.26.mlp.gate.e_score_correction_bias": (64,),
    "language_model.model.layers.1.mlp.experts.63.up_proj.weight": (1408, 2048),
    "language_model.model.layers.1.mlp.experts.0.down_proj.weight": (2048, 1408),
    "language_model.model.layers.3.mlp.shared_experts.gate_proj.weight": (2816, 2048),
    "language_model.model.layers.3.mlp.shared_experts.down_proj.weight": (2048, 2816),
    "vision_tower.patch_embed.proj.weight": (1152, 3, 14, 14),
    "vision_tower.patch_embed.pos_emb.weight": (64, 64, 1152),
    "vision_tower.encoder.blocks.26.wqkv.weight": (3456, 1152),
    "vision_tower.encoder.blocks.0.wo.bias": (1152,),
    "vision_tower.encoder.blocks.3.mlp.fc0.weight": (4304, 1152),
    "vision_tower.encoder.blocks.3.mlp.fc1.weight": (1152, 4304),
    "vision_tower.encoder.final_layernorm.bias": (1152,),
    "multi_modal_projector.pre_norm.weight": (1152,),
    "multi_modal_projector.linear_1.weight": (4608, 4608),
    "multi_modal_projector.linear_2.weight": (2048, 4608),
    "multi_modal_projector.linear_2.bias": (2048,),
}


def test_full_size_meta_model_matches_real_index() -> None:
    model = build_on_meta(KimiVLConfig.from_pretrained_dir(REAL_DIR))
    params = dict(model.named_parameters())
    index = json.loads((REAL_DIR / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(index) == 5679
    expected = {n for n in index if not is_ignored(n)}
    assert len(index) - len(expected) == 27  # one rotary_emb.inv_freq per layer
    assert set(params) == expected
    assert {n: tuple(params[n].shape) for n in DOC_SHAPES} == DOC_SHAPES
    total = sum(p.numel() for p in params.values())
    assert total * 2 + 27 * 32 * 4 == index_total_size()  # bf16 params + fp32 inv_freq = the index's bytes


def index_total_size() -> int:
    return json.loads((REAL_DIR / "model.safetensors.index.json").read_text())["metadata"]["total_size"]


def test_tiny_checkpoint_loads_every_parameter(tiny_checkpoint: Path, tiny_model: KimiVL) -> None:
    from kimi_agent.model_runtime.weights import load_weights

    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) == 3
    model = build_on_meta(KimiVLConfig.from_pretrained_dir(tiny_checkpoint))
    loaded = load_weights(model, tiny_checkpoint, device="cpu", dtype=torch.float32)
    assert loaded == {n for n in index if not is_ignored(n)}
    assert not any(p.is_meta for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())


def _rewrite_index(ckpt: Path, edit: Callable[[dict[str, str]], object]) -> None:
    path = ckpt / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


def _load(ckpt: Path) -> KimiVL:
    return KimiVL.from_pretrained(ckpt, device="cpu", dtype=torch.float32)


def test_missing_shard(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    (ckpt / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightLoadError, match=r"missing shard .*model-00002-of-00003\.safetensors"):
        _load(ckpt)


def test_truncated_shard(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    shard = ckpt / "model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightLoadError, match=r"corrupt or truncated shard .*model-00003-of-00003"):
        _load(ckpt)


def test_wrong_shape(small_checkpoint_factory: Callable[..., Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ckpt = small_checkpoint_factory()
    name = "multi_modal_projector.linear_2.bias"
    shard = ckpt / json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = torch.zeros(7, dtype=torch.bfloat16)
    save_file(tensors, str(shard))
    with pytest.raises(WeightLoadError, match=rf"shape mismatch for tensor {name} in .*{shard.name}.*\(7,\)"):
        _load(ckpt)


def test_missing_key(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    name = "language_model.model.layers.1.mlp.experts.3.up_proj.weight"
    _rewrite_index(ckpt, lambda m: m.pop(name))
    with pytest.raises(WeightLoadError, match=rf"(missing|unexpected) tensor {name}"):
        _load(ckpt)


def test_key_in_index_but_not_in_shard(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    name = "language_model.model.norm.weight"

    def move(m: dict[str, str]) -> None:  # claim it lives in another shard
        m[name] = next(s for s in sorted(set(m.values())) if s != m[name])

    _rewrite_index(ckpt, move)
    with pytest.raises(WeightLoadError, match=rf"(missing|unexpected) tensor {name}"):
        _load(ckpt)


def test_unexpected_key(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory(num_hidden_layers=2)  # checkpoint written for 2 layers ...
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 1  # ... config says 1: layer 1's tensors are extra
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightLoadError, match=r"unexpected tensor language_model\.model\.layers\.1\."):
        _load(ckpt)


def test_unknown_architecture(small_checkpoint_factory: Callable[..., Path]) -> None:
    from kimi_agent.errors import ConfigError

    ckpt = small_checkpoint_factory()
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["Qwen2VLForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unsupported architecture"):
        _load(ckpt)


def test_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match=r"not in the hub cache.*`hf download moonshotai/Kimi-VL-A3B-Instruct "
                                                    r"--local-dir DIR`"):  # at once: no download tried
        KimiVL.from_pretrained("moonshotai/Kimi-VL-A3B-Instruct", device="cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# --- hardening: every bad input below is written in the official safetensors format ---------------


def _shard_of(ckpt: Path, name: str) -> Path:
    return ckpt / json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][name]


def _replace_tensor(ckpt: Path, name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    """Rewrite `name` in its shard as `make(old)` (official format via safetensors.save_file)."""
    from safetensors.torch import load_file, save_file

    shard = _shard_of(ckpt, name)
    tensors = load_file(shard)
    tensors[name] = make(tensors[name]).contiguous()
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return shard


@pytest.mark.parametrize(("dtype", "header_name"), [
    (torch.int8, "I8"), (torch.bool, "BOOL"), (torch.float64, "F64"), (torch.int64, "I64"),
    (torch.float8_e4m3fn, "F8_E4M3"),
])
def test_wrong_dtype_names_tensor_and_shard(small_checkpoint_factory: Callable[..., Path], dtype: torch.dtype,
                                           header_name: str) -> None:
    ckpt = small_checkpoint_factory()
    name = "language_model.model.layers.1.self_attn.kv_b_proj.weight"
    shard = _replace_tensor(ckpt, name, lambda t: t.to(dtype))
    with pytest.raises(WeightLoadError) as err:
        _load(ckpt)
    assert str(err.value) == (f"wrong dtype for tensor {name} in {shard}: checkpoint {header_name}, model expects "
                              "a float tensor (BF16, F16, F32)")


def test_float_dtypes_other_than_bf16_load(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    a, b = "multi_modal_projector.linear_1.weight", "language_model.model.norm.weight"
    _replace_tensor(ckpt, a, lambda t: t.float())
    _replace_tensor(ckpt, b, lambda t: t.half())
    model = KimiVL.from_pretrained(ckpt, torch_dtype=torch.bfloat16)
    params = dict(model.named_parameters())
    assert params[a].dtype == params[b].dtype == torch.bfloat16


def _index_text(ckpt: Path) -> str:
    return (ckpt / "model.safetensors.index.json").read_text()


SOME = "language_model.model.norm.weight"
# index file content -> the exact message after "<ckpt>/model.safetensors.index.json"
MALFORMED_INDEX = {
    "weight_map null": ('{"metadata": {}, "weight_map": null}',
                        ": field 'weight_map' must be an object of tensor name -> shard file, got null"),
    "weight_map list": ('{"weight_map": ["model-00001-of-00003.safetensors"]}',
                        ": field 'weight_map' must be an object of tensor name -> shard file, got a list"),
    "weight_map string": ('{"weight_map": "model.safetensors"}',
                          ": field 'weight_map' must be an object of tensor name -> shard file, got a string"),
    "weight_map empty": ('{"weight_map": {}}', ": field 'weight_map' is empty"),
    "no weight_map": ('{"metadata": {"total_size": 1}}',
                      ": missing field 'weight_map' (tensor name -> shard file)"),
    "shard name a number": (f'{{"weight_map": {{"{SOME}": 3}}}}',
                            f": field 'weight_map.{SOME}' must be a shard file name (a string), got a number 3"),
    "shard name null": (f'{{"weight_map": {{"{SOME}": null}}}}',
                        f": field 'weight_map.{SOME}' must be a shard file name (a string), got null"),
    "shard name a list": (f'{{"weight_map": {{"{SOME}": ["a", "b"]}}}}',
                          f": field 'weight_map.{SOME}' must be a shard file name (a string), got a list "
                          "['a', 'b']"),
    "shard outside the directory": (f'{{"weight_map": {{"{SOME}": "../model-00001-of-00003.safetensors"}}}}',
                                    f": field 'weight_map.{SOME}' must be a file name inside the checkpoint "
                                    "directory, got '../model-00001-of-00003.safetensors'"),
    "absolute shard path": (f'{{"weight_map": {{"{SOME}": "/etc/passwd"}}}}',
                            f": field 'weight_map.{SOME}' must be a file name inside the checkpoint directory, "
                            "got '/etc/passwd'"),
    "top level a list": ('[{"weight_map": {}}]',
                         ": the top level must be a JSON object with a 'weight_map' field, got a list"),
    "top level null": ("null", ": the top level must be a JSON object with a 'weight_map' field, got null"),
}


@pytest.mark.parametrize("case", list(MALFORMED_INDEX))
def test_malformed_index_names_file_and_field(small_checkpoint_factory: Callable[..., Path], case: str) -> None:
    ckpt = small_checkpoint_factory()
    text, message = MALFORMED_INDEX[case]
    index = ckpt / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(WeightLoadError) as err:
        _load(ckpt)
    assert str(err.value) == f"{index}{message}"


@pytest.mark.parametrize("text", ['{"weight_map": {', "", '{"weight_map": {"a": "b",}}'])
def test_index_that_is_not_json(small_checkpoint_factory: Callable[..., Path], text: str) -> None:
    ckpt = small_checkpoint_factory()
    index = ckpt / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(WeightLoadError, match=rf"^{index} is not valid JSON \(JSONDecodeError: "):
        _load(ckpt)
    index.write_bytes(b'{"weight_map": "\xff"}')
    with pytest.raises(WeightLoadError, match=rf"^{index} is not valid JSON \(UnicodeDecodeError: "):
        _load(ckpt)


def test_index_entry_pointing_at_a_missing_shard_names_the_shard(
        small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    ghost = "model-00004-of-00003.safetensors"
    # a real tensor (still present in shard 1) and an unknown one, both said to live in a shard that is not there
    _rewrite_index(ckpt, lambda m: m.update({"vision_tower.patch_embed.proj.weight": ghost,
                                             "not.a.parameter": ghost}))
    with pytest.raises(WeightLoadError) as err:
        _load(ckpt)
    assert str(err.value) == (f"missing shard {ckpt / ghost}: model.safetensors.index.json lists 2 tensors in it "
                              "(e.g. vision_tower.patch_embed.proj.weight) but the file does not exist")


def _poison(ckpt: Path, name: str, value: float) -> Path:
    def make(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[t.numel() // 2] = value
        return t

    return _replace_tensor(ckpt, name, make)


@pytest.mark.parametrize(("value", "counts"), [(float("nan"), "1 NaN and 0 inf"), (float("inf"), "0 NaN and 1 inf"),
                                               (float("-inf"), "0 NaN and 1 inf")])
def test_verify_names_the_first_non_finite_tensor(small_checkpoint_factory: Callable[..., Path], value: float,
                                                  counts: str) -> None:
    ckpt = small_checkpoint_factory()
    first = "vision_tower.encoder.blocks.0.wqkv.weight"  # shard 1
    later = "language_model.model.layers.2.mlp.experts.5.down_proj.weight"  # shard 3
    _poison(ckpt, later, value)
    shard = _poison(ckpt, first, value)
    assert shard.name == "model-00001-of-00003.safetensors" != _shard_of(ckpt, later).name
    model = _load(ckpt)  # verify is off by default: loads, garbage in
    assert not bool(torch.isfinite(dict(model.named_parameters())[first]).all())
    with pytest.raises(WeightLoadError) as err:
        KimiVL.from_pretrained(ckpt, torch_dtype=torch.float32, verify=True)
    numel = dict(model.named_parameters())[first].numel()
    assert str(err.value) == f"non-finite values in tensor {first} in {shard}: {counts} of {numel} (verify=True)"


def test_verify_reports_overflow_in_conversion(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    name = "multi_modal_projector.linear_2.bias"
    shard = _poison(ckpt, name, 1e6)  # fine in bf16, beyond float16's 65504
    assert KimiVL.from_pretrained(ckpt, torch_dtype=torch.float32, verify=True) is not None
    with pytest.raises(WeightLoadError) as err:
        KimiVL.from_pretrained(ckpt, torch_dtype="float16", verify=True)
    assert str(err.value) == (f"tensor {name} in {shard} overflows torch.float16: its torch.bfloat16 values exceed "
                              "the range of torch.float16 (verify=True; load in a wider dtype)")


# --- transformers-style from_pretrained keywords ----------------------------------------------------


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, torch.bfloat16),
    ({"torch_dtype": torch.float32}, torch.float32),
    ({"torch_dtype": "float16"}, torch.float16),
    ({"dtype": torch.float32}, torch.float32),  # the alias
    ({"dtype": "fp32", "torch_dtype": torch.float32}, torch.float32),  # both, agreeing
    ({"torch_dtype": "auto"}, torch.bfloat16),  # config.json's torch_dtype
])
def test_from_pretrained_dtype_keywords(small_checkpoint_factory: Callable[..., Path], kwargs: dict,
                                        expected: torch.dtype) -> None:
    model = KimiVL.from_pretrained(small_checkpoint_factory(), device="cpu", **kwargs)
    assert {p.dtype for p in model.parameters()} == {expected}
    assert model.dtype == expected


def test_from_pretrained_auto_follows_the_checkpoint_dtype(small_checkpoint_factory: Callable[..., Path]) -> None:
    ckpt = small_checkpoint_factory()
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["torch_dtype"] = "float32"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert KimiVL.from_pretrained(ckpt, torch_dtype="auto").dtype == torch.float32


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"torch_dtype": torch.float32, "dtype": torch.bfloat16},
     r"torch_dtype=torch\.float32 and dtype=torch\.bfloat16 disagree; pass one of them"),
    ({"torch_dtype": "int8"}, r"torch_dtype 'int8' is not one of 'auto', 'bfloat16'"),
    ({"dtype": torch.float64}, r"torch_dtype torch\.float64 is not supported"),
])
def test_from_pretrained_bad_dtype_fails_before_download(monkeypatch: pytest.MonkeyPatch, kwargs: dict,
                                                          match: str) -> None:
    import huggingface_hub

    from kimi_agent.errors import ConfigError

    def no_download(*_: object, **__: object) -> str:
        raise AssertionError("downloaded before checking the dtype")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    with pytest.raises(ConfigError, match=match):
        KimiVL.from_pretrained("moonshotai/Kimi-VL-A3B-Instruct", **kwargs)


def test_from_pretrained_passes_revision_and_token_to_the_hub(small_checkpoint_factory: Callable[..., Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    ckpt = small_checkpoint_factory()
    seen: dict = {}

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:  # test double: no network here
        seen.update(kwargs, repo_id=repo_id)
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = KimiVL.from_pretrained("moonshotai/Kimi-VL-A3B-Instruct", revision="7a3c", token="hf_secret",
                                   torch_dtype=torch.float32)
    assert model.dtype == torch.float32
    assert (seen["repo_id"], seen["revision"], seen["token"]) == ("moonshotai/Kimi-VL-A3B-Instruct", "7a3c",
                                                                  "hf_secret")
    assert "*.safetensors" in seen["allow_patterns"]


@pytest.fixture
def stand_in_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A real local HTTP server in place of huggingface.co (test double: no network here). It answers
    every request with the status and `X-Error-Code` in the returned dict and records the requests."""
    import http.server
    import threading

    state: dict[str, Any] = {"status": 404, "code": "RevisionNotFound", "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["requests"].append((self.path, self.headers.get("Authorization")))
            self.send_response(state["status"])
            self.send_header("X-Error-Code", state["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    yield state
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def test_unknown_revision_is_one_clear_error_without_the_token(stand_in_hub: dict[str, Any]) -> None:
    with pytest.raises(ModelUnavailableError) as err:
        KimiVL.from_pretrained("moonshotai/Kimi-VL-A3B-Instruct", revision="no-such-branch", token="hf_secret")
    assert str(err.value) == ("moonshotai/Kimi-VL-A3B-Instruct has no revision 'no-such-branch' on the Hugging Face "
                              "hub; pass an existing branch, tag or commit.")
    asked = [(path, auth) for path, auth in stand_in_hub["requests"] if "no-such-branch" in path]
    assert asked == [("/api/models/moonshotai/Kimi-VL-A3B-Instruct/revision/no-such-branch", "Bearer hf_secret")]


def test_gated_repo_says_to_pass_a_token(stand_in_hub: dict[str, Any]) -> None:
    stand_in_hub.update(status=403, code="GatedRepo")
    with pytest.raises(ModelUnavailableError, match=r"^moonshotai/Kimi-VL-A3B-Instruct is gated on the Hugging Face "
                                                    r"hub; accept its terms and pass token=\.\.\."):
        KimiVL.from_pretrained("moonshotai/Kimi-VL-A3B-Instruct")
