"""Generation: a few pure functions (`prefill`, `decode_step`, `sample`), one streaming generator
(`stream_tokens`, which takes any decode-step callable, e.g. a `StaticDecoder` replaying CUDA graphs)
and batched `generate_batch`.

The model stores no state: the caller owns the KV cache, and these functions advance it. Decoding
stops on `<|im_end|>` (163586) or `[EOS]` (163585).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeAlias

import torch

from kimi_agent.model_runtime.kv_cache import FullKVCache, MLACache

if TYPE_CHECKING:
    from kimi_agent.model_runtime.kimi_vl import KimiVL

__all__ = ["STOP_TOKEN_IDS", "decode_step", "generate_batch", "prefill", "sample", "stream_tokens"]

IM_END_ID, EOS_ID = 163586, 163585
STOP_TOKEN_IDS: tuple[int, ...] = (IM_END_ID, EOS_ID)
MIN_TEMPERATURE = 1e-5  # below it sampling is greedy: logit gaps / 1e-5 already overflow to -inf
Cache: TypeAlias = MLACache | FullKVCache


def sample(logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 0.0,
           top_p: float = 1.0) -> torch.Tensor:
    """Next token per row from logits [B, V] -> [B] int64. A temperature below `MIN_TEMPERATURE`
    (0 included) is greedy (argmax): a client's 1e-46 is 0 in float32, and 0/0 is NaN. Any other
    temperature and top_p give a distribution: the logits are shifted so that the largest is 0
    before they are divided (a temperature of 1e-5 makes the others -inf, not NaN), and the most
    likely token is always kept by top_p (a top_p that is 0 in float32, such as 1e-46, keeps it)."""
    if temperature < MIN_TEMPERATURE:
        return logits.argmax(-1)
    x = logits.float()
    probs = torch.softmax((x - x.amax(-1, keepdim=True)) / temperature, dim=-1)  # [B, V]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest prefix whose mass reaches top_p
        keep[:, 0] = True
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def prefill(model: KimiVL, input_ids: torch.Tensor, kv_cache: Cache, pixel_values: torch.Tensor | None = None,
            image_grid_hws: torch.Tensor | None = None, *, image_features: torch.Tensor | None = None) -> torch.Tensor:
    """Run input_ids [B, T] at positions cache.pos.. (the images are those whose placeholders are in
    `input_ids`, given as pixels or as ready `image_features` [n, D]), advance the cache by T, return
    the last position's logits [B, V] fp32."""
    logits = model(input_ids, pixel_values, image_grid_hws, kv_cache=kv_cache, last_only=True,
                   image_features=image_features)
    kv_cache.advance(input_ids.shape[1])
    return logits[:, -1]


def decode_step(model: KimiVL, tokens: torch.Tensor, kv_cache: Cache) -> torch.Tensor:
    """Feed one token per row (tokens [B]); advance the cache by 1; logits [B, V] fp32."""
    embeds = model.language_model.model.embed_tokens(tokens[:, None])  # [B, 1, D]; never an image
    logits = model.language_model(embeds, None, kv_cache, last_only=True)
    kv_cache.advance(1)
    return logits[:, -1]


def stream_tokens(model: KimiVL, input_ids: torch.Tensor, kv_cache: Cache, *,
                  pixel_values: torch.Tensor | None = None, image_grid_hws: torch.Tensor | None = None,
                  image_features: torch.Tensor | None = None,
                  max_new_tokens: int = 16, temperature: float = 0.0, top_p: float = 1.0,
                  generator: torch.Generator | None = None, stop_token_ids: tuple[int, ...] = STOP_TOKEN_IDS,
                  decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  lookahead: bool | None = None) -> Iterator[int]:
    """Yield new token ids of one sequence (input_ids [1, T] after cache.pos) until a stop id
    (yielded, then stop) or `max_new_tokens`.
    `decoder(tokens [1]) -> logits [1, V]` replaces `decode_step` (it must advance `kv_cache`).

    lookahead (default: on for a CUDA model): the step that feeds token i is queued on the device
    before token i is read back, so the device computes token i + 1 while the host checks token i
    and the caller handles it (text decoding, streaming). The tokens are the same; the cost is one
    step past a stop id, which is then in the cache (the cache is always at the last yielded token
    or one past it: the caller keeps `keys[:cache.pos]`). Without lookahead the last yielded token
    is not fed to the cache, and the device waits on the host between steps.
    """
    step = decoder or (lambda toks: decode_step(model, toks, kv_cache))
    with torch.inference_mode():
        logits = prefill(model, input_ids, kv_cache, pixel_values, image_grid_hws, image_features=image_features)
        if lookahead if lookahead is not None else logits.is_cuda:
            yield from _lookahead(logits, step, max_new_tokens, temperature, top_p, generator, stop_token_ids)
            return
        for i in range(max_new_tokens):
            token = sample(logits, generator, temperature, top_p)  # [1]
            tok = int(token[0])
            yield tok
            if tok in stop_token_ids or i == max_new_tokens - 1:
                return
            logits = step(token)


def _lookahead(logits: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor], max_new_tokens: int,
               temperature: float, top_p: float, generator: torch.Generator | None,
               stop_token_ids: tuple[int, ...]) -> Iterator[int]:
    """`stream_tokens` with the next step queued before each token is read (see there)."""
    cuda = logits.is_cuda
    host = torch.empty(1, dtype=torch.long, pin_memory=cuda)  # page-locked: the copy does not block
    token = sample(logits, generator, temperature, top_p)  # [1], on the device
    for i in range(max_new_tokens):
        host.copy_(token, non_blocking=cuda)
        ready = torch.cuda.Event() if cuda else None
        if ready is not None:
            ready.record()
        if i < max_new_tokens - 1:
            token = sample(step(token), generator, temperature, top_p)  # queued behind the copy
        if ready is not None:
            ready.synchronize()  # the copy only, not the step queued after it
        tok = int(host[0])
        yield tok
        if tok in stop_token_ids:
            return


def generate_batch(model: KimiVL, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                   image_grid_hws: torch.Tensor | None = None, *, max_new_tokens: int = 16,
                   temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None,
                   stop_token_ids: tuple[int, ...] = STOP_TOKEN_IDS) -> torch.Tensor:
    """Equal-length prompts input_ids [B, T] -> new ids [B, n]; a finished row repeats its stop id."""
    b, t = input_ids.shape
    cache = model.new_cache(b, t + max_new_tokens)
    input_ids = input_ids.to(model.device)
    stops = torch.tensor(stop_token_ids, device=model.device)
    logits = prefill(model, input_ids, cache, pixel_values, image_grid_hws)
    done = torch.zeros(b, dtype=torch.bool, device=model.device)
    out: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        token = sample(logits, generator, temperature, top_p)  # [B]
        token = torch.where(done, out[-1] if out else token, token)
        out.append(token)
        done |= torch.isin(token, stops)
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        logits = decode_step(model, token, cache)
    return torch.stack(out, dim=1)
