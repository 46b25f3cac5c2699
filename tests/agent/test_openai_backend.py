"""The openai backend against a small OpenAI-compatible server started on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from kimi_agent.errors import BackendError, ModelUnavailableError
from kimi_agent.model_runtime.backends import make_backend
from kimi_agent.model_runtime.backends.base import Sampling
from kimi_agent.model_runtime.backends.openai import OpenAIBackend

REPLY = "## Thought\nok\n\n## Action\nClick\n\n## Code\n```python\npyautogui.click(x=0.5, y=0.5)\n```"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan: list[int] = []  # status codes to answer before succeeding
        self.requests: list[dict[str, Any]] = []
        self.reasoning = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.server.plan:
            code = self.server.plan.pop(0)
            data = b'{"error": "busy"}'
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunks = [{"reasoning_content": self.server.reasoning}] if self.server.reasoning else []
            chunks += [{"content": REPLY[i: i + 20]} for i in range(0, len(REPLY), 20)]
            for delta in chunks:
                event = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 1234, "completion_tokens": 56}}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": REPLY}, "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def _messages() -> tuple[list[dict[str, Any]], list[Image.Image]]:
    img = Image.new("RGB", (64, 36), (10, 20, 30))
    return ([{"role": "system", "content": "sys"},
             {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "go"}]}], [img])


def test_retries_429_then_streams(server: _Server) -> None:
    server.plan = [429, 503]
    backend = make_backend("openai", server.url, model="kimi", api_key="sk-test", backoff_s=0.01)
    pieces: list[str] = []
    messages, images = _messages()
    reply = backend.generate(messages, images, Sampling(temperature=0.2, seed=3), on_text=pieces.append)
    assert reply.text == REPLY and "".join(pieces) == REPLY and len(pieces) > 3
    assert reply.finish_reason == "stop" and reply.prompt_tokens == 1234
    assert len(server.requests) == 3
    req = server.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "kimi" and body["stream"] is True and body["seed"] == 3
    part = body["messages"][1]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


def test_reasoning_content_becomes_think_block(server: _Server) -> None:
    server.reasoning = "let me look"
    backend = OpenAIBackend(server.url, model="kimi", backoff_s=0.01, image_format="jpeg")
    messages, images = _messages()
    reply = backend.generate(messages, images, Sampling())
    assert reply.text == "◁think▷let me look◁/think▷" + REPLY
    assert server.requests[0]["body"]["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg")


def test_non_streaming_json(server: _Server) -> None:
    backend = OpenAIBackend(server.url, model="kimi", stream=False)
    messages, images = _messages()
    reply = backend.generate(messages, images, Sampling())
    assert reply.text == REPLY and reply.finish_reason == "length"


def test_gives_up_with_backend_error(server: _Server) -> None:
    server.plan = [500, 500, 500]
    backend = OpenAIBackend(server.url, model="kimi", max_retries=2, backoff_s=0.01)
    with pytest.raises(BackendError, match="3 attempts"):
        backend.generate(*_messages(), Sampling())
    server.plan = [400]
    with pytest.raises(BackendError, match="HTTP 400"):
        backend.generate(*_messages(), Sampling())


def test_unreachable_endpoint_is_a_clear_error() -> None:
    s = _Server()
    url = s.url
    s.server_close()  # nothing listens on that port now
    backend = OpenAIBackend(url, model="kimi", backoff_s=0.01)
    with pytest.raises(ModelUnavailableError, match="check the endpoint URL"):
        backend.generate(*_messages(), Sampling())


def test_a_server_that_accepts_but_never_answers_is_given_up_on_after_one_retry() -> None:
    import socket
    import time

    listener = socket.socket()  # accepts connections (the kernel's backlog) and never reads or writes
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    backend = OpenAIBackend(url, model="kimi", timeout_s=0.5, backoff_s=0.01)  # default: 5 retries, 1 on timeouts
    t = time.monotonic()
    try:
        with pytest.raises(BackendError, match=r"sent nothing for 0.5 s, 2 time\(s\) in a row"):
            backend.generate(*_messages(), Sampling())
    finally:
        listener.close()
    assert time.monotonic() - t < 5  # two waits of 0.5 s, not six
