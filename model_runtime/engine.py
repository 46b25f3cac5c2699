"""Engine: one model, one latent KV cache, and prefix reuse across calls.

An agent re-sends the same system prompt and history every step. The engine remembers what sits
in its cache (token ids; for image placeholders, a digest of the image's pixels, since two
screenshots of one size have identical ids); a new call keeps the longest common prefix and
prefills only the new suffix. An image is reused only if all of its placeholder positions are in
the kept prefix (otherwise the prefix is cut back to its first placeholder), so features of
reused images are never recomputed and changed images are encoded whole.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from kimi_agent.model_runtime.generate import STOP_TOKEN_IDS, stream_tokens
from kimi_agent.model_runtime.kv_cache import MLACache
from kimi_agent.model_runtime.static_decode import DECODE_MODES, CacheFullError, DecodeMode, StaticDecoder

if TYPE_CHECKING:
    from kimi_agent.model_runtime.kimi_vl import KimiVL


@dataclass(frozen=True, slots=True)
class EngineResult:
    token_ids: list[int]  # generated ids, stop id included
    text: str  # decoded reply without stop tokens ("" when the engine has no processor)
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens reused from the previous call (not prefilled)
    latency_ms: float


class Engine:
    """One model answering one conversation at a time, reusing what the previous call computed.

    decode: "auto" (graph on CUDA, eager elsewhere) or one of `DECODE_MODES`.
    max_cache_tokens: cache slots when decode is not eager (allocated once; prompt + new tokens must fit).
    max_cached_images: projected features of this many images are kept (LRU by content; 0: none).
    cache: a preallocated one-sequence cache to use (e.g. a scheduler's slot, `MLACache.row`); it is
    never replaced, so a prompt that does not fit is a `CacheFullError`.
    lookahead: queue each decode step before the previous token is read back (`stream_tokens`;
    None: on a CUDA model).
    """

    def __init__(self, model: KimiVL, processor: Any | None = None, *, min_cache_tokens: int = 4096,
                 decode: DecodeMode | Literal["auto"] = "auto", max_cache_tokens: int = 32768,
                 max_cached_images: int = 16, cache: MLACache | None = None, lookahead: bool | None = None) -> None:
        if decode == "auto":
            decode = "graph" if model.device.type == "cuda" else "eager"
        if decode not in DECODE_MODES:
            raise ValueError(f"decode mode {decode!r}; use auto or one of {', '.join(DECODE_MODES)}")
        self.model, self.processor = model, processor
        self.decode: DecodeMode = decode
        self.lookahead = lookahead
        self.min_cache_tokens, self.max_cache_tokens = min_cache_tokens, max_cache_tokens
        self.stop_token_ids: tuple[int, ...] = tuple(getattr(processor, "stop_token_ids", STOP_TOKEN_IDS))
        self.cache: MLACache | None = cache
        self.fixed_cache = cache is not None
        self.decoder: StaticDecoder | None = None
        if cache is not None and decode != "eager":
            self.decoder = StaticDecoder(model, cache, mode=decode)
        self.cached_keys: list[Hashable] = []  # token ids (image content for placeholders) at 0..pos-1
        self.vision_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # digest -> features [n_i, D]
        self.max_cached_images = max_cached_images
        self.last_prefill_tokens = 0
        self.last_cached_tokens = 0
        self.last_vision_encodes = 0  # images sent through MoonViT by the last call

    def reset(self) -> None:
        """Forget the cached prefix (the cache memory is kept)."""
        self.cached_keys = []
        if self.cache is not None:
            self.cache.reset()

    def _keys(self, ids: list[int], pixel_values: torch.Tensor | None,
              grid_hws: torch.Tensor | None) -> tuple[list[Hashable], list[tuple[int, int]], list[str]]:
        """Comparable keys per position (a placeholder's key names its image's content), the
        (first, last) placeholder position of every image, and every image's content digest."""
        keys: list[Hashable] = list(ids)
        if grid_hws is None or not grid_hws.numel() or pixel_values is None:
            return keys, [], []
        pad = self.model.config.media_placeholder_token_id
        pads = [i for i, t in enumerate(ids) if t == pad]
        patches = (grid_hws[:, 0] * grid_hws[:, 1]).tolist()
        if len(pads) != sum(patches) // 4:
            raise ValueError(f"image placeholder tokens {len(pads)} != image features {sum(patches) // 4}")
        spans, digests, tok, patch = [], [], 0, 0
        for n, (h, w) in zip(patches, grid_hws.tolist(), strict=True):
            digest = hashlib.blake2b(pixel_values[patch:patch + n].cpu().numpy().tobytes(), digest_size=16)
            digest.update(f"{h}x{w}".encode())
            digests.append(digest.hexdigest())
            for i in pads[tok:tok + n // 4]:
                keys[i] = (pad, digests[-1])
            spans.append((pads[tok], pads[tok + n // 4 - 1]))
            tok, patch = tok + n // 4, patch + n
        return keys, spans, digests

    def _image_features(self, pixel_values: torch.Tensor, grid_hws: torch.Tensor,
                        digests: list[str]) -> torch.Tensor:
        """Projected features [sum_i h_i*w_i/4, D] of these images, encoding only the ones not cached."""
        patches = (grid_hws[:, 0] * grid_hws[:, 1]).tolist()
        starts = [0]
        for n in patches:
            starts.append(starts[-1] + n)
        missing = [i for i, d in enumerate(digests) if d not in self.vision_cache]
        self.last_vision_encodes = len(missing)
        if missing:
            pv = torch.cat([pixel_values[starts[i]:starts[i + 1]] for i in missing])
            feats = self.model.image_features(pv, grid_hws[missing])
            offset = 0
            for i in missing:
                n = patches[i] // 4
                self.vision_cache[digests[i]] = feats[offset:offset + n]
                offset += n
        out = []
        for d in digests:
            self.vision_cache.move_to_end(d)
            out.append(self.vision_cache[d])
        while len(self.vision_cache) > self.max_cached_images:  # 0 disables the cache
            self.vision_cache.popitem(last=False)
        return torch.cat(out)

    def _reuse(self, keys: list[Hashable], spans: list[tuple[int, int]]) -> tuple[int, int]:
        """(prefix length to keep, index of the first image to encode)."""
        keep = 0
        for a, b in zip(keys, self.cached_keys, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(keys) - 1)  # always prefill >= 1 token to get logits
        for k, (first, last) in enumerate(spans):
            if last >= keep:  # image k is (at least partly) new: encode it whole
                return min(keep, first), k
        return keep, len(spans)

    def _ensure_cache(self, needed: int, keep: int) -> MLACache:
        """A cache with >= `needed` slots holding the first `keep` positions. Eager decode grows it by
        copying; a static decoder's cache is allocated once and never moves (too long is an error)."""
        if self.fixed_cache:
            assert self.cache is not None
            if needed > self.cache.max_len:
                raise CacheFullError(f"prompt + max_new_tokens = {needed} tokens exceeds this cache's "
                                     f"{self.cache.max_len} slots")
        elif self.decode != "eager":
            if needed > self.max_cache_tokens:
                raise CacheFullError(f"prompt + max_new_tokens = {needed} tokens exceeds the engine's "
                                     f"max_cache_tokens={self.max_cache_tokens}")
            if self.cache is None:
                cache = self.model.new_cache(1, self.max_cache_tokens)
                assert isinstance(cache, MLACache)
                self.cache = cache
                self.decoder = StaticDecoder(self.model, cache, mode=self.decode)
        elif self.cache is None or self.cache.max_len < needed:
            size = max(needed, self.min_cache_tokens, 2 * (self.cache.max_len if self.cache else 0))
            cache = self.model.new_cache(1, size)
            assert isinstance(cache, MLACache)
            if self.cache is not None:
                cache.copy_prefix_from(self.cache, keep)
            self.cache = cache
        assert self.cache is not None
        self.cache.truncate(keep)
        return self.cache

    def prepare(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                image_grid_hws: torch.Tensor | None = None, *,
                max_new_tokens: int = 256) -> tuple[MLACache, torch.Tensor, torch.Tensor | None, list[Hashable]]:
        """Keep the reusable prefix of one prompt input_ids [1, T] in the cache and encode its new images.
        Returns (cache, suffix ids [1, T - kept] on the device, their image features [n, D] or None,
        the prompt's position keys). The caller prefills the suffix, decodes, then sets
        `cached_keys = (keys + new_tokens)[:cache.pos]` (`stream_ids` does all of it)."""
        ids = input_ids[0].tolist()
        keys, spans, digests = self._keys(ids, pixel_values, image_grid_hws)
        keep, first_image = self._reuse(keys, spans)
        cache = self._ensure_cache(len(ids) + max_new_tokens, keep)
        self.cached_keys = keys[:keep]
        features = None
        self.last_vision_encodes = 0
        if digests[first_image:]:
            assert pixel_values is not None and image_grid_hws is not None
            skip = int((image_grid_hws[:first_image, 0] * image_grid_hws[:first_image, 1]).sum())
            with torch.inference_mode():
                features = self._image_features(pixel_values[skip:].to(self.model.device),
                                                image_grid_hws[first_image:], digests[first_image:])
        self.last_cached_tokens, self.last_prefill_tokens = keep, len(ids) - keep
        return cache, input_ids[:, keep:].to(self.model.device), features, keys

    def stream_ids(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                   image_grid_hws: torch.Tensor | None = None, *, max_new_tokens: int = 256,
                   temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[int]:
        """Yield new token ids for one prompt input_ids [1, T], reusing the cached prefix."""
        cache, suffix, features, keys = self.prepare(input_ids, pixel_values, image_grid_hws,
                                                     max_new_tokens=max_new_tokens)
        generator = None
        if seed is not None:
            generator = torch.Generator(self.model.device).manual_seed(seed)
        new: list[int] = []
        try:
            for tok in stream_tokens(self.model, suffix, cache, image_features=features,
                                     max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     generator=generator, stop_token_ids=self.stop_token_ids,
                                     decoder=self.decoder, lookahead=self.lookahead):
                new.append(tok)
                yield tok
        finally:
            self.cached_keys = (keys + new)[: cache.pos]

    def generate_ids(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                     image_grid_hws: torch.Tensor | None = None, *, on_text: Callable[[str], None] | None = None,
                     **sampling: Any) -> EngineResult:
        """Run `stream_ids` to the end; decode text when a processor is attached."""
        t0 = time.perf_counter()
        decoder = self.processor.stream_decoder(skip_special_tokens=True) if self.processor else None
        out, pieces = [], []
        for tok in self.stream_ids(input_ids, pixel_values, image_grid_hws, **sampling):
            out.append(tok)
            if decoder is not None and tok not in self.stop_token_ids:
                pieces.append(decoder.push(tok))
                if on_text is not None and pieces[-1]:
                    on_text(pieces[-1])
        if decoder is not None:
            pieces.append(decoder.flush())
            if on_text is not None and pieces[-1]:
                on_text(pieces[-1])
        finish: Literal["stop", "length"] = "stop" if out and out[-1] in self.stop_token_ids else "length"
        return EngineResult(token_ids=out, text="".join(pieces), finish_reason=finish,
                            prompt_tokens=input_ids.shape[1], cached_prompt_tokens=self.last_cached_tokens,
                            latency_ms=(time.perf_counter() - t0) * 1000)

    def generate(self, messages: list[dict[str, Any]], images: list[Any], *,
                 on_text: Callable[[str], None] | None = None, **sampling: Any) -> EngineResult:
        """Chat messages + PIL images -> reply (needs a processor)."""
        if self.processor is None:
            raise ValueError("Engine.generate needs a processor; use generate_ids with token ids")
        batch = self.processor(messages=messages, images=images)
        return self.generate_ids(batch["input_ids"], batch.get("pixel_values"), batch.get("image_grid_hws"),
                                 on_text=on_text, **sampling)
