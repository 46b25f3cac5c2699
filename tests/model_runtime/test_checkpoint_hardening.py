"""A model folder is untrusted input: every hostile file in it (the red-team probes of
notes/redteam-checkpoint.md, F1-F10) is refused with a typed error naming the file and field, quickly and
before any large allocation, and nothing in it is executed. Checkpoints are real files in the official
layout (the real tokenizer files, tiny random weights from conftest's `write_checkpoint`)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.errors import AgentError, ConfigError, WeightLoadError
from kimi_agent.model_runtime.chat_template import (
    MAX_RENDER_CHARS,
    ChatTemplate,
    ChatTemplateError,
    render_kimi_vl,
)
from kimi_agent.model_runtime.config import GenerationConfig, KimiVLConfig, read_json_object
from kimi_agent.model_runtime.image_processor import ImageProcessor, PreprocessorConfig
from kimi_agent.model_runtime.processor import KimiVLProcessor, ProcessorInputError
from kimi_agent.model_runtime.tokenizer import Tokenizer, load_ranks

REAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
PROCESSOR_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json", "tiktoken.model",
                   "chat_template.jinja", "generation_config.json")
CHAT = [{"role": "user", "content": "hi"}]


def _real_config(**text_overrides: Any) -> dict[str, Any]:
    cfg = json.loads((REAL_DIR / "config.json").read_text())
    cfg["text_config"].update(text_overrides)
    return cfg


def _snapshot(path: Path, **text_overrides: Any) -> Path:
    """The real processor files (no weights: the processor reads none), text_config overrides applied."""
    path.mkdir(parents=True, exist_ok=True)
    for f in PROCESSOR_FILES:
        shutil.copy(REAL_DIR / f, path / f)
    (path / "config.json").write_text(json.dumps(_real_config(**text_overrides)))
    return path


def _edit_json(file: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))


def _vocab(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _ranks(n: int) -> list[str]:
    return [f"{base64.b64encode(bytes([i])).decode()} {i}" for i in range(n)]


# --- F1: special-token names ----------------------------------------------------------------------------

@pytest.mark.parametrize(("token_id", "content", "message"), [
    ("163700", "", r"added_tokens_decoder\['163700'\]: 'content' must be a non-blank name"),
    ("163700", "  \t", r"added_tokens_decoder\['163700'\]: 'content' must be a non-blank name"),
    ("163700", "x" * 300, r"added_tokens_decoder\['163700'\]: 'content' must be a non-blank name of at most 256"),
    ("163841", "<|im_end|>", r"added_tokens_decoder\['163841'\]: special token '<\|im_end\|>' already names id "
                             r"163586"),
    ("163700", "<|reserved_token_163701|>", r"special token '<\|reserved_token_163701\|>' names both id 163700 "
                                             r"and id 163701"),
    ("5", "<|x|>", r"added_tokens_decoder\['5'\]: special token ids must be in \[163584, 163842\)"),
    ("²", "<|x|>", r"added_tokens_decoder\['²'\] needs an integer id"),
    ("9" * 5000, "<|x|>", r"needs an integer id"),
])
def test_bad_special_token_names_are_refused_at_load(tmp_path: Path, token_id: str, content: str,
                                                     message: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    _edit_json(snap / "tokenizer_config.json",
               lambda c: c["added_tokens_decoder"].__setitem__(token_id, {"content": content}))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message) as err:
        Tokenizer.from_dir(snap)
    assert "tokenizer_config.json" in str(err.value) and time.monotonic() - start < 10


def test_bos_token_in_transformers_object_form_is_accepted(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    _edit_json(snap / "tokenizer_config.json",
               lambda c: c.update(bos_token={"content": "[BOS]", "__type": "AddedToken"}))
    assert Tokenizer.from_dir(snap).bos_id == 163584
    assert KimiVLProcessor.from_pretrained(snap).chat_template.special_tokens["bos_token"] == "[BOS]"
    _edit_json(snap / "tokenizer_config.json", lambda c: c.update(bos_token={"content": 7}))
    with pytest.raises(ConfigError, match="'bos_token' must be a token string"):
        Tokenizer.from_dir(snap)


# --- F3 / F4: tiktoken.model ranks, and ids the model has no embedding for --------------------------------

@pytest.mark.parametrize(("lines", "message"), [
    ([*_ranks(4), "Zm9v 2"], r"line 5: duplicate rank 2 \(also on line 3\)"),
    ([*_ranks(4), "Zm9v 99999999999"], r"line 5: rank 99999999999 is out of range \[0, 1,048,318\)"),
    ([*_ranks(4), "Zm9v 4294967295"], r"line 5: rank 4294967295 is out of range"),
    ([*_ranks(4), "Zm9v -7"], r"line 5 is not 'base64-token rank' \(rank '-7' is not a non-negative integer\)"),
    ([*_ranks(4), "AA== 9"], r"line 5: duplicate token b'\\x00' \(rank 0 on line 1\)"),
    ([*_ranks(4), "Zm9v 9"], r"ranks must be exactly 0\.\.4 \(one per line\); rank 4 is missing"),
    ([], r"holds no tokens"),
])
def test_bad_ranks_are_a_config_error_naming_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    vocab = _vocab(tmp_path / "tiktoken.model", lines)
    with pytest.raises(ConfigError, match=message) as err:
        load_ranks(vocab)
    assert str(vocab) in str(err.value)


def test_a_duplicate_rank_never_reaches_tiktoken(tmp_path: Path) -> None:
    """tiktoken's Rust core panics (a BaseException that escapes `except Exception`) on duplicate ranks."""
    snap = _snapshot(tmp_path / "ckpt")
    lines = (snap / "tiktoken.model").read_bytes().splitlines()
    token = lines[300].split()[0]
    lines[300] = token + b" 5"
    (snap / "tiktoken.model").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ConfigError, match=r"tiktoken\.model: line 301: duplicate rank 5 \(also on line 6\)"):
        Tokenizer.from_dir(snap)


