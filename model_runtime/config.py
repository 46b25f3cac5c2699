"""Typed, frozen configs of Kimi-VL, parsed once from the official `config.json` and
`generation_config.json`.

Unknown keys are ignored; a missing, mistyped or out-of-range key raises `ConfigError` naming the
key and the file. Every size has an upper bound (`TEXT_LIMITS`, `VISION_LIMITS`), so an absurd config
fails here at once instead of spending minutes building modules. Features this runtime does not
implement (q LoRA, RoPE scaling, other routers) are rejected rather than silently mis-modelled.
No torch import: configs are cheap to read anywhere.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_agent.errors import ConfigError

ARCHITECTURES = ("KimiVLForConditionalGeneration",)
DEFAULT_EOS_IDS = (163585,)  # [EOS]
CHECKPOINT_DTYPES = ("bfloat16", "float16", "float32")
_MISSING = object()

# Inclusive (low, high) bounds per integer field. Each high is several times the largest value in a
# released DeepSeek-V3-family checkpoint (Kimi-VL-A3B, DeepSeek-V3, Kimi-K2), so real configs pass
# and a typo such as num_hidden_layers: 100000 fails before any module is built.
TEXT_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 20),                      # Kimi-VL 163,840
    "hidden_size": (1, 65_536),                      # 2,048 (DeepSeek-V3 7,168)
    "intermediate_size": (1, 262_144),               # 11,264 (DeepSeek-V3 18,432)
    "moe_intermediate_size": (1, 65_536),            # 1,408
    "num_hidden_layers": (1, 256),                   # 27 (DeepSeek-V3 61)
    "num_attention_heads": (1, 1_024),               # 16 (DeepSeek-V3 128)
    "n_shared_experts": (1, 64),                     # 2
    "n_routed_experts": (1, 1_024),                  # 64 (Kimi-K2 384)
    "num_experts_per_tok": (1, 1_024),               # 6
    "first_k_dense_replace": (0, 256),               # 1
    "moe_layer_freq": (1, 256),                      # 1
    "kv_lora_rank": (1, 16_384),                     # 512
    "qk_rope_head_dim": (2, 1_024),                  # 64
    "qk_nope_head_dim": (1, 1_024),                  # 128
    "v_head_dim": (1, 1_024),                        # 128
    "max_position_embeddings": (1, 1 << 24),         # 131,072
}
VISION_LIMITS: dict[str, tuple[int, int]] = {
    "patch_size": (1, 64),                           # 14
    "num_attention_heads": (1, 256),                 # 16
    "num_hidden_layers": (1, 256),                   # 27
    "hidden_size": (1, 16_384),                      # 1,152
    "intermediate_size": (1, 65_536),                # 4,304
    "init_pos_emb_height": (1, 1_024),               # 64
    "init_pos_emb_width": (1, 1_024),                # 64
}
MAX_MERGE_KERNEL = 16                                # 2
# Per-token widths of the attention activations prefill materialises per head (`mla_naive` builds q, k, v
# of num_attention_heads x these dims for every prompt token): 8x Kimi-VL-A3B's (16 heads), which also
# admits DeepSeek-V3 (128 heads), so a tiny checkpoint cannot demand GBs of activations per prompt token.
MAX_ATTENTION_WIDTHS: dict[str, tuple[tuple[str, ...], int]] = {
    "num_attention_heads * (qk_nope_head_dim + qk_rope_head_dim + v_head_dim)":
        (("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"), 65_536),   # 16 x 320 = 5,120; DSV3 40,960
    "num_attention_heads * kv_lora_rank": (("kv_lora_rank",), 65_536),      # 16 x 512 = 8,192; DSV3 65,536
}
# Routed expert modules in the whole model (MoE layers x n_routed_experts): building them dominates
# load time (about 1 ms each on the meta device). Kimi-VL has 1,664; DeepSeek-V3 14,848; Kimi-K2 23,040.
MAX_ROUTED_EXPERT_MODULES = 32_768
# Inclusive (low, high) bounds per float field; values must also be finite (JSON NaN/Infinity parse).
FLOAT_LIMITS: dict[str, tuple[float, float]] = {
    "rms_norm_eps": (1e-12, 1.0),                    # 1e-5
    "rope_theta": (1.0, 1e12),                       # 800,000
    "routed_scaling_factor": (1e-6, 1e6),            # 2.446
}


class _Reader:
    """Typed access to one JSON object of one file; errors name `file:prefix.key`."""

    def __init__(self, data: Any, file: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {prefix or 'top level'} must be a JSON object")
        self.data, self.file, self.prefix = data, file, prefix

    def _where(self, key: str) -> str:
        return f"key '{self.prefix}{key}' in {self.file}"

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(f"missing {self._where(key)}")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{self._where(key)} must be {kind.__name__}, got {value!r}")
        return value

    def bounded(self, key: str, limits: dict[str, tuple[int, int]], default: Any = _MISSING) -> int:
        """An int within `limits[key]` (inclusive); the error names the key, the bound and the value."""
        low, high = limits[key]
        value = self.get(key, int, default)
        if value < low:
            raise ConfigError(f"{self._where(key)} must be >= {low}, got {value}")
        if value > high:
            raise ConfigError(f"{self._where(key)} must be <= {high:,} (this runtime's bound), got {value:,}")
        return value

    def finite(self, key: str, default: Any = _MISSING) -> float:
        """A finite float within `FLOAT_LIMITS[key]` (inclusive)."""
        low, high = FLOAT_LIMITS[key]
        value = self.get(key, float, default)
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{self._where(key)} must be a finite number in [{low:g}, {high:g}], got {value!r}")
        return value

    def null(self, key: str, why: str) -> None:
        if self.data.get(key) is not None:
            raise ConfigError(f"{self._where(key)} must be null ({why}), got {self.data[key]!r}")

    def equal(self, key: str, allowed: tuple[Any, ...], default: Any = _MISSING) -> Any:
        value = self.data.get(key, default)
        if value is _MISSING:
            raise ConfigError(f"missing {self._where(key)}")
        if value not in allowed:
            raise ConfigError(f"{self._where(key)} must be one of {allowed}, got {value!r}")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self.file, f"{self.prefix}{key}.")


@dataclass(frozen=True, slots=True)
class MoonViTConfig:
    """MoonViT vision encoder (`vision_config`)."""

    patch_size: int
    num_attention_heads: int
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    init_pos_emb_height: int
    init_pos_emb_width: int
    merge_kernel_size: tuple[int, int]
    rope_theta: float = 10000.0  # not in config.json; fixed in the reference code
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_reader(cls, r: _Reader) -> MoonViTConfig:
        merge = r.get("merge_kernel_size", list, [2, 2])
        if len(merge) != 2 or not all(isinstance(m, int) and not isinstance(m, bool) and 0 < m <= MAX_MERGE_KERNEL
                                      for m in merge):
            raise ConfigError(f"{r._where('merge_kernel_size')} must be two ints in [1, {MAX_MERGE_KERNEL}], "
                              f"got {merge!r}")
        cfg = cls(
            patch_size=r.bounded("patch_size", VISION_LIMITS),
            num_attention_heads=r.bounded("num_attention_heads", VISION_LIMITS),
            num_hidden_layers=r.bounded("num_hidden_layers", VISION_LIMITS),
            hidden_size=r.bounded("hidden_size", VISION_LIMITS),
            intermediate_size=r.bounded("intermediate_size", VISION_LIMITS),
            init_pos_emb_height=r.bounded("init_pos_emb_height", VISION_LIMITS),
            init_pos_emb_width=r.bounded("init_pos_emb_width", VISION_LIMITS),
            merge_kernel_size=(merge[0], merge[1]),
        )
        if cfg.hidden_size % cfg.num_attention_heads or cfg.head_dim % 4:
            raise ConfigError(f"{r._where('hidden_size')}: head dim must be a multiple of 4 for 2D RoPE")
        return cfg


@dataclass(frozen=True, slots=True)
class DeepseekV3TextConfig:
    """DeepSeek-V3 language model (`text_config`): MLA attention without q LoRA, sigmoid MoE."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    n_shared_experts: int
    n_routed_experts: int
    num_experts_per_tok: int
    routed_scaling_factor: float
    norm_topk_prob: bool
    first_k_dense_replace: int
    moe_layer_freq: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    kv_layernorm_eps: float = 1e-6  # the reference builds kv_a_layernorm with the class default

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        return self.qk_head_dim ** -0.5

    def is_moe_layer(self, i: int) -> bool:
        return i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0

    @classmethod
    def from_reader(cls, r: _Reader) -> DeepseekV3TextConfig:
        r.null("q_lora_rank", "only the plain q_proj of Kimi-VL-A3B is implemented")
        r.null("rope_scaling", "RoPE scaling is not implemented")
        r.equal("scoring_func", ("sigmoid",))
        r.equal("topk_method", ("noaux_tc",))
        r.equal("hidden_act", ("silu",), "silu")
        if r.get("n_group", int, 1) != 1 or r.get("topk_group", int, 1) != 1:
            raise ConfigError(f"{r._where('n_group')}: only n_group = topk_group = 1 is implemented")
        if r.get("tie_word_embeddings", bool, False):
            raise ConfigError(f"{r._where('tie_word_embeddings')}: tied embeddings are not implemented")
        sizes = {key: r.bounded(key, TEXT_LIMITS) for key in TEXT_LIMITS}
        cfg = cls(
            **sizes,
            routed_scaling_factor=r.finite("routed_scaling_factor"),
            norm_topk_prob=r.get("norm_topk_prob", bool),
            rms_norm_eps=r.finite("rms_norm_eps"),
            rope_theta=r.finite("rope_theta"),
        )
        if cfg.num_experts_per_tok > cfg.n_routed_experts:
            raise ConfigError(f"{r._where('num_experts_per_tok')} ({cfg.num_experts_per_tok}) exceeds "
                              f"n_routed_experts ({cfg.n_routed_experts})")
        if cfg.qk_rope_head_dim % 2:
            raise ConfigError(f"{r._where('qk_rope_head_dim')} must be even, got {cfg.qk_rope_head_dim}")
        if cfg.first_k_dense_replace > cfg.num_hidden_layers:
            raise ConfigError(f"{r._where('first_k_dense_replace')} ({cfg.first_k_dense_replace}) exceeds "
                              f"num_hidden_layers ({cfg.num_hidden_layers})")
        for product, (dims, bound) in MAX_ATTENTION_WIDTHS.items():
            width = cfg.num_attention_heads * sum(getattr(cfg, d) for d in dims)
            if width > bound:
                raise ConfigError(f"{r._where('num_attention_heads')}: {product} is {width:,}, over this runtime's "
                                  f"bound of {bound:,} (prefill holds that many activations per prompt token)")
        experts = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers)) * cfg.n_routed_experts
        if experts > MAX_ROUTED_EXPERT_MODULES:
            raise ConfigError(f"{r._where('n_routed_experts')}: {cfg.n_routed_experts} routed experts in each MoE "
                              f"layer make {experts:,} expert modules, over this runtime's bound of "
                              f"{MAX_ROUTED_EXPERT_MODULES:,} (check num_hidden_layers and n_routed_experts)")
        return cfg


