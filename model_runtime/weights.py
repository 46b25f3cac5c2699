"""Loading the official Kimi-VL safetensors: build on the meta device, stream shards, assign.

The model's module attribute names equal the checkpoint's tensor names, so the name table is
checkpoint name -> parameter name (the identity today; renames would go there, not in regexes).
Loading is total: every parameter must come from exactly one tensor of the right shape and a float
dtype, and every tensor in the checkpoint must be a parameter or an explicitly ignored name. The
index and every shard it names are checked before any tensor is read. Anything else raises
`WeightLoadError` naming the tensor, field and file. Checkpoints are untrusted input: shard names
must be plain file names inside the checkpoint directory.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from kimi_agent.errors import ConfigError, WeightLoadError
from kimi_agent.model_runtime.config import KimiVLConfig, model_file_exists
from kimi_agent.model_runtime.device import TORCH_DTYPE_NAMES
from kimi_agent.model_runtime.hub import INDEX_FILE, parse_index  # parse_index: torch-free, doctor uses it

SINGLE_FILE = "model.safetensors"
# Non-persistent buffers the reference saved by accident; we recompute RoPE frequencies in fp32.
IGNORED_CHECKPOINT_SUFFIXES = ("self_attn.rotary_emb.inv_freq",)
# Stored dtypes a parameter may have (safetensors header names). Released Kimi-VL checkpoints are
# bf16; fp16/fp32 conversions load too. Integer, bool and fp8 tensors would need dequantization this
# runtime does not do; float64 is never written for this family and would double host memory.
LOADABLE_DTYPES = ("BF16", "F16", "F32")
# `from_pretrained(torch_dtype=...)` accepts torch dtypes or the names of device.TORCH_DTYPE_NAMES;
# "auto" = config.json's.


def is_ignored(name: str) -> bool:
    return name.endswith(IGNORED_CHECKPOINT_SUFFIXES)


def build_on_meta(config: KimiVLConfig) -> nn.Module:
    """A KimiVL whose parameters live on the meta device (no memory, shapes only)."""
    from kimi_agent.model_runtime.kimi_vl import KimiVL

    with torch.device("meta"):
        return KimiVL(config)


def name_table(model: nn.Module) -> dict[str, str]:
    """Checkpoint tensor name -> parameter name."""
    return {name: name for name, _ in model.named_parameters()}


def resolve_torch_dtype(torch_dtype: torch.dtype | str | None,
                        dtype: torch.dtype | str | None = None) -> torch.dtype | Literal["auto"]:
    """The dtype to load in, from `torch_dtype` (transformers' name) or its alias `dtype` (one of
    them, or both equal): a torch dtype, a name such as "bfloat16", or "auto" (returned as is: the
    caller reads the checkpoint's `torch_dtype`). Neither given -> bfloat16. Checked before any
    download, so a typo costs nothing."""
    chosen = [_normalize_dtype(d) for d in (torch_dtype, dtype) if d is not None]
    if len(chosen) == 2 and chosen[0] != chosen[1]:
        raise ConfigError(f"torch_dtype={torch_dtype!r} and dtype={dtype!r} disagree; pass one of them")
    return chosen[0] if chosen else torch.bfloat16


def _normalize_dtype(value: torch.dtype | str) -> torch.dtype | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        if value not in TORCH_DTYPE_NAMES:
            raise ConfigError(f"torch_dtype {value!r} is not one of 'auto', {', '.join(map(repr, TORCH_DTYPE_NAMES))}")
        value = getattr(torch, TORCH_DTYPE_NAMES[value])
    if value not in (torch.bfloat16, torch.float16, torch.float32):
        raise ConfigError(f"torch_dtype {value!r} is not supported; use torch.bfloat16, torch.float16 or "
                          "torch.float32")
    return value


def read_weight_map(model_dir: Path) -> tuple[dict[str, str], Path]:
    """(tensor name -> shard file name, the file that says so) for a sharded or single-file checkpoint."""
    index = model_dir / INDEX_FILE
    if model_file_exists(index, error=WeightLoadError):  # a FIFO or folder of that name is an error, not absent
        return parse_index(index), index
    single = model_dir / SINGLE_FILE
    if not model_file_exists(single, error=WeightLoadError):
        raise WeightLoadError(f"no weights in {model_dir}: expected {INDEX_FILE} or {SINGLE_FILE}")
    try:
        with safe_open(single, "pt", device="cpu") as f:
            return dict.fromkeys(f.keys(), SINGLE_FILE), single
    except SafetensorError as e:
        raise WeightLoadError(f"corrupt shard {single}: {e}") from None


def _assign(model: nn.Module, param_name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = param_name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def load_weights(model: nn.Module, model_dir: str | Path, *, device: torch.device | str,
                 dtype: torch.dtype, verify: bool = False) -> set[str]:
    """Stream every shard of `model_dir` into `model` (built on meta); return the loaded names.

    `verify`: also check every loaded tensor for NaN/inf (one pass over the weights on `device`);
    the first bad tensor, in shard-file order, raises `WeightLoadError`.
    """
    model_dir = Path(model_dir)
    table = name_table(model)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    weight_map, source = read_weight_map(model_dir)
    by_shard: dict[str, list[str]] = defaultdict(list)
    for name, shard in weight_map.items():
        by_shard[shard].append(name)
    for shard, names in sorted(by_shard.items()):
        if not (model_dir / shard).is_file():
            count = f"{len(names)} tensor" + ("s" if len(names) > 1 else "")
            raise WeightLoadError(f"missing shard {model_dir / shard}: {source.name} lists {count} in it "
                                  f"(e.g. {names[0]}) but the file does not exist")
    for name, shard in weight_map.items():
        if name not in table and not is_ignored(name):
            raise WeightLoadError(f"unexpected tensor {name} in {model_dir / shard}: the model has no such "
                                  "parameter (wrong checkpoint for this architecture?)")
    for name in table:
        if name not in weight_map:
            raise WeightLoadError(f"missing tensor {name}: not listed in {source}")
    loaded: set[str] = set()
    for shard, names in sorted(by_shard.items()):
        loaded |= _load_shard(model, model_dir / shard, names, table, shapes, device, dtype, verify)
    missing = set(table.values()) - loaded
    if missing:
        raise WeightLoadError(f"missing tensor {sorted(missing)[0]} ({len(missing)} in all) after reading {source}")
    return loaded


def _load_shard(model: nn.Module, path: Path, names: list[str], table: dict[str, str],
                shapes: dict[str, tuple[int, ...]], device: torch.device | str, dtype: torch.dtype,
                verify: bool) -> set[str]:
    loaded, current = set(), "(header)"
    try:
        with safe_open(path, "pt", device="cpu") as f:
            keys = set(f.keys())
            extra = sorted(k for k in keys - set(names) if not is_ignored(k))
            if extra:
                raise WeightLoadError(f"unexpected tensor {extra[0]} in {path}: the index does not list it")
            for current in names:
                if current not in keys:
                    raise WeightLoadError(f"missing tensor {current}: the index lists it in {path}, "
                                          "which does not hold it")
                if is_ignored(current):
                    continue
                param = table[current]
                header = f.get_slice(current)
                stored = header.get_dtype()
                if stored not in LOADABLE_DTYPES:
                    raise WeightLoadError(f"wrong dtype for tensor {current} in {path}: checkpoint {stored}, model "
                                          f"expects a float tensor ({', '.join(LOADABLE_DTYPES)})")
                shape = tuple(header.get_shape())
                if shape != shapes[param]:
                    raise WeightLoadError(f"shape mismatch for tensor {current} in {path}: checkpoint {shape}, "
                                          f"model expects {shapes[param]}")
                raw = f.get_tensor(current)
                tensor = raw.to(device=device, dtype=dtype)
                if verify:
                    check_finite(current, path, raw, tensor)
                _assign(model, param, tensor)
                loaded.add(param)
    except SafetensorError as e:
        raise WeightLoadError(f"corrupt or truncated shard {path} (reading {current}): {e}") from None
    return loaded


def check_finite(name: str, path: Path, raw: torch.Tensor, loaded: torch.Tensor) -> None:
    """Raise `WeightLoadError` if `loaded` (raw converted to the load dtype) holds NaN or inf, saying
    whether the checkpoint holds them or the conversion overflowed."""
    if bool(torch.isfinite(loaded).all()):
        return
    nan, inf = int(torch.isnan(raw).sum()), int(torch.isinf(raw).sum())
    if nan or inf:
        raise WeightLoadError(f"non-finite values in tensor {name} in {path}: {nan} NaN and {inf} inf of "
                              f"{raw.numel()} (verify=True)")
    raise WeightLoadError(f"tensor {name} in {path} overflows {loaded.dtype}: its {raw.dtype} values exceed "
                          f"the range of {loaded.dtype} (verify=True; load in a wider dtype)")