def test_plain_text_cannot_become_a_special_token_through_a_rank_collision(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    hello = base64.b64encode(b" hello").decode().encode()
    lines = [line if line.split()[0] != hello else hello + b" 163586"
             for line in (snap / "tiktoken.model").read_bytes().splitlines()]
    (snap / "tiktoken.model").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ConfigError, match=r"ranks must be exactly 0\.\.163583 .* rank 163,586 is used"):
        KimiVLProcessor.from_pretrained(snap)


def test_tokenizer_ids_must_have_embedding_rows(tmp_path: Path) -> None:
    # [PAD] 163838 and [UNK] 163839 are named by tokenizer_config.json; the model would have only 163,606 rows
    snap = _snapshot(tmp_path / "small_vocab", vocab_size=163_606)
    with pytest.raises(ConfigError, match=r"tokenizer_config\.json: special token '\[UNK\]' has id 163839, but "
                                          r".*config\.json key 'text_config\.vocab_size' is 163,606"):
        KimiVLProcessor.from_pretrained(snap)
    # text alone would encode to ids 0..163583: a 1024-row model cannot take them
    snap = _snapshot(tmp_path / "tiny_vocab", vocab_size=1024)
    _edit_json(snap / "config.json", lambda c: c.update(media_placeholder_token_id=1000))
    with pytest.raises(ConfigError, match=r"tiktoken\.model has 163,584 ranks, but .*'text_config\.vocab_size' "
                                          r"is 1,024"):
        KimiVLProcessor.from_pretrained(snap)


def test_the_placeholder_id_must_be_below_vocab_size() -> None:
    data = _real_config(vocab_size=1024)
    with pytest.raises(ConfigError, match=r"'media_placeholder_token_id' .* \(163,605\) must be below "
                                          r"text_config\.vocab_size \(1,024\)"):
        KimiVLConfig.from_dict(data)


