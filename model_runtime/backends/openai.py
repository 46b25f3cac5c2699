"""`OpenAIBackend`: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a load balancer).

Images go as base64 data URLs (PNG at compress level 1, or JPEG). Replies stream over SSE and each
text piece reaches `on_text`. 429, 5xx and timeouts are retried with exponential backoff (honouring
`Retry-After`); a server that accepts the connection but sends nothing for `timeout_s` is tried
`timeout_retries` more times only (a hung server rarely recovers in seconds), so a call waits at
most about (1 + timeout_retries) x timeout_s for it; an endpoint that cannot be reached at all raises
`ModelUnavailableError` with what to do, and any other failure `BackendError` with the server's message. Reasoning that a server
returns apart (`reasoning_content`) is put back as `◁think▷...◁/think▷` so the parser sees one text.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import httpx

from kimi_agent.errors import BackendError, ModelUnavailableError
from kimi_agent.model_runtime.backends.base import Message, Reply, Sampling

if TYPE_CHECKING:
    from PIL import Image

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_THINK_OPEN, _THINK_CLOSE = "◁think▷", "◁/think▷"


def encode_image(image: Image.Image, fmt: Literal["png", "jpeg"] = "png", *, quality: int = 90) -> str:
    """A `data:` URL of `image` (PNG with zlib level 1, or JPEG at `quality`)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIBackend:
    """Chat completions over HTTP; `endpoint` is the API base, e.g. `http://host:8000/v1`."""

    name = "openai"

    def __init__(self, endpoint: str, *, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 image_format: Literal["png", "jpeg"] = "png", stream: bool = True, connect_retries: int = 1,
                 timeout_retries: int = 1, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.connect_retries = connect_retries  # a refused connection is rarely transient: fail fast
        self.timeout_retries = timeout_retries  # nor is a server that answers nothing
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.image_format: Literal["png", "jpeg"] = image_format
        self.stream = stream
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
                                              headers=headers)
        self._encoded: OrderedDict[int, tuple[Image.Image, str]] = OrderedDict()  # history frames repeat

    def close(self) -> None:
        self._client.close()

    # ---- request building -------------------------------------------------------------------

    def _data_url(self, image: Image.Image) -> str:
        hit = self._encoded.get(id(image))
        if hit is not None and hit[0] is image:
            self._encoded.move_to_end(id(image))
            return hit[1]
        url = encode_image(image, self.image_format)
        self._encoded[id(image)] = (image, url)
        while len(self._encoded) > 8:
            self._encoded.popitem(last=False)
        return url

    def to_openai_messages(self, messages: list[Message], images: list[Image.Image]) -> list[dict[str, Any]]:
        """Replace each `{"type": "image"}` part with the next image as an `image_url` part."""
        it = iter(images)
        out: list[dict[str, Any]] = []
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                parts: list[dict[str, Any]] = []
                for part in content:
                    if part.get("type") == "image":
                        try:
                            image = next(it)
                        except StopIteration:
                            raise ValueError("more image parts than images") from None
                        parts.append({"type": "image_url", "image_url": {"url": self._data_url(image)}})
                    else:
                        parts.append(part)
                content = parts
            out.append({"role": m["role"], "content": content})
        return out

    def _payload(self, messages: list[Message], images: list[Image.Image], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.to_openai_messages(messages, images),
                                "temperature": sampling.temperature, "top_p": sampling.top_p,
                                "max_tokens": sampling.max_new_tokens, "stream": self.stream}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, messages: list[Message], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        body = self._payload(messages, images, sampling)
        url = f"{self.endpoint}/chat/completions"
        t0 = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                reply = self._request(url, body, on_text)
            except _Retryable as e:
                if last:
                    raise BackendError(f"{url} kept failing after {self.max_retries + 1} attempts: {e}") from None
                time.sleep(self._delay(attempt, e.retry_after))
                continue
            except httpx.ConnectError as e:
                if last or attempt >= self.connect_retries:
                    raise ModelUnavailableError(
                        f"Cannot reach the model server at {self.endpoint} ({e}); start it (e.g. `vllm serve "
                        f"{self.model}`) or check the endpoint URL.") from None
                time.sleep(self._delay(attempt, None))
                continue
            except httpx.TimeoutException as e:
                if last or attempt >= self.timeout_retries:
                    raise BackendError(
                        f"the model server at {self.endpoint} sent nothing for {self.timeout_s:g} s, {attempt + 1} "
                        f"time(s) in a row ({type(e).__name__}); is it overloaded or stuck? Check its log, or "
                        f"check the endpoint URL.") from None
                time.sleep(self._delay(attempt, None))
                continue
            except httpx.HTTPError as e:
                raise BackendError(f"request to {url} failed: {type(e).__name__}: {e}") from None
            reply.latency_ms = (time.perf_counter() - t0) * 1000
            return reply
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        return float(min(self.backoff_s * 2**attempt, self.max_backoff_s))

    def _request(self, url: str, body: dict[str, Any], on_text: Callable[[str], None] | None) -> Reply:
        with self._client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = resp.read().decode("utf-8", "replace")[:500]
                if resp.status_code in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {resp.status_code}: {text}", _retry_after(resp))
                raise BackendError(f"{url} answered HTTP {resp.status_code}" + (f": {text}" if text.strip() else
                                                                                 " with an empty body"))
            if body["stream"] and resp.headers.get("content-type", "").startswith("text/event-stream"):
                return _read_stream(resp.iter_lines(), on_text)
            reply = _read_json(json.loads(resp.read()))
            if on_text is not None and reply.text:
                on_text(reply.text)
            return reply


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _finish(reason: str | None) -> Literal["stop", "length", "error"]:
    return "length" if reason == "length" else "stop"


def _join(reasoning: str, content: str) -> str:
    return f"{_THINK_OPEN}{reasoning}{_THINK_CLOSE}{content}" if reasoning else content


def _read_json(data: dict[str, Any]) -> Reply:
    try:
        choice = data["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"unexpected response shape: {str(data)[:300]}") from None
    usage = data.get("usage") or {}
    text = _join(msg.get("reasoning_content") or "", msg.get("content") or "")
    return Reply(text=text, finish_reason=_finish(choice.get("finish_reason")),
                 prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))


def _read_stream(lines: Iterator[str], on_text: Callable[[str], None] | None) -> Reply:
    content: list[str] = []
    reasoning: list[str] = []
    finish: str | None = None
    usage: dict[str, Any] = {}
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise BackendError(f"bad server-sent event: {data[:200]}") from None
        if chunk.get("error"):
            raise BackendError(f"the server reported an error mid-stream: {str(chunk['error'])[:300]}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                piece = delta["reasoning_content"]
                if on_text is not None:
                    on_text((_THINK_OPEN if not reasoning else "") + piece)
                reasoning.append(piece)
            if delta.get("content"):
                piece = delta["content"]
                if on_text is not None:
                    on_text((_THINK_CLOSE if reasoning and not content else "") + piece)
                content.append(piece)
            finish = choice.get("finish_reason") or finish
    return Reply(text=_join("".join(reasoning), "".join(content)), finish_reason=_finish(finish),
                 prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
