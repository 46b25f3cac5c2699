"""KimiVLProcessor: chat messages + PIL images -> model inputs (input_ids, pixel_values, grid).

Renders the chat template, tokenizes, and expands each `<|media_pad|>` into (h/2)(w/2) copies for
its image (images consumed in order). Expansion happens on token ids, which equals the official
expand-then-tokenize for every sane prompt. Two call forms give identical tensors: ours,
`proc(messages=..., images=[...])`, and the Hugging Face one, `proc(text=proc.apply_chat_template(
messages), images=...)`, unless a message's text holds a special token's string: `messages=` encodes
the messages' text as ordinary text (only the template's own markers are special tokens), so a
message cannot forge a turn boundary or an image placeholder, while a rendered `text=` prompt is
read as it is (special-token strings become the tokens, as in transformers). torch is imported only
when tensors are built.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kimi_agent.errors import AgentError, ConfigError
from kimi_agent.model_runtime.chat_template import ChatTemplate, is_image_part
from kimi_agent.model_runtime.config import KimiVLConfig, model_file_exists
from kimi_agent.model_runtime.hub import resolve_model_dir
from kimi_agent.model_runtime.image_processor import ImageBatch, ImageProcessor
from kimi_agent.model_runtime.tokenizer import StreamDecoder, Tokenizer

if TYPE_CHECKING:
    from PIL import Image

    from kimi_agent.model_runtime.backends.base import Message

MEDIA_PAD = "<|media_pad|>"
STOP_TOKENS = ("<|im_end|>", "[EOS]")
# Files the processor reads; hub downloads fetch only these (not the 32 GB of weights).
#: What a snapshot must hold for the processor (the chat template may also live in tokenizer_config.json).
REQUIRED_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json", "tiktoken.model")
PROCESSOR_FILES = ["config.json", "preprocessor_config.json", "tokenizer_config.json", "tiktoken.model",
                   "chat_template.jinja", "generation_config.json"]


class ProcessorInputError(AgentError, ValueError):
    """Messages and images do not agree (e.g. 2 image parts but 1 image)."""


class BatchInputs(dict[str, Any]):
    """Model inputs as a dict (`model(**inputs)`, `model.generate(**inputs)`), with the two habits of
    transformers' `BatchFeature`: attribute access (`inputs.input_ids`) and `.to(device or dtype)`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def to(self, target: Any) -> BatchInputs:
        """A copy with every tensor moved to `target` (a device); a torch dtype casts only the
        floating-point tensors (pixel_values), never the ids or grids."""
        import torch

        if isinstance(target, torch.dtype):
            return BatchInputs({k: v.to(target) if v.is_floating_point() else v for k, v in self.items()})
        return BatchInputs({k: v.to(target) for k, v in self.items()})