def test_a_prompt_with_an_id_past_the_embedding_is_a_processor_error(tmp_path: Path) -> None:
    proc = KimiVLProcessor.from_pretrained(_snapshot(tmp_path / "ckpt"))
    assert proc.vocab_size == 163_840
    with pytest.raises(ProcessorInputError, match=r"token id 163841 .* no embedding for \(vocab_size 163,840\)"):
        proc(text="<|reserved_token_163841|>")
    assert proc(text="<|im_end|>")["input_ids"].tolist() == [[163586]]


# --- F2: the chat template is bounded ---------------------------------------------------------------------

BOMBS = {
    "nested loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
                     r"more than 2,000,000 steps"),
    "string times a huge int": ('{{ "a" * 3000000000 }}', r"'\*' would build 3,000,000,000"),
    "list times a huge int": ("{{ (range(100000)|list) * 100000 }}", r"'\*' would build 10,000,000,000"),
    "doubling with ~": ('{% set ns = namespace(x="ab") %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}'
                        "{% endfor %}{{ ns.x }}", r"'~' would build more than"),
    "doubling with a block set": ('{% set ns = namespace(x="ab") %}{% for i in range(40) %}{% set t %}{{ ns.x }}'
                                  "{{ ns.x }}{% endset %}{% set ns.x = t %}{% endfor %}{{ ns.x }}",
                                  r"a \{% set %\} block built a value of"),
    "nested references": ('{% set s = "a" * 8000000 %}{% set l = [s, s, s] %}{{ [l, l, l] }}',
                          r"an output would build more than"),
    "tojson indent": ("{{ messages|tojson(indent=100000000) }}", r"'tojson': indent must be an integer in \[0, 64\]"),
    "ljust": ('{{ "x".ljust(1000000000) }}', r"ljust\(\) would build about 1,000,000,000"),
    "format width": ('{{ "{:>999999999}".format(1) }}', r"format widths of 6\+ digits"),
    "printf width": ('{{ "%0999999999d" % 1 }}', r"format widths of 6\+ digits"),
    "replace": ('{{ ("a" * 1000000).replace("", "b" * 50) }}', r"replace\(\) would build about 51,000,050"),
    "indent": ('{{ ("\n" * 1000000)|indent(100000) }}', r"filter 'indent' would build"),
    "squaring": ("{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
                 r"'\*' would build an integer"),
    "recursive macro": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", r"nests or recurses too deeply"),
    "raise_exception": ('{{ raise_exception("boom") }}', r"failed to render: TemplateError: boom"),
    "undefined item": ("{{ messages[5].role }}", r"UndefinedError"),
    "division by zero": ("{{ 1 / 0 }}", r"ZeroDivisionError"),
    "sandbox escape": ("{{ messages.__class__.__mro__ }}", r"SecurityError"),
    "format escape": ('{{ "{0.__class__.__mro__}".format(messages) }}', r"SecurityError"),
    "lipsum": ("{{ lipsum(100000, max=100000) }}", r"'lipsum' is undefined"),
    "deep parentheses": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", r"does not compile: .*too deeply"),
    # N3: Python's own compile limits on jinja's generated code
    "25 nested for loops": ("{% for a in [1] %}" * 25 + "{% endfor %}" * 25,
                            r"does not compile: SyntaxError: too many statically nested blocks"),
    "120 nested ifs": ("{% if 1 %}" * 120 + "{% endif %}" * 120,
                       r"does not compile: IndentationError: too many levels of indentation"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_a_hostile_template_is_refused_at_load_naming_the_file(tmp_path: Path, case: str) -> None:
    source, message = BOMBS[case]
    snap = _snapshot(tmp_path / "ckpt")
    (snap / "chat_template.jinja").write_text(source)
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=message) as err:
        KimiVLProcessor.from_pretrained(snap)
    assert f"chat template {snap / 'chat_template.jinja'}" in str(err.value)
    assert time.monotonic() - start < 20


