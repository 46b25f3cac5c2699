"""The OpenAI chat-completions request, checked, and turned into our messages + PIL images.

Images come only as `data:` URLs (base64 PNG or JPEG); a remote URL is refused (the server never
fetches anything). Every bad field is an `ApiError` 400 whose `param` names it, e.g.
`messages[1].content[0].image_url`. Bounds (`RequestLimits`) cap the image count and each image's
pixels, checked from the image header before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from kimi_agent.model_runtime.serving.errors import ApiError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Bounds on one request (and on the bodies of all requests arriving at once). Pixels are width x
    height of one decoded image."""

    max_body_bytes: int = 64 << 20
    max_images: int = 16
    max_image_pixels: int = 4096 * 4096
    max_stop_strings: int = 4
    #: bytes of all bodies being received or turned into prompts at once (None: 4 x max_body_bytes)
    max_total_body_bytes: int | None = None

    @property
    def total_body_bytes(self) -> int:
        return 4 * self.max_body_bytes if self.max_total_body_bytes is None else self.max_total_body_bytes


# Scalars are strict, as in OpenAI's API: "5" is not an integer, "yes" not a boolean, "0.5" not a number
# (a strict float still takes an integer such as 1); NaN and Infinity, which Python's json reads, are refused.
FiniteFloat = Annotated[StrictFloat, AllowInfNan(False)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's request that this server reads; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[FiniteFloat, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[FiniteFloat, Field(gt=0.0, le=1.0)] | None = None
    seed: Annotated[StrictInt, Field(ge=-(2**63), lt=2**64)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] = 1
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: StrictBool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_strings(self, limits: RequestLimits) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > limits.max_stop_strings:
            raise ApiError(400, f"at most {limits.max_stop_strings} stop strings, got {len(stops)}", param="stop")
        return tuple(s for s in stops if s)


# What a bad top-level field must be, for its 400 (the param is the field itself, also for an item of
# `stop` or a member of a union). Fields not named here (`messages`) keep pydantic's message and path.
FIELD_RULES = {
    "model": "a string",
    "max_tokens": "an integer of at least 1",
    "max_completion_tokens": "an integer of at least 1",
    "temperature": "a finite number from 0 to 2",
    "top_p": "a finite number greater than 0 and at most 1",
    "seed": "an integer from -2**63 to 2**64 - 1",
    "n": "1 (this server returns one choice)",
    "stop": "a string or a list of strings",
    "stream": "a boolean (true or false)",
    "stream_options": "an object",
    "stream_options.include_usage": "a boolean (true or false)",
    "logprobs": "a boolean (true or false)",
    "tools": "a list",
    "response_format": 'an object such as {"type": "text"}',
}


def parse_request(data: Any) -> ChatCompletionRequest:
    """A JSON body -> the request; 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        raise _field_error(e.errors()) from None
    if req.logprobs:
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs")
    if req.tools:
        raise ApiError(400, "tools (function calling) are not supported by this server", param="tools")
    if req.response_format is not None and req.response_format.get("type") != "text":
        shown = describe(req.response_format.get("type"), quote_only=True)
        raise ApiError(400, f"response_format of type {shown} is not supported by this server (no JSON mode or "
                            'structured outputs); only {"type": "text"} is', param="response_format")
    return req


def _field_error(errors: list[Any]) -> ApiError:
    """pydantic's errors -> a 400 naming the first bad field (see `FIELD_RULES`)."""
    loc = errors[0]["loc"]
    path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    param = _rule_key(loc)
    if errors[0]["type"] == "missing":
        return ApiError(400, f"{path} is required", param=path)
    if param not in FIELD_RULES:
        return ApiError(400, f"{path or 'body'}: {errors[0]['msg']}", param=path or None)
    # a union (`stop`) fails once per member: show the innermost bad value, e.g. the item of a list
    err = max((e for e in errors if _rule_key(e["loc"]) == param), key=lambda e: len(e["loc"]))
    where = f" at {param}[{err['loc'][-1]}]" if isinstance(err["loc"][-1], int) else ""
    return ApiError(400, f"{param} must be {FIELD_RULES[param]}, got {describe(err['input'])}{where}", param=param)


def _rule_key(loc: tuple[int | str, ...]) -> str:
    """The `FIELD_RULES` key of an error's location: the top-level field (or `stream_options.<field>`)."""
    if len(loc) > 1 and loc[0] == "stream_options":
        return f"stream_options.{loc[1]}"
    return str(loc[0]) if loc else ""


def describe(value: Any, *, quote_only: bool = False, limit: int = 40) -> str:
    """A client's value, short and JSON-like, for an error message: never a deep repr (the value may be
    nested hundreds of levels) nor a long string. quote_only: a string without "the string"."""
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= limit else value[: limit - 3] + "...", ensure_ascii=False)
        return text if quote_only else f"the string {text}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return repr(value) if math.isfinite(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= limit else f"an integer of {len(text)} digits"
    names: dict[type, str] = {list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def convert_messages(messages: list[dict[str, Any]], limits: RequestLimits,
                     ) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """OpenAI messages -> (our messages with `{"type": "image"}` parts, the images in order)."""
    out: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    urls = [(i, j, p) for i, m in enumerate(messages) if isinstance(m.get("content"), list)
            for j, p in enumerate(m["content"]) if isinstance(p, dict) and p.get("type") == "image_url"]
    if len(urls) > limits.max_images:
        raise ApiError(400, f"at most {limits.max_images} images per request, got {len(urls)}", param="messages")
    for i, m in enumerate(messages):
        role = ROLES.get(m["role"]) if isinstance(m.get("role"), str) else None  # a list is unhashable
        if role is None:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got "
                                f"{describe(m.get('role'), quote_only=True)}", param=f"messages[{i}].role")
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ApiError(400, f"messages[{i}].content must be a string or a list of parts",
                           param=f"messages[{i}].content")
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    got = f", got {describe(part['text'])}" if "text" in part else ""
                    raise ApiError(400, f'{where} is a text part without its "text" string{got}',
                                   param=f"{where}.text")
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                images.append(decode_image_url(part.get("image_url"), f"{where}.image_url", limits))
                parts.append({"type": "image"})
            elif isinstance(part, dict):
                raise ApiError(400, f'{where} must be a text part or an image_url part, got a part whose "type" is '
                                    f"{describe(kind, quote_only=True)}", param=where)
            else:
                raise ApiError(400, f"{where} must be a text part or an image_url part (an object), got "
                                    f"{describe(part)}", param=where)
        out.append({"role": role, "content": parts})
    return out, images