class KimiVLProcessor:
    """Tokenizer + image processor + chat template of one Kimi-VL checkpoint.

    `proc(messages=..., images=[...])` or `proc(text=..., images=...)` returns `BatchInputs`
    `{"input_ids": long [B, T], "pixel_values": float32 [L, 3, 14, 14], "image_grid_hws": int64
    [N, 2]}` (the image keys only with images; B = 1 for messages).
    """

    def __init__(self, tokenizer: Tokenizer, image_processor: ImageProcessor, chat_template: ChatTemplate) -> None:
        self._tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.media_pad_id = tokenizer.token_id(MEDIA_PAD)
        self.stop_token_ids: tuple[int, ...] = tuple(tokenizer.token_id(t) for t in STOP_TOKENS)
        #: Rows of the model's embedding (set by `check_model`); inputs never hold an id at or past it.
        self.vocab_size: int | None = None

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, in_token_limit: int | None = None,
                        revision: str | None = None, token: str | bool | None = None) -> KimiVLProcessor:
        """Load from a checkpoint directory or a hub id (only the small processor files are fetched;
        `revision` and `token` as in transformers, for hub ids).

        `in_token_limit` overrides the checkpoint's screenshot budget in 14-px patches (e.g. raise it
        for high-resolution screens; grids must stay under 512 patches a side).
        """
        path = resolve_model_dir(path_or_hub_id, allow_patterns=PROCESSOR_FILES, revision=revision, token=token)
        missing = [name for name in REQUIRED_FILES if not model_file_exists(path / name)]
        if missing:  # all of them at once, not one a try
            raise ConfigError(f"{path} is not a whole Kimi-VL snapshot: {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} missing.")
        proc = cls(Tokenizer.from_dir(path), ImageProcessor.from_dir(path, in_token_limit=in_token_limit),
                   ChatTemplate.from_dir(path))
        proc.check_model(KimiVLConfig.from_pretrained_dir(path), path)
        return proc

    def check_model(self, config: KimiVLConfig, path: str | Path = "") -> None:
        """Refuse (`ConfigError` naming the files and fields) a tokenizer or image processor that does not
        fit the model of `config`: every id the tokenizer can produce from text or names (the BPE ranks, the
        named special tokens, BOS/EOS, the stops) must have an embedding row (< `text_config.vocab_size`),
        `<|media_pad|>` must be `media_placeholder_token_id`, and the patch size and merge kernel of
        `preprocessor_config.json` must be the vision tower's."""
        path = Path(path)
        cfg_file, tok_file = path / "config.json", path / "tokenizer_config.json"
        pp_file = path / "preprocessor_config.json"
        vocab = config.text.vocab_size
        tok = self._tokenizer
        if tok.num_ranks > vocab:
            raise ConfigError(f"{path / 'tiktoken.model'} has {tok.num_ranks:,} ranks, but {cfg_file} key "
                              f"'text_config.vocab_size' is {vocab:,}: text would encode to ids the model has "
                              "no embedding for")
        named = {name: i for name, i in tok.special_tokens.items() if i in tok.named_special_ids}
        named |= {"bos_token": tok.bos_id, "eos_token": tok.eos_id}
        for name, token_id in sorted(named.items(), key=lambda kv: -kv[1]):
            if token_id >= vocab:
                raise ConfigError(f"{tok_file}: special token {name!r} has id {token_id}, but {cfg_file} key "
                                  f"'text_config.vocab_size' is {vocab:,}: the model has no embedding for it")
        if config.media_placeholder_token_id != self.media_pad_id:
            raise ConfigError(f"{cfg_file}: media_placeholder_token_id {config.media_placeholder_token_id} != "
                              f"tokenizer's {MEDIA_PAD} id {self.media_pad_id}.")
        pp, vision = self.image_processor.config, config.vision
        for key, ours, theirs in (("patch_size", pp.patch_size, vision.patch_size),
                                  ("merge_kernel_size", pp.merge_kernel_size, vision.merge_kernel_size)):
            if ours != theirs:
                raise ConfigError(f"{pp_file}: key {key!r} is {list(ours) if isinstance(ours, tuple) else ours}, "
                                  f"but {cfg_file} key 'vision_config.{key}' is "
                                  f"{list(theirs) if isinstance(theirs, tuple) else theirs}; they must agree")
        self.vocab_size = vocab

    @property
    def tokenizer(self) -> Tokenizer:
        """The tiktoken-based tokenizer."""
        return self._tokenizer

    @property
    def in_token_limit(self) -> int:
        """Most 14-px patches per image before downscaling."""
        return self.image_processor.in_token_limit

    def num_image_tokens(self, width: int, height: int) -> int:
        """`<|media_pad|>` copies an image of `width` x `height` pixels expands to."""
        return self.image_processor.num_image_tokens(width, height)

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True, *,
                            return_tensors: str | None = None) -> str:
        """The prompt text for `messages`, one `<|media_pad|>` per image part (not yet expanded): the
        `text=` of `proc(text=..., images=...)`. `return_tensors` is accepted and unused, as in
        transformers when the template is not tokenized."""
        _validate(messages)
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def encode_messages(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation in which only the template's own text can hold special
        tokens: each message's text (string content, text parts) is encoded as ordinary text, so
        `<|im_end|>` or `<|media_pad|>` typed by a user, a task file or a web page stays text. The ids
        equal `encode(apply_chat_template(messages))` when no message text holds a special token's
        string (the Kimi-VL template puts special tokens on both sides of every text)."""
        _validate(messages)
        nonce = secrets.token_hex(6)
        texts: list[str] = []

        def mark(value: Any) -> str:
            texts.append(str(value))
            return f"\ue000{nonce}.{len(texts) - 1}\ue001"

        masked = [{**m, "content": mark(m["content"]) if isinstance(m["content"], str) else
                   [{**p, "text": mark(p["text"])} if not is_image_part(p) and "text" in p else p
                    for p in m["content"]]} for m in messages]
        rendered = self.chat_template.render(masked, add_generation_prompt=add_generation_prompt)
        pieces: list[tuple[bool, str]] = []  # (a message's text, its string), neighbours of one kind merged
        at = 0
        for found in re.finditer(f"\ue000{nonce}\\.(\\d+)\ue001", rendered):
            pieces += [(False, rendered[at:found.start()]), (True, texts[int(found.group(1))])]
            at = found.end()
        pieces.append((False, rendered[at:]))
        merged: list[tuple[bool, list[str]]] = []  # joined once each: linear in the prompt's length
        for is_text, piece in pieces:
            if not piece:
                continue
            if merged and merged[-1][0] == is_text:
                merged[-1][1].append(piece)
            else:
                merged.append((is_text, [piece]))
        return [t for is_text, parts in merged for t in self._tokenizer.encode("".join(parts), allow_special=not is_text)]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings become specials; no BOS."""
        return self._tokenizer.encode(text)

    def decode(self, ids: Iterable[int] | int, *, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list, numpy array or tensor)."""
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Iterable[int]], *, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool = False) -> list[str]:
        """Text of each row of `sequences` (e.g. a long [B, n] tensor). tiktoken decoding is exact, so
        there are no tokenization spaces to clean up; True is refused rather than ignored."""
        if clean_up_tokenization_spaces:
            raise ProcessorInputError("clean_up_tokenization_spaces=True is not supported: decoding is exact")
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in sequences]

    def stream_decoder(self, *, skip_special_tokens: bool = False) -> StreamDecoder:
        """Incremental decoder that never emits half a UTF-8 character."""
        return self._tokenizer.stream_decoder(skip_special_tokens=skip_special_tokens)

    def expand_image_tokens(self, ids: Sequence[int], tokens_per_image: Sequence[int]) -> np.ndarray:
        """Replace the k-th `<|media_pad|>` in `ids` by `tokens_per_image[k]` copies -> int64 [T']."""
        arr = np.asarray(ids, dtype=np.int64)
        pads = np.flatnonzero(arr == self.media_pad_id)
        if len(pads) != len(tokens_per_image):
            raise ProcessorInputError(
                f"prompt has {len(pads)} {MEDIA_PAD} tokens but {len(tokens_per_image)} images were given")
        repeats = np.ones(len(arr), dtype=np.int64)
        repeats[pads] = np.asarray(tokens_per_image, dtype=np.int64)
        return np.repeat(arr, repeats)

    def __call__(self, *, messages: Sequence[Message] | None = None, text: str | Sequence[str] | None = None,
                 images: Image.Image | Sequence[Image.Image] | None = None, add_generation_prompt: bool = True,
                 return_tensors: str = "pt", padding: bool | str = False, truncation: bool = False) -> BatchInputs:
        """Model inputs: `input_ids` long [B, T] and, with images, `pixel_values` float32 [L, 3, 14, 14]
        and `image_grid_hws` int64 [N, 2].

        Give exactly one of `messages` (one conversation, B = 1; its image parts must number
        `len(images)`) or `text` (the Hugging Face call: a prompt or a list of prompts from
        `apply_chat_template`, each `<|media_pad|>` taking the next image; B = len(text)). `images`
        may be one image or a list. Only `return_tensors="pt"` exists; `padding` and `truncation` are
        accepted so the transformers call runs unchanged, but rows are never padded or cut (the
        runtime takes no attention mask): prompts of different lengths need one call each.
        """
        if return_tensors != "pt":
            raise ProcessorInputError(f"return_tensors={return_tensors!r} is not supported; only 'pt' (torch)")
        if (messages is None) == (text is None):
            raise ProcessorInputError("pass exactly one of messages= (a chat) or text= (a rendered prompt)")
        image_list = _image_list(images)
        if messages is not None:
            _validate(messages)
            n_parts = sum(1 for m in messages if not isinstance(m.get("content"), str)
                          for p in m["content"] if is_image_part(p))
            if n_parts != len(image_list):
                raise ProcessorInputError(f"messages have {n_parts} image parts but {len(image_list)} images "
                                          "were given")
            return self._tensors([self.encode_messages(messages, add_generation_prompt)], image_list)
        prompts = [text] if isinstance(text, str) else list(text or [])
        if not prompts or not all(isinstance(t, str) for t in prompts):
            raise ProcessorInputError("text must be a prompt string or a non-empty list of prompt strings")
        return self._tensors([self._tokenizer.encode(t) for t in prompts], image_list)

    def _tensors(self, rows: list[list[int]], images: list[Image.Image]) -> BatchInputs:
        """Expand the `<|media_pad|>` of token-id `rows` for `images` (in order) and build tensors."""
        import torch

        pads = [sum(1 for t in ids if t == self.media_pad_id) for ids in rows]
        if sum(pads) != len(images):
            raise ProcessorInputError(f"prompt has {sum(pads)} {MEDIA_PAD} tokens but {len(images)} images "
                                      "were given")
        batch: ImageBatch | None = self.image_processor(images) if images else None
        per_image = batch.num_tokens if batch else []
        starts = np.cumsum([0, *pads])
        expanded = [self.expand_image_tokens(ids, per_image[starts[i]:starts[i + 1]]) for i, ids in enumerate(rows)]
        if len({len(e) for e in expanded}) > 1:
            raise ProcessorInputError(f"prompts expand to {[len(e) for e in expanded]} tokens; rows are not "
                                      "padded (no attention mask), so process prompts of different lengths "
                                      "one call each")
        ids = np.stack(expanded)
        if self.vocab_size is not None and ids.size and int(ids.max()) >= self.vocab_size:
            raise ProcessorInputError(f"the prompt holds token id {int(ids.max())} "
                                      f"({self._tokenizer.decode([int(ids.max())])!r}), which the model has no "
                                      f"embedding for (vocab_size {self.vocab_size:,})")
        out = BatchInputs(input_ids=torch.from_numpy(ids))
        if batch is not None:
            out["pixel_values"] = torch.from_numpy(batch.pixel_values)
            out["image_grid_hws"] = torch.from_numpy(batch.image_grid_hws)
        return out


def _image_list(images: Image.Image | Sequence[Image.Image] | None) -> list[Image.Image]:
    """`images=` as a list: None -> [], one image -> [image], a sequence -> its items."""
    from PIL import Image

    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, str | bytes) or not isinstance(images, Sequence):
        raise ProcessorInputError(f"images must be a PIL image or a list of them, got {type(images).__name__}")
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ProcessorInputError(f"images[{i}] must be a PIL image, got {type(image).__name__}")
    return list(images)


def _validate(messages: Sequence[Mapping[str, Any]]) -> None:
    """Messages are `{"role": str, "content": str | list[dict]}` (see backends/base.py)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ProcessorInputError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ProcessorInputError(f"messages[{i}] must be a dict with a string 'role'")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(p, Mapping) for p in content):
            raise ProcessorInputError(f"messages[{i}]['content'] must be a string or a list of dicts")
