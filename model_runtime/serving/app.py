"""The OpenAI-compatible ASGI app (Starlette): `/v1/models`, `/v1/chat/completions`, `/health`.

A request is read with a bounded body, checked, and its images decoded and tokenized in a worker
thread (never on the event loop); then it goes to the `Scheduler`, and its text comes back as one
`chat.completion` or, with `stream: true`, as server-sent events (`data: {chunk}\\n\\n` ...
`data: [DONE]\\n\\n`). Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}`,
produced in one place (`_error_response`).

Shutdown: `shutdown_requests(app)` (the server calls it as soon as it is told to stop, before it waits
for open connections) ends every request in flight with a 503 `shutdown` error (in-band for a stream,
which then ends with `data: [DONE]`), cancels their generation, and refuses new ones, so a server
stopped in the middle of long generations exits at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.serving.errors import ApiError, as_api_error
from kimi_agent.model_runtime.serving.protocol import (
    ChatCompletionRequest,
    RequestLimits,
    chunk_body,
    completion_body,
    completion_id,
    convert_messages,
    parse_request,
    usage,
)
from kimi_agent.model_runtime.serving.scheduler import PreparedPrompt, SamplingParams, Scheduler, TextStream

log = logging.getLogger(__name__)
T = TypeVar("T")
BODY_TIMEOUT_S = 60.0  # a request's body arrives within this, or the request is a 408
MIN_MESSAGE_TOKENS = 3  # the least a message takes in Kimi's template: its role token, <|im_middle|>, <|im_end|>
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates: a str from JSON can hold them, UTF-8 cannot
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # the only way one gets in: an escape in the JSON text
MAX_JSON_VALUES = 4_000_000  # commas, arrays and objects a body may hold (a 131,072-token prompt needs far fewer)

@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What the app answers with. max_model_len: prompt + completion tokens of one request.
    temperature/top_p: used when a request leaves them out (the checkpoint's generation_config)."""

    model_name: str
    max_model_len: int = 32768
    temperature: float = 0.0
    top_p: float = 1.0
    request_timeout_s: float = 600.0
    limits: RequestLimits = field(default_factory=RequestLimits)
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(scheduler: Scheduler, processor: Any, config: ServeConfig) -> Starlette:
    """The app; the scheduler is started when the app starts and closed when it stops.
    processor: a `KimiVLProcessor` (messages + images -> token ids)."""
    api = _Api(scheduler, processor, config, max_token_bytes=processor.tokenizer.max_token_bytes,
               bodies=_BodyBudget(config.limits.total_body_bytes))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.close)

    app = Starlette(
        routes=[Route("/v1/models", api.models, methods=["GET"]),
                Route("/v1/models/{model:path}", api.model, methods=["GET"]),
                Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
                Route("/health", api.health, methods=["GET"])],
        exception_handlers={ApiError: _error_response, HTTPException: _error_response,
                            Exception: _error_response},  # Exception: the 500 handler
        lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.api = api
    return app


def shutdown_requests(app: Starlette) -> int:
    """End every request in flight on `app` (made by `create_app`) with a 503 and refuse new ones;
    returns how many were ended. Call it on the event loop's thread."""
    api = getattr(app.state, "api", None)
    return api.shutdown() if isinstance(api, _Api) else 0


def _shutdown_error() -> ApiError:
    return ApiError(503, "the server is shutting down; the request was stopped before it finished",
                    type="server_error", code="shutdown")


async def _error_response(_: Request, exc: Exception) -> Response:
    """The one place where errors become responses (OpenAI's error shape). Any other exception is a bug:
    a 500 in the same shape (Starlette re-raises it, so the server still logs its traceback)."""
    if isinstance(exc, HTTPException):  # its headers stay (a 405's Allow)
        exc = ApiError(exc.status_code, f"{exc.detail}", type="invalid_request_error",
                       code="not_found" if exc.status_code == 404 else None, headers=dict(exc.headers or {}))
    elif not isinstance(exc, ApiError):
        exc = ApiError(500, f"the server failed on this request ({type(exc).__name__}); its log has the details",
                       type="server_error")
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


@dataclass
class _BodyBudget:
    """Bytes of request bodies held at once, each from its first byte until its prompt is built (or it
    fails), at most `limit`: ten 60 MiB bodies each one byte short of complete held +620 MB for a minute,
    and each 64 MiB body turned into a prompt took gigabytes more. Used on the event loop only."""

    limit: int
    held: int = 0


@dataclass
class _BodyHold:
    """One request's share of the `_BodyBudget`: `grow_to(n)` before its body's n-th byte is kept
    (503 `server_busy`, closing the connection, when the budget has no room), `release()` at its end."""

    budget: _BodyBudget
    size: int = 0

    def grow_to(self, size: int) -> None:
        extra, budget = size - self.size, self.budget
        if extra <= 0:
            return
        if budget.held + extra > budget.limit:
            raise ApiError(503, f"the server is receiving {budget.held} bytes of other request bodies, and its limit "
                                f"for all bodies at once is {budget.limit} bytes; retry shortly", type="server_error",
                           code="server_busy", headers={"Connection": "close", "Retry-After": "1"})
        budget.held += extra
        self.size = size

    def release(self) -> None:
        self.budget.held -= self.size
        self.size = 0


@dataclass
class _Api:
    scheduler: Scheduler
    processor: Any
    config: ServeConfig
    max_token_bytes: int  # the tokenizer's longest token in bytes (`prompt_token_floor`)
    bodies: _BodyBudget
    live: set[TextStream] = field(default_factory=set)  # requests submitted and not yet answered
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set with `closing`, on the event loop

    def shutdown(self) -> int:
        """Refuse new requests; end those in flight with a 503 (see the module docstring), those still
        arriving or being prepared too."""
        self.closing = True
        self.closed.set()
        streams = list(self.live)
        if streams:
            log.info("shutting down: stopping %d request(s) in flight", len(streams))
        for stream in streams:
            stream.abort(_shutdown_error())
        return len(streams)

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_name, "object": "model", "created": self.config.created,
                "owned_by": "kimi-agent", "max_model_len": self.config.max_model_len}

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self._check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    def _check_model(self, name: str) -> None:
        if name != self.config.model_name:
            raise ApiError(404, f"The model {name!r} does not exist; this server serves "
                                f"{self.config.model_name!r}", param="model", code="model_not_found")

    async def chat_completions(self, request: Request) -> Response:
        hold = _BodyHold(self.bodies)
        try:
            body = await self._unless_closed(_read_body(request, self.config.limits.max_body_bytes, hold))
            # a 64 MiB body parses for seconds: off the event loop; a client gone meanwhile is not served
            req = await self._unless_closed(run_in_threadpool(_parse_body, body), request)
            del body
            self._check_model(req.model)
            gone = threading.Event()  # set when the client goes away: the preparing thread stops at its next stage
            prompt = await self._unless_closed(run_in_threadpool(self._prepare, req, gone), request, gone)
        finally:
            hold.release()
        params = self._sampling(req, prompt.num_tokens)
        stream = self.scheduler.submit(prompt, params)
        self.live.add(stream)
        cid = completion_id()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._events(stream, cid, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watch = asyncio.create_task(_cancel_on_disconnect(request, stream))
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                text = await stream.text()
        except (ApiError, TimeoutError) as e:  # the stream fails only with ApiError
            raise as_api_error(e) from None
        finally:
            stream.cancel()  # a no-op when finished
            self.live.discard(stream)
            watch.cancel()
        c = stream.completion
        assert c is not None
        return JSONResponse(completion_body(cid, self.config.model_name, text, c.finish_reason,
                                            usage(c.prompt_tokens, c.completion_tokens, c.cached_prompt_tokens)))

    async def _unless_closed(self, step: Awaitable[T], request: Request | None = None,
                             gone: threading.Event | None = None) -> T:
        """`await step`, unless the server starts shutting down first: then a 503 `shutdown` (a request
        still arriving or being prepared gets OpenAI's error shape too, not uvicorn's plain 500 once
        its grace period ends); or, given the `request` whose body has arrived, unless its client goes
        away first (a 400 nobody reads). Either way `gone` is set, so a preparing thread stops at its
        next stage (its result unused)."""
        if self.closing:
            raise _shutdown_error()
        work = asyncio.ensure_future(step)
        waits = {work, asyncio.ensure_future(self.closed.wait())}
        if request is not None:
            waits.add(asyncio.ensure_future(_disconnected(request)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            for waiting in waits - {work}:
                waiting.cancel()
        if not work.done():
            work.cancel()
            if gone is not None:
                gone.set()
            raise _shutdown_error() if self.closing else _gone_error()
        return work.result()

    def _prepare(self, req: ChatCompletionRequest, gone: threading.Event) -> PreparedPrompt:
        """Decode images and tokenize (runs in a worker thread); 400 when it is too long: at once, before
        any image is decoded or text encoded, when `prompt_token_floor` cannot fit. Stops (a 400 nobody
        reads) at its next stage once `gone` is set."""
        limit = self.config.max_model_len
        floor, chars = prompt_token_floor(req.messages, self.max_token_bytes)
        if floor >= limit:  # no room left for one generated token
            raise ApiError(400, f"This model's maximum context length is {limit} tokens; {len(req.messages)} "
                                f"messages take at least {floor} (at least {MIN_MESSAGE_TOKENS} each, and their "
                                f"{chars} characters of text at least one token per {self.max_token_bytes}). "
                                "Shorten the messages or send fewer.",
                           param="messages", code="context_length_exceeded")
        if gone.is_set():
            raise _gone_error()
        messages, images = convert_messages(req.messages, self.config.limits)
        if gone.is_set():
            raise _gone_error()
        try:
            batch = self.processor(messages=messages, images=images)
        except (AgentError, ValueError) as e:
            raise ApiError(400, f"messages could not be turned into a prompt: {e}", param="messages") from None
        prompt = PreparedPrompt(batch["input_ids"], batch.get("pixel_values"), batch.get("image_grid_hws"))
        want = req.max_new_tokens or 1
        if prompt.num_tokens + want > limit:
            asked = want if want < 10**12 else f"a {len(str(want))}-digit number of"  # not 4,300 digits back
            raise ApiError(400, f"This model's maximum context length is {limit} tokens; the prompt has "
                                f"{prompt.num_tokens} tokens (images included) and {asked} more were requested. "
                                "Shorten the messages, send fewer or smaller images, or lower max_tokens.",
                           param="messages", code="context_length_exceeded")
        return prompt

    def _sampling(self, req: ChatCompletionRequest, prompt_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=req.max_new_tokens or self.config.max_model_len - prompt_tokens,
            temperature=self.config.temperature if req.temperature is None else req.temperature,
            top_p=self.config.top_p if req.top_p is None else req.top_p,
            seed=req.seed, stop=req.stop_strings(self.config.limits))

    async def _events(self, stream: TextStream, cid: str, include_usage: bool) -> AsyncIterator[str]:
        """The SSE body: a role chunk, content chunks, a finish chunk, [usage chunk], [DONE]."""
        model, created = self.config.model_name, int(time.time())
        try:
            yield _sse(chunk_body(cid, model, created, {"role": "assistant", "content": ""}))
            async with asyncio.timeout(self.config.request_timeout_s):
                async for piece in stream:
                    yield _sse(chunk_body(cid, model, created, {"content": piece}))
            c = stream.completion
            assert c is not None
            yield _sse(chunk_body(cid, model, created, {}, c.finish_reason))
            if include_usage:
                yield _sse(chunk_body(cid, model, created, {},
                                      usage_=usage(c.prompt_tokens, c.completion_tokens, c.cached_prompt_tokens)))
        except (ApiError, TimeoutError) as e:  # headers are sent: report in-band
            yield _sse(as_api_error(e).body())
        finally:
            stream.cancel()  # a no-op when finished; stops generation when the client went away
            self.live.discard(stream)
        yield "data: [DONE]\n\n"


async def _disconnected(request: Request, every_s: float = 0.25) -> None:
    """Return once the client of `request` (whose body has been read) has gone away."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)


def _gone_error() -> ApiError:
    return ApiError(400, "the client went away before its request was answered", code="client_disconnected")


def prompt_token_floor(messages: list[dict[str, Any]], max_token_bytes: int) -> tuple[int, int]:
    """(a lower bound on the tokens of the prompt of OpenAI `messages`, the characters of their text),
    known before any image is decoded or text encoded: Kimi's template puts at least `MIN_MESSAGE_TOKENS`
    special tokens around each message, and encodes each message's text apart from them as ordinary text,
    of at least chars / `max_token_bytes` tokens (a character is at least one UTF-8 byte, a token at most
    `max_token_bytes`, 256 for Kimi-VL). Images only add tokens. One `len` per text: microseconds where
    encoding a 64 MB body took 15 s of CPU and 2.6 GB."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p["text"]) for p in content
                         if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return len(messages) * MIN_MESSAGE_TOKENS + -(-chars // max_token_bytes), chars


async def _cancel_on_disconnect(request: Request, stream: TextStream, every_s: float = 0.25) -> None:
    """Cancel `stream` when the client of a non-streamed request goes away (a timed-out client's
    retry must not queue behind its own abandoned generation)."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)
    stream.cancel()


def _sse(obj: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _read_body(request: Request, limit: int, hold: _BodyHold) -> bytes:
    """The request body, at most `limit` bytes (413 beyond), within `BODY_TIMEOUT_S` (408 beyond: a
    client that trickles its body, or stops sending it, does not hold a connection and its memory),
    its bytes taken from the server's budget for all bodies (`hold`) as they arrive (not as declared:
    a Content-Length costs nothing to send)."""
    timeout_s = BODY_TIMEOUT_S
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"the request body is larger than the server's limit of {limit} bytes",
                       code="request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_big
                hold.grow_to(len(body))
    except ClientDisconnect:  # nobody to answer; an error here is not logged as the server's
        raise ApiError(400, "the client went away before its request body arrived", code="client_disconnected") \
            from None
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout",
                       headers={"Connection": "close"}) from None
    return bytes(body)


def _parse_body(body: bytes) -> ChatCompletionRequest:
    """The request of a body (runs in a worker thread): JSON of at most `MAX_JSON_VALUES` values,
    free of lone surrogates, validated."""
    values = body.count(b",") + body.count(b"[") + body.count(b"{")  # C speed: about 20 ms for 64 MiB
    if values > MAX_JSON_VALUES:  # json.loads holds the GIL: millions of tiny values stalled every stream
        raise ApiError(400, f"the request body holds more than {MAX_JSON_VALUES} JSON values (arrays, objects, "
                            "list items); no prompt the model can take needs that many")
    data = _loads(body)
    if _SURROGATE_ESCAPE.search(body) is not None and (where := lone_surrogate(data)) is not None:
        shown = where[0] if len(where[0]) <= 120 else where[0][:117] + "..."
        raise ApiError(400, f"the request body holds a lone UTF-16 surrogate (\\u{where[1]:04x}) at "
                            f"{shown or 'a key of the body'}, which is not a Unicode character",
                       param=shown or None)
    return parse_request(data)


def lone_surrogate(value: Any) -> tuple[str, int] | None:
    """(where, code point) of the first lone surrogate (`"\\ud800"` in JSON) in a parsed body's keys
    and strings, or None. Such a string cannot be encoded as UTF-8: not tokenized, not even echoed in
    an error. Iterative, and the path is built only for the value found (a valid surrogate pair, an
    escaped emoji, makes the server look at every string)."""
    todo: list[tuple[Any, tuple[Any, ...] | None]] = [(value, None)]  # (value, (parent link, key))

    def path(link: tuple[Any, ...] | None) -> str:
        keys: list[str] = []
        while link is not None:
            link, key = link
            keys.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:40]}")
        return "".join(reversed(keys)).lstrip(".")

    while todo:
        v, link = todo.pop()
        if isinstance(v, str):
            if (bad := _SURROGATE.search(v)) is not None:
                return path(link), ord(bad.group())
        elif isinstance(v, dict):
            for k, item in v.items():
                if (bad := _SURROGATE.search(k)) is not None:
                    return path(link), ord(bad.group())
                todo.append((item, (link, k)))
        elif isinstance(v, list):
            todo.extend((item, (link, i)) for i, item in enumerate(v))
    return None


def _loads(body: bytes) -> Any:
    """`json.loads(body)` with every failure a 400 that says why."""
    try:
        return json.loads(body)
    except RecursionError:  # `[[[[...` deeper than Python's stack; a client's mistake, not the server's
        raise ApiError(400, "the request body is not valid JSON the server can read: its arrays or objects are "
                            "nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    except ValueError:  # the only other one: an integer past Python's str -> int digit limit
        raise ApiError(400, "the request body is not valid JSON the server can read: a number in it has more "
                            f"than {sys.get_int_max_str_digits()} digits") from None