def decode_image_url(value: Any, where: str, limits: RequestLimits) -> Image.Image:
    """An `image_url` value (`{"url": ...}` or a string) holding a base64 PNG/JPEG data URL -> RGB image."""
    from PIL import Image, UnidentifiedImageError

    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise ApiError(400, f"{where}.url must be a string", param=f"{where}.url")
    if not url.startswith("data:"):
        shown = url if len(url) <= 80 else url[:77] + "..."
        raise ApiError(400, f"{where}: only data URLs are accepted (data:image/png;base64,...); this server "
                            f"does not fetch remote images such as {shown!r}", param=where,
                       code="remote_image_url")
    header, sep, payload = url[5:].partition(",")
    mime, *params = (part.strip() for part in header.split(";"))  # parameters such as charset=... are ignored
    if not sep or not params or params[-1].lower() != "base64" or mime.lower() not in IMAGE_FORMATS:
        raise ApiError(400, f"{where}: expected data:image/png;base64,... or data:image/jpeg;base64,..., "
                            f"got data:{header[:40]}", param=where, code="invalid_image")
    try:  # MIME base64 wraps its lines, and some clients write the URL-safe alphabet
        compact = "".join(payload.split()).translate(_URLSAFE_B64)
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: the data URL is not valid base64", param=where, code="invalid_image") from None
    try:
        image = Image.open(io.BytesIO(raw))
        w, h = image.size
        if w * h > limits.max_image_pixels:
            raise ApiError(400, f"{where}: image is {w}x{h} = {w * h} pixels; the limit is "
                                f"{limits.max_image_pixels}", param=where, code="image_too_large")
        if image.format not in ("PNG", "JPEG", "MPO"):  # MPO: a JPEG with more pictures after it (phones, cameras)
            raise ApiError(400, f"{where}: image is {image.format}, not PNG or JPEG", param=where,
                           code="invalid_image")
        return to_rgb(image)  # decodes every pixel: a truncated file fails here
    except Image.DecompressionBombError:
        raise ApiError(400, f"{where}: the image is too large to decode; the limit is {limits.max_image_pixels} "
                            "pixels", param=where, code="image_too_large") from None
    except UnidentifiedImageError:  # its message holds the BytesIO's repr: say it in words instead
        raise ApiError(400, f"{where}: not a readable PNG or JPEG image: its {len(raw)} bytes are not in an "
                            "image format the server can decode", param=where, code="invalid_image") from None
    except (OSError, SyntaxError, ValueError, EOFError):  # a damaged or truncated file (PIL raises all four)
        raise ApiError(400, f"{where}: not a readable PNG or JPEG image: the image data is damaged or "
                            "truncated", param=where, code="invalid_image") from None


_URLSAFE_B64 = str.maketrans("-_", "+/")


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB picture of a decoded PNG or JPEG (the first picture of an MPO), upright as its EXIF
    orientation says (a phone's photo). 16- and 32-bit grey (PNG modes I;16, I) is scaled to 8 bits
    first: PIL's convert clips it, so every pixel above 255 (nearly all of a 16-bit image) became white."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np
        from PIL import Image

        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


# ---- responses --------------------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def completion_body(cid: str, model: str, text: str, finish: FinishReason, usage_: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage_}


def chunk_body(cid: str, model: str, created: int, delta: dict[str, Any], finish: FinishReason | None = None,
               usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `chat.completion.chunk` object; with `usage_`, the final usage chunk (no choices)."""
    choices = [] if usage_ is not None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": None, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return body