def test_a_template_that_does_not_compile_in_tokenizer_config_is_typed(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    (snap / "chat_template.jinja").unlink()
    _edit_json(snap / "tokenizer_config.json",
               lambda d: d.update(chat_template="{% for a in [1] %}" * 25 + "{% endfor %}" * 25))
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config\.json \(key 'chat_template'\) does not compile: "
                                                r"SyntaxError"):
        KimiVLProcessor.from_pretrained(snap)


def test_a_template_that_explodes_on_one_conversation_fails_that_render_only(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    (snap / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m.role == 'system' %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}{{ m.role }}{% endfor %}")
    proc = KimiVLProcessor.from_pretrained(snap)
    assert proc.apply_chat_template(CHAT, add_generation_prompt=False) == "user"
    with pytest.raises(ChatTemplateError, match=r"more than 2,000,000 steps") as err:
        proc(messages=[{"role": "system", "content": "s"}, *CHAT])
    assert isinstance(err.value, AgentError)  # serve answers 400 with the message, not a traceback


def test_the_prompt_size_is_bounded(tmp_path: Path) -> None:
    tpl = ChatTemplate('{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}')
    half = "a" * (MAX_RENDER_CHARS // 2 + 1)
    with pytest.raises(ChatTemplateError, match=r"the prompt is longer than 33,554,432 characters"):
        tpl.render([{"role": "user", "content": half}])


def test_ordinary_template_features_still_render() -> None:
    tpl = ChatTemplate('{{ "{:>5}|{}|{:.3f}".format(1, "ab", 2.5) }}{{ "%5d|%s|%.2f" % (3, "x", 1.5) }}'
                       '{{ [1, 2]|join(", ") }}{{ "a b"|replace(" ", "_") }}{{ {"a": 1}|tojson }}'
                       '{% for m in messages %}{{ m.role ~ ":" ~ m.content }}{% endfor %}{{ bos_token }}',
                       special_tokens={"bos_token": "[BOS]"})
    assert tpl.render(CHAT) == '    1|ab|2.500    3|x|1.501, 2a_b{"a": 1}user:hi[BOS]'
    real = ChatTemplate.from_dir(REAL_DIR)
    assert real.render(CHAT, add_generation_prompt=True) == render_kimi_vl(CHAT, add_generation_prompt=True)


# --- F5: preprocessor_config.json -------------------------------------------------------------------------

@pytest.mark.parametrize(("edit", "message"), [
    ({"patch_size": 100_000}, r"key 'patch_size' must be in \[1, 64\], got 100,000"),
    ({"patch_size": 64, "in_token_limit": 100_000}, r"key 'in_token_limit' must be in \[1, 8,192\] for 64-px"),
    ({"in_token_limit": 10**9}, r"key 'in_token_limit' must be in \[1, 171,196\]"),
    ({"merge_kernel_size": [True, True]}, r"key 'merge_kernel_size' must be two positive integers"),
    ({"merge_kernel_size": [100, 100]}, r"key 'merge_kernel_size' must be two ints in \[1, 16\]"),
    ({"image_mean": [float("nan")] * 3}, r"key 'image_mean' must hold finite numbers, got \[nan, nan, nan\]"),
    ({"image_std": [0.5, float("inf"), 0.5]}, r"key 'image_std' must hold finite numbers > 0"),
    ({"image_std": [0.5, 0.0, 0.5]}, r"key 'image_std' must hold finite numbers > 0"),
    ({"image_std": [0.5, -0.5, 0.5]}, r"key 'image_std' must hold finite numbers > 0"),
])
def test_preprocessor_values_are_bounded(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    f = tmp_path / "preprocessor_config.json"
    raw = json.loads((REAL_DIR / "preprocessor_config.json").read_text())
    f.write_text(json.dumps({**raw, **edit}))
    with pytest.raises(ConfigError, match=message) as err:
        PreprocessorConfig.from_file(f)
    assert str(f) in str(err.value)


def test_an_overridden_token_limit_is_bounded_too() -> None:
    with pytest.raises(ConfigError, match=r"in_token_limit must be in \[1, 171,196\]"):
        ImageProcessor(in_token_limit=10**8)


@pytest.mark.parametrize(("edit", "message"), [
    ({"patch_size": 16}, r"preprocessor_config\.json: key 'patch_size' is 16, but .*config\.json key "
                         r"'vision_config\.patch_size' is 14; they must agree"),
    ({"merge_kernel_size": [4, 4]}, r"key 'merge_kernel_size' is \[4, 4\], but .*'vision_config\.merge_kernel_size' "
                                    r"is \[2, 2\]"),
])
def test_preprocessor_must_agree_with_the_vision_tower(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    _edit_json(snap / "preprocessor_config.json", lambda c: c.update(edit))
    with pytest.raises(ConfigError, match=message):
        KimiVLProcessor.from_pretrained(snap)


# --- F6: the KV cache is sized before it is allocated -----------------------------------------------------

def test_a_kv_cache_larger_than_free_memory_is_refused_before_allocating(
        small_checkpoint_factory: Callable[..., Path]) -> None:
    """32 MB of weights whose config makes serve's default cache (8 slots x 32k tokens) about 51 GiB."""
    import torch

    from kimi_agent.model_runtime import KimiVL
    from kimi_agent.model_runtime.kv_cache import FullKVCache, KVCacheSizeError

    ckpt = small_checkpoint_factory(kv_lora_rank=16384, qk_rope_head_dim=1024)
    model = KimiVL.from_pretrained(ckpt, device="cpu", dtype=torch.float32)
    with pytest.raises(KVCacheSizeError, match=r"the KV cache needs [\d,.]+ GiB \(num_hidden_layers 3 x batch 8 x "
                                               r"max_len 4,194,304 x \(kv_lora_rank 16384 \+ qk_rope_head_dim "
                                               r"1024\) in torch\.float32\), but cpu has [\d,.]+ GiB free") as err:
        model.new_cache(8, 1 << 22)
    assert isinstance(err.value, ConfigError)
    with pytest.raises(KVCacheSizeError, match=r"num_attention_heads 2"):
        FullKVCache(model.config.text, 8, 1 << 22, device="cpu", dtype=torch.float32)
    assert model.new_cache(1, 16).data.shape == (3, 1, 16, 16384 + 1024)


# --- F7 / F10: every JSON file of the folder goes through one checked reader -------------------------------

JSON_FILES = {
    "config.json": lambda d: KimiVLConfig.from_pretrained_dir(d),
    "tokenizer_config.json": lambda d: Tokenizer.from_dir(d),
    "preprocessor_config.json": lambda d: ImageProcessor.from_dir(d),
    "generation_config.json": lambda d: GenerationConfig.from_pretrained_dir(d),
    "processor: config.json": lambda d: KimiVLProcessor.from_pretrained(d),
}
BAD_JSON = {
    "deep nesting": ("[" * 200_000 + "]" * 200_000, r"nest too deeply"),
    "a list": ("[1, 2]", r"the top level must be a JSON object, got a list"),
    "invalid UTF-8": (b"\xff\xfe{}", r"is not valid JSON \(UnicodeDecodeError"),
    "a 5000-digit int": ('{"a": ' + "9" * 5000 + "}", r"Exceeds the limit \(4300 digits\)"),
    "not JSON": ("{not json", r"is not valid JSON \(JSONDecodeError"),
}


N5_READERS: dict[str, list[Callable[[Path], Any]]] = {
    "config.json": [KimiVLConfig.from_pretrained_dir],
    "generation_config.json": [GenerationConfig.from_pretrained_dir],
    "tokenizer_config.json": [Tokenizer.from_dir, ChatTemplate.from_dir, KimiVLProcessor.from_pretrained],
    "preprocessor_config.json": [ImageProcessor.from_dir, KimiVLProcessor.from_pretrained],
    "chat_template.jinja": [ChatTemplate.from_dir, KimiVLProcessor.from_pretrained],
}


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
@pytest.mark.parametrize("name", list(N5_READERS))
def test_a_model_file_that_is_not_a_regular_file_is_never_read_as_missing(tmp_path: Path, name: str,
                                                                           kind: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    target = snap / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    else:
        target.symlink_to("/dev/null")
    for reader in N5_READERS[name]:
        start = time.monotonic()
        with pytest.raises(ConfigError, match=re.escape(f"{target} is not a regular file")):
            reader(snap)
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_config_json_or_index_that_is_not_a_regular_file_is_named(tmp_path: Path, kind: str) -> None:
    """The folder-level gates too: config.json when the folder is resolved, the weight index when the
    weights are listed (a FIFO was read as 'has no config.json' / 'no weights')."""
    from kimi_agent.errors import ModelUnavailableError, WeightLoadError
    from kimi_agent.model_runtime.hub import INDEX_FILE, resolve_model_dir
    from kimi_agent.model_runtime.weights import read_weight_map

    for name, call, error in (("config.json", resolve_model_dir, ModelUnavailableError),
                              (INDEX_FILE, read_weight_map, WeightLoadError)):
        snap = _snapshot(tmp_path / f"{kind}-{name}")
        target = snap / name
        target.unlink(missing_ok=True)
        os.mkfifo(target) if kind == "fifo" else target.mkdir()
        with pytest.raises(error, match=re.escape(f"{target} is not a regular file")):
            call(snap)


@pytest.mark.parametrize("bad", list(BAD_JSON))
@pytest.mark.parametrize("reader", list(JSON_FILES))
def test_unreadable_json_is_a_config_error_naming_the_file(tmp_path: Path, reader: str, bad: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    name = reader.removeprefix("processor: ")
    content, message = BAD_JSON[bad]
    target = snap / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message) as err:
        JSON_FILES[reader](snap)
    assert str(target) in str(err.value)


@pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs /proc")
@pytest.mark.parametrize("name", ["config.json", "chat_template.jinja", "tokenizer_config.json"])
def test_a_proc_file_in_place_of_a_model_file_is_a_config_error(tmp_path: Path, name: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    (snap / name).unlink()
    (snap / name).symlink_to("/proc/self/pagemap")
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        KimiVLProcessor.from_pretrained(snap)


@pytest.mark.parametrize(("name", "size", "message"), [
    ("config.json", 1_500_000_000, r"config\.json is 1,500,000,000 bytes, over this runtime's bound of 16,777,216"),
    ("tiktoken.model", 1 << 30, r"tiktoken\.model is 1,073,741,824 bytes, over this runtime's bound of 67,108,864"),
    ("chat_template.jinja", 5 << 20, r"chat_template\.jinja is 5,242,880 bytes, over this runtime's bound of "
                                     r"1,048,576"),
])
def test_oversized_files_are_refused_before_reading(tmp_path: Path, name: str, size: int, message: str) -> None:
    snap = _snapshot(tmp_path / "ckpt")
    with open(snap / name, "r+b") as f:  # sparse: costs no disk
        f.truncate(size)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message):
        KimiVLProcessor.from_pretrained(snap)
    assert time.monotonic() - start < 10


def test_the_json_reader_returns_a_dict_or_the_given_error(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"a": [1, {"b": null}]}')
    assert read_json_object(f) == {"a": [1, {"b": None}]}
    with pytest.raises(WeightLoadError, match=r"x\.json\.missing does not exist"):
        read_json_object(tmp_path / "x.json.missing", error=WeightLoadError)
    with pytest.raises(ConfigError, match=r"is not a regular file"):
        read_json_object(tmp_path)
    os.mkfifo(tmp_path / "fifo.json")  # opening it for reading must not wait for a writer
    with pytest.raises(ConfigError, match=r"fifo\.json is not a regular file"):
        read_json_object(tmp_path / "fifo.json")


# --- F8: doctor reads the index with the loader's checks --------------------------------------------------

@pytest.mark.parametrize(("index", "message"), [
    ("{not json", r"is not valid JSON"),
    ("{}", r"missing field 'weight_map'"),
    ('{"weight_map": [1]}', r"field 'weight_map' must be an object"),
    ('{"weight_map": {"a": ["x"]}}', r"field 'weight_map\.a' must be a shard file name"),
    ('{"weight_map": {"a": "/etc/passwd", "b": "../config.json"}}', r"must be a file name inside the checkpoint"),
])
def test_doctor_reports_a_malformed_index_instead_of_crashing(tmp_path: Path, index: str, message: str) -> None:
    from kimi_agent.doctor import _model

    snap = _snapshot(tmp_path / "ckpt")
    (snap / "model.safetensors.index.json").write_text(index)
    check = _model(str(snap))
    assert not check.ok and check.optional
    assert "model.safetensors.index.json" in check.detail
    assert re.search(message, check.detail), check.detail


def test_doctor_accepts_a_whole_snapshot(tiny_checkpoint: Path) -> None:
    from kimi_agent.doctor import _model

    check = _model(str(tiny_checkpoint))
    assert check.ok and check.detail.endswith("(3 shards)")


# --- N4: per-token attention activations are bounded --------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"num_attention_heads": 256, "qk_nope_head_dim": 1024, "v_head_dim": 1024},
     r"num_attention_heads \* \(qk_nope_head_dim \+ qk_rope_head_dim \+ v_head_dim\) is 540,672, over this "
     r"runtime's bound of 65,536"),
    ({"num_attention_heads": 1024, "kv_lora_rank": 512},
     r"num_attention_heads \* \(qk_nope_head_dim|num_attention_heads \* kv_lora_rank"),
    ({"num_attention_heads": 16, "kv_lora_rank": 16384},
     r"num_attention_heads \* kv_lora_rank is 262,144, over this runtime's bound of 65,536"),
])
def test_attention_widths_are_bounded(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        KimiVLConfig.from_dict(_real_config(**overrides), "config.json")
    assert "key 'text_config.num_attention_heads' in config.json" in str(err.value)


def test_deepseek_v3_attention_shape_is_still_accepted() -> None:
    cfg = KimiVLConfig.from_dict(_real_config(num_attention_heads=128, kv_lora_rank=512), "config.json")
    assert cfg.text.num_attention_heads == 128


# --- F9: generation_config.json ---------------------------------------------------------------------------

@pytest.mark.parametrize(("edit", "message"), [
    ({"temperature": float("nan")}, r"'temperature' .* must be a finite number in \[0, 2\], got nan"),
    ({"temperature": float("inf")}, r"'temperature' .* got inf"),
    ({"temperature": -0.5}, r"'temperature' .* got -0\.5"),
    ({"temperature": 3.0}, r"'temperature' .* got 3\.0"),
    ({"top_p": float("nan")}, r"'top_p' .* must be a finite number in \(0, 1\], got nan"),
    ({"top_p": 0}, r"'top_p' .* got 0\.0"),
    ({"eos_token_id": [163585, -1]}, r"'eos_token_id' .* must be a token id or a list of 1 to 64 token ids"),
    ({"eos_token_id": 10**20}, r"'eos_token_id'"),
    ({"eos_token_id": True}, r"'eos_token_id'"),
    ({"pad_token_id": -3}, r"'pad_token_id' .* must be a token id in \[0, 1,048,576\), got -3"),
])
def test_generation_config_values_are_checked(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    f = tmp_path / "generation_config.json"
    f.write_text(json.dumps({**json.loads((REAL_DIR / "generation_config.json").read_text()), **edit}))
    with pytest.raises(ConfigError, match=message) as err:
        GenerationConfig.from_pretrained_dir(tmp_path)
    assert "generation_config.json" in str(err.value)