@dataclass(frozen=True, slots=True)
class KimiVLConfig:
    """The whole checkpoint: vision tower, text model, the image placeholder id, and the dtype its
    tensors are stored in (`torch_dtype`, what `from_pretrained(torch_dtype="auto")` loads)."""

    vision: MoonViTConfig
    text: DeepseekV3TextConfig
    media_placeholder_token_id: int
    torch_dtype: str = "bfloat16"

    @classmethod
    def from_dict(cls, data: Any, file: str = "config.json") -> KimiVLConfig:
        r = _Reader(data, file)
        archs = r.get("architectures", list, list(ARCHITECTURES))
        unknown = [a for a in archs if a not in ARCHITECTURES]
        if unknown or not archs:
            raise ConfigError(f"key 'architectures' in {file}: unsupported architecture {archs!r}; "
                              f"this runtime implements {ARCHITECTURES[0]}")
        text = DeepseekV3TextConfig.from_reader(r.sub("text_config"))
        placeholder = r.get("media_placeholder_token_id", int)
        if not 0 <= placeholder < TEXT_LIMITS["vocab_size"][1]:
            raise ConfigError(f"{r._where('media_placeholder_token_id')} must be a token id in "
                              f"[0, {TEXT_LIMITS['vocab_size'][1]:,}), got {placeholder}")
        if placeholder >= text.vocab_size:
            raise ConfigError(f"{r._where('media_placeholder_token_id')} ({placeholder:,}) must be below "
                              f"text_config.vocab_size ({text.vocab_size:,}): the embedding has no such row")
        return cls(
            vision=MoonViTConfig.from_reader(r.sub("vision_config")),
            text=text,
            media_placeholder_token_id=placeholder,
            torch_dtype=r.equal("torch_dtype", CHECKPOINT_DTYPES, "bfloat16"),
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> KimiVLConfig:
        return cls.from_dict(_read_json(Path(path) / "config.json"), str(Path(path) / "config.json"))


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Decoding defaults of `generation_config.json` (absent file -> greedy with the known stops)."""

    eos_token_ids: tuple[int, ...] = DEFAULT_EOS_IDS
    bos_token_id: int | None = 163584
    pad_token_id: int | None = 163838
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def from_dict(cls, data: Any, file: str = "generation_config.json") -> GenerationConfig:
        r = _Reader(data, file)
        ids = TEXT_LIMITS["vocab_size"][1]
        eos = data.get("eos_token_id", list(DEFAULT_EOS_IDS))
        eos = [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos
        if not isinstance(eos, list) or not eos or len(eos) > 64 or not all(
                isinstance(e, int) and not isinstance(e, bool) and 0 <= e < ids for e in eos):
            raise ConfigError(f"key 'eos_token_id' in {file} must be a token id or a list of 1 to 64 token ids "
                              f"in [0, {ids:,}), got {_short(eos)}")
        special = {key: r.get(key, int, None) for key in ("bos_token_id", "pad_token_id")}
        for key, value in special.items():
            if value is not None and not 0 <= value < ids:
                raise ConfigError(f"{r._where(key)} must be a token id in [0, {ids:,}), got {_short(value)}")
        # A client's temperature is finite in [0, 2] (serving/protocol.py); the checkpoint's default too.
        temperature = r.get("temperature", float, 1.0)
        if not (math.isfinite(temperature) and 0 <= temperature <= 2):
            raise ConfigError(f"{r._where('temperature')} must be a finite number in [0, 2], got {temperature!r}")
        top_p = r.get("top_p", float, 1.0)
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise ConfigError(f"{r._where('top_p')} must be a finite number in (0, 1], got {top_p!r}")
        return cls(eos_token_ids=tuple(eos), bos_token_id=special["bos_token_id"],
                   pad_token_id=special["pad_token_id"], do_sample=r.get("do_sample", bool, False),
                   temperature=temperature, top_p=top_p)

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> GenerationConfig:
        file = Path(path) / "generation_config.json"
        return cls.from_dict(_read_json(file), str(file)) if model_file_exists(file) else cls()


# Size bounds on the files of a model folder, checked by stat before reading (the real ones are a few
# KB, the index about 60 KB, tiktoken.model 2.2 MB): an absurd file fails at once, not after GBs of parsing.
MAX_JSON_BYTES = 16 << 20
MAX_TEXT_BYTES = 1 << 20                             # chat_template.jinja (the real one is 1.3 KB)
MAX_VOCAB_BYTES = 64 << 20                           # tiktoken.model


def model_file_exists(path: str | Path, *, error: type[Exception] = ConfigError) -> bool:
    """Whether the optional model file `path` exists. One that exists but is not a regular file (a FIFO,
    directory, socket or device; a symlink is followed) raises `error` naming it: never read as missing."""
    if not os.path.lexists(path):
        return False
    try:
        mode = os.stat(path).st_mode
    except OSError as e:  # a dangling or looping symlink, a permission problem
        raise error(f"cannot read {path} ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{path} is not a regular file")
    return True


def read_file_bytes(path: str | Path, *, max_bytes: int, error: type[Exception] = ConfigError) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes` (checked with fstat before reading, and
    again while reading, for /proc-style files that report size 0). Any failure raises `error` naming the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise error(f"{path} is not a regular file")
            if info.st_size > max_bytes:
                raise error(f"{path} is {info.st_size:,} bytes, over this runtime's bound of {max_bytes:,} bytes")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(max_bytes + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or type(e).__name__})") from None
    if len(data) > max_bytes:
        raise error(f"{path} holds more than this runtime's bound of {max_bytes:,} bytes")
    return data


def read_text_file(path: str | Path, *, max_bytes: int = MAX_TEXT_BYTES, error: type[Exception] = ConfigError) -> str:
    """`read_file_bytes` decoded as UTF-8; invalid UTF-8 raises `error` naming the file and offset."""
    data = read_file_bytes(path, max_bytes=max_bytes, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path} is not valid UTF-8 (byte {e.start})") from None


def read_json_object(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, error: type[Exception] = ConfigError,
                     expect: str = "a JSON object") -> dict[str, Any]:
    """The top-level JSON object of `path`, the one reader of every JSON file in a model folder.

    Missing, unreadable, special or oversized files, invalid UTF-8 or JSON, nesting deeper than Python's
    stack, integers past Python's digit limit and a top level that is not an object (`expect` describes
    what it should be) all raise `error` (default `ConfigError`) naming the file; nothing else escapes.
    """
    data = read_file_bytes(path, max_bytes=max_bytes, error=error)
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"{path} is not JSON this runtime can read: its arrays or objects nest too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({type(e).__name__}: {e})") from None
    except ValueError as e:  # an integer past Python's str -> int digit limit
        raise error(f"{path} is not JSON this runtime can read ({e})") from None
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(value), "null")
        raise error(f"{path}: the top level must be {expect}, got {kind}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_json(file: Path) -> dict[str, Any]:
    return read_json_object(file)
