"""Resolve a model argument (local directory or hub id) to a local snapshot directory.

Hub ids go through `huggingface_hub.snapshot_download`, so its cache and environment conventions
(`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`) apply. When nothing can be fetched the
error is one sentence that says what to pass instead. `parse_index` reads a snapshot's
`model.safetensors.index.json` with the loader's checks (no torch, so `kimi-agent doctor` shares it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kimi_agent.errors import ModelUnavailableError, WeightLoadError
from kimi_agent.model_runtime.config import model_file_exists, read_json_object

DEFAULT_MODEL_ID = "moonshotai/Kimi-VL-A3B-Instruct"
INDEX_FILE = "model.safetensors.index.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_dir(path_or_id: str | Path, *, allow_patterns: list[str] | None = None,
                      revision: str | None = None, token: str | bool | None = None) -> Path:
    """Local directory holding `config.json` for `path_or_id`.

    A path that exists is used as is (it must be a directory containing config.json; `revision` and
    `token` do not apply, as in transformers). Anything shaped like `owner/name` that is not a local
    path is looked up in the hub cache and downloaded if allowed, at `revision` (branch, tag or
    commit; default the main branch) with `token` (a string, or True for the saved login). The token
    never appears in an error. Raises `ModelUnavailableError` with a one-sentence fix otherwise.
    """
    p = Path(path_or_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelUnavailableError(f"{p} is a file, not a folder; pass a Kimi-VL snapshot directory.")
        if not model_file_exists(p / "config.json", error=ModelUnavailableError):  # a FIFO or folder: named
            raise ModelUnavailableError(f"{p} has no config.json; pass a Kimi-VL snapshot directory.")
        return p
    text = str(path_or_id)
    if not _HUB_ID.match(text):
        raise ModelUnavailableError(
            f"Model {text!r} is neither a local directory nor a hub id such as {DEFAULT_MODEL_ID}.")
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ModelUnavailableError(f"revision must be a branch, tag or commit name, got {revision!r}.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RevisionNotFoundError,
    )

    where = text if revision is None else f"{text} at revision {revision!r}"
    try:
        return Path(snapshot_download(text, allow_patterns=allow_patterns, revision=revision, token=token))
    except RevisionNotFoundError:
        raise ModelUnavailableError(f"{text} has no revision {revision!r} on the Hugging Face hub; pass an "
                                    "existing branch, tag or commit.") from None
    except GatedRepoError:
        raise ModelUnavailableError(f"{text} is gated on the Hugging Face hub; accept its terms and pass token=... "
                                    "(or log in with `hf auth login`).") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        why = "not in the hub cache, and the hub cannot be reached" if isinstance(e, LocalEntryNotFoundError) else \
            type(e).__name__
        raise ModelUnavailableError(
            f"Could not get {where} from the Hugging Face hub ({why}), and no folder {text} exists here; "
            f"download it where the hub can be reached (`hf download {text} --local-dir DIR`) and pass that "
            "folder, or use an OpenAI-compatible server."
        ) from None


def _json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value (for error messages)."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_index(index: Path) -> dict[str, str]:
    """`weight_map` of a safetensors index file (tensor name -> shard file name), validated: every shard
    is a plain file name inside the checkpoint directory. Any problem raises `WeightLoadError` naming the
    file and field. No torch: `kimi-agent doctor` reads indexes with it too."""
    data = read_json_object(index, error=WeightLoadError, expect="a JSON object with a 'weight_map' field")
    if "weight_map" not in data:
        raise WeightLoadError(f"{index}: missing field 'weight_map' (tensor name -> shard file)")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict):
        raise WeightLoadError(f"{index}: field 'weight_map' must be an object of tensor name -> shard file, "
                              f"got {_json_type(weight_map)}")
    if not weight_map:
        raise WeightLoadError(f"{index}: field 'weight_map' is empty")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise WeightLoadError(f"{index}: field 'weight_map.{name}' must be a shard file name (a string), "
                                  f"got {'null' if shard is None else f'{_json_type(shard)} {_short(shard)}'}")
        if shard in ("", ".", "..") or Path(shard).name != shard or "\\" in shard:
            raise WeightLoadError(f"{index}: field 'weight_map.{name}' must be a file name inside the checkpoint "
                                  f"directory, got {_short(shard)}")
    return weight_map
