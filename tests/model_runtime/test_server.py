"""`kimi-agent serve`: the real app under uvicorn on a free loopback port, the tiny random checkpoint
behind it, and the official `openai` client (plus raw httpx where the client hides the wire)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from kimi_agent.model_runtime.serving.errors import QueueFullError  # noqa: E402
from kimi_agent.model_runtime.serving.protocol import RequestLimits  # noqa: E402
from kimi_agent.model_runtime.serving.server import BackgroundServer  # noqa: E402
from kimi_agent.model_runtime.stops import StopMatcher  # noqa: E402

MODEL = "kimi-tiny"
MAX_MODEL_LEN = 4096


def png_data_url(color: tuple[int, int, int], size: tuple[int, int] = (56, 42), fmt: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    mime = "png" if fmt == "PNG" else "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(text: str, url: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a GUI agent."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


class RunningServer(BackgroundServer):
    """The app on a loopback port in this process, with an `openai` client for it."""

    def client(self, **kwargs: Any) -> Any:
        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=120, **kwargs)


def build(tiny_checkpoint: Path, **overrides: Any) -> Any:
    from kimi_agent.model_runtime.serving.server import ServeOptions, build_app

    options = dict(model=tiny_checkpoint, served_model_name=MODEL, device="cpu", dtype="float32",
                   max_model_len=MAX_MODEL_LEN, limits=RequestLimits(max_body_bytes=4 << 20, max_images=4))
    options.update(overrides)
    return build_app(ServeOptions(**options))


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path) -> Iterator[RunningServer]:
    with RunningServer(build(tiny_checkpoint)) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Any:
    return server.client()


def eventually(check: Any, what: str, seconds: float = 60.0) -> None:
    """Poll `check()` every 0.1 s until it is true; fail naming `what` after `seconds` (a bounded wait for
    the server's background threads, which notice a closed connection at their own pace)."""
    for _ in range(int(seconds * 10)):
        if check():
            return
        threading.Event().wait(0.1)
    pytest.fail(f"not within {seconds:g} s: {what}")


def chat(client: Any, messages: list[dict[str, Any]], **kw: Any) -> Any:
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


def streamed(client: Any, messages: list[dict[str, Any]], **kw: Any) -> tuple[list[str], list[Any]]:
    """The content pieces of a streamed reply, and every chunk."""
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kw))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    return pieces, chunks


# ---- the API ------------------------------------------------------------------------------------

def test_models_list_names_the_served_model(client: Any) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_completion_with_an_image_data_url(client: Any) -> None:
    text_only = chat(client, [{"role": "user", "content": "Where is the search box?"}])
    r = chat(client, image_message("Where is the search box?", png_data_url((200, 30, 30))))
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    # a 56x42 image is 2x2 merged patches of a 4x3 patch grid... padded to 28 px: 2 x 2 = 4 image tokens
    assert r.usage.prompt_tokens > text_only.usage.prompt_tokens
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    jpeg = chat(client, image_message("Where is the search box?", png_data_url((200, 30, 30), fmt="JPEG")))
    assert jpeg.usage.prompt_tokens == r.usage.prompt_tokens  # same size, same token count


def test_max_tokens_bounds_the_reply_with_finish_reason_length(client: Any) -> None:
    r = chat(client, [{"role": "user", "content": "Count to one hundred."}], max_completion_tokens=3)
    # the random tiny model almost never samples a stop token among 163,840 ids
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (3, "length")


def test_streaming_pieces_concatenate_to_the_non_streamed_text(client: Any) -> None:
    messages = image_message("Describe the screen.", png_data_url((10, 120, 240)))
    whole = chat(client, messages, max_tokens=16)
    pieces, chunks = streamed(client, messages, max_tokens=16, stream_options={"include_usage": True})
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_sse_wire_format_ends_with_done(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_second_call_sharing_the_prefix_reports_cached_tokens(client: Any) -> None:
    first = image_message("Step 1: open the settings.", png_data_url((0, 200, 0)))
    r1 = chat(client, first)
    follow = [*first, {"role": "assistant", "content": r1.choices[0].message.content},
              {"role": "user", "content": "Step 2: now enable Do Not Track."}]
    r2 = chat(client, follow)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens - 1  # the whole first prompt (image included) was reused
    assert cached < r2.usage.prompt_tokens


def test_seeded_sampling_repeats(client: Any) -> None:
    messages = [{"role": "user", "content": "Say something random."}]
    a = chat(client, messages, temperature=0.9, top_p=0.95, seed=7, max_tokens=10)
    b = chat(client, messages, temperature=0.9, top_p=0.95, seed=7, max_tokens=10)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stop_string_ends_the_reply_before_it(client: Any) -> None:
    messages = [{"role": "user", "content": "Write a long answer."}]
    full = chat(client, messages, max_tokens=24).choices[0].message.content
    assert len(full) >= 12, full
    stop = full[6:9]
    expected = full[: full.find(stop)]
    r = chat(client, messages, max_tokens=24, stop=[stop, "never-appears-here"])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (expected, "stop")
    pieces, _ = streamed(client, messages, max_tokens=24, stop=stop)
    assert "".join(pieces) == expected


# ---- errors -------------------------------------------------------------------------------------

def test_bad_images_are_400_naming_the_part(client: Any) -> None:
    truncated = png_data_url((1, 2, 3), size=(300, 200))
    truncated_png = base64.b64decode(truncated.split(",", 1)[1])[:-40]  # cut inside the pixel data
    ihdr = b"IHDR" + (16).to_bytes(4, "big")  # a 4-byte IHDR (13 are due): PIL raises ValueError, not OSError
    short_header = b"\x89PNG\r\n\x1a\n" + (4).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    cases = {
        "data:image/png;base64,bm90IGFuIGltYWdl": "not a readable PNG or JPEG image: its 12 bytes are not in an "
                                                  "image format",  # "not an image"
        "data:image/png;base64," + base64.b64encode(truncated_png).decode(): "damaged or truncated",
        "data:image/png;base64," + base64.b64encode(short_header).decode(): "damaged or truncated",
        "data:image/png;base64,%%%notbase64": "not valid base64",
        "https://example.com/screenshot.png": "does not fetch remote images",
        "data:text/plain;base64,aGVsbG8=": "expected data:image/png;base64",
    }
    for url, message in cases.items():
        with pytest.raises(openai.BadRequestError) as err:
            chat(client, image_message("What is this?", url))
        assert err.value.status_code == 400
        body = err.value.body
        assert message in body["message"], body
        assert body["param"] == "messages[1].content[0].image_url" and body["type"] == "invalid_request_error"
        assert body["message"].startswith("messages[1].content[0].image_url")
        assert "object at 0x" not in body["message"] and "BytesIO" not in body["message"], body


def test_request_errors_are_openai_shaped(client: Any, server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert nf.value.body["code"] == "model_not_found" and "gpt-4o" in nf.value.body["message"]
    too_long = [{"role": "user", "content": "word " * (MAX_MODEL_LEN + 100)}]
    with pytest.raises(openai.BadRequestError) as tl:
        chat(client, too_long)
    assert tl.value.body["code"] == "context_length_exceeded" and str(MAX_MODEL_LEN) in tl.value.body["message"]
    with pytest.raises(openai.BadRequestError) as big_budget:
        chat(client, [{"role": "user", "content": "hi"}], max_tokens=MAX_MODEL_LEN)
    assert big_budget.value.body["code"] == "context_length_exceeded"
    many = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url((i, i, i))}}
                                         for i in range(5)]}]
    with pytest.raises(openai.BadRequestError) as imgs:
        chat(client, many)
    assert "at most 4 images" in imgs.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad_field:
        chat(client, [{"role": "user", "content": "hi"}], temperature=5)
    assert bad_field.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as role:
        chat(client, [{"role": "tool", "content": "42"}])
    assert role.value.body["param"] == "messages[0].role"
    huge = httpx.post(f"{server.base_url}/chat/completions", content=b"x" * (5 << 20), timeout=60,
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    junk = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json", timeout=60)
    assert junk.status_code == 400 and "not valid JSON" in junk.json()["error"]["message"]
    missing = httpx.get(f"{server.base_url}/no/such/route", timeout=60)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = httpx.get(f"{server.base_url}/chat/completions", timeout=60)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST", wrong_method.headers
    huge_budget = _post_raw(server, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                "max_tokens": 10**4000}).encode())
    assert huge_budget.status_code == 400 and "a 4001-digit number of more" in huge_budget.json()["error"]["message"]



def _post_raw(server: RunningServer, content: bytes) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", content=content, timeout=60,
                      headers={"content-type": "application/json"})


def _error_of(r: httpx.Response) -> dict[str, Any]:
    """The OpenAI-shaped error of a response (fails on a plain-text error page)."""
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text[:200])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def test_unparsable_bodies_are_openai_shaped_400s(server: RunningServer) -> None:
    """Nesting deeper than Python's stack (a RecursionError inside json.loads, once a plain-text 500) and an
    integer past Python's digit limit are the client's mistakes: 400s, and the server keeps serving."""
    hi = '"messages": [{"role": "user", "content": "hi"}]'
    cases = {
        b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_000: "nested too deeply",
        f'{{"model": "{MODEL}", {hi}, "stop": {"[" * 50_000}"x"{"]" * 50_000}}}'.encode(): "nested too deeply",
        f'{{"model": "{MODEL}", {hi}, "seed": {"9" * 5000}}}'.encode(): "has more than 4300 digits",
        b'{"model": "' + MODEL.encode() + b'", \xff}': "not valid JSON",
    }
    for body, fragment in cases.items():
        r = _post_raw(server, body)
        error = _error_of(r)
        assert r.status_code == 400 and error["type"] == "invalid_request_error", (r.status_code, error)
        assert fragment in error["message"], error
        assert "Traceback" not in error["message"] and "sys.set_int_max_str_digits" not in error["message"]
    # nested as deep as json.loads allows, in a field read later: still a 400 naming it (no deep repr)
    deep_role = f'{{"model": "{MODEL}", "messages": [{{"role": {"[" * 400}{"]" * 400}, "content": "hi"}}]}}'
    r = _post_raw(server, deep_role.encode())
    assert r.status_code == 400 and _error_of(r)["param"] == "messages[0].role", r.text[:300]
    assert "got an array" in r.json()["error"]["message"]
    assert httpx.get(f"{server.base_url[:-3]}/health", timeout=60).json() == {"status": "ok"}


def test_a_lone_surrogate_is_a_400_naming_where_it_is(server: RunningServer) -> None:
    """JSON may escape half a UTF-16 pair ("\\ud800"): no UTF-8 text holds it, so it could be neither
    tokenized nor echoed in an error (a 500 whose handler crashed). The server keeps serving."""
    for body, where in (
            (b'{"model": "%s", "messages": [{"role": "\\ud800", "content": "hi"}]}' % MODEL.encode(), "messages[0].role"),
            (b'{"model": "%s", "messages": [{"role": "user", "content": "a\\udfffb"}]}' % MODEL.encode(),
             "messages[0].content")):
        r = _post_raw(server, body)
        error = _error_of(r)
        assert r.status_code == 400 and error["param"] == where, (r.status_code, error)
        assert "lone UTF-16 surrogate" in error["message"], error
    assert httpx.get(f"{server.base_url}/models", timeout=60).status_code == 200


def test_vanishing_temperatures_and_top_ps_are_served_beside_other_requests(client: Any) -> None:
    """1e-46 is 0 in float32: it failed the request and every other one decoding in its batch (500)."""
    hi = [{"role": "user", "content": "Say something long."}]
    with ThreadPoolExecutor(4) as pool:
        other = pool.submit(streamed, client, hi, max_tokens=40)
        odd = [pool.submit(chat, client, hi, temperature=t, top_p=p)
               for t, p in ((1e-46, 1.0), (1.0, 1e-46), (5e-324, 5e-324))]
        replies = [f.result(timeout=300) for f in odd]
        _, chunks = other.result(timeout=300)
    greedy = chat(client, hi).choices[0].message.content
    assert [r.choices[0].message.content for r in replies[:1]] == [greedy]  # a temperature of 0, in effect
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_body_of_millions_of_tiny_values_is_refused_before_it_is_parsed(server: RunningServer,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """json.loads holds the GIL: a 64 MiB body of `[],` stalled every stream for 8 s. Counted first."""
    from kimi_agent.model_runtime.serving import app as app_module

    monkeypatch.setattr(app_module, "MAX_JSON_VALUES", 1000)  # 4,000,000 in a real server (a 64 MiB body)
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "user": [%s]}' % (
        MODEL.encode(), b",".join([b"[]"] * 1001))
    r = _post_raw(server, body)
    error = _error_of(r)
    assert r.status_code == 400 and "more than 1000 JSON values" in error["message"], error
    fine = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a, b, c \U0001F600"}],
                       "max_tokens": 2}).encode()  # an escaped emoji: a valid surrogate pair
    assert b"\\ud83d" in fine and _post_raw(server, fine).status_code == 200


def test_messages_that_cannot_fit_are_refused_before_the_prompt_is_built(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": ""}] * 100_000, "max_tokens": 2}
    r = _post_raw(server, json.dumps(body).encode())  # 3 MB; 200,000 took 49 s to render when prompts grew quadratically
    error = _error_of(r)
    assert r.status_code == 400 and error["code"] == "context_length_exceeded", error
    assert "100000 messages take at least 300000" in error["message"], error


def test_a_body_that_stops_arriving_is_a_408(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from kimi_agent.model_runtime.serving import app as app_module

    monkeypatch.setattr(app_module, "BODY_TIMEOUT_S", 1.0)  # 60 s in a real server
    with RunningServer(build(tiny_checkpoint)) as running:
        host, port = running.base_url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"model\": ")  # and nothing more
            reply = b""
            while chunk := sock.recv(65536):  # the 408 says Connection: close, so the server closes after it
                reply += chunk
    text = reply.decode()
    assert text.startswith("HTTP/1.1 408"), text[:200]
    assert '"code":"request_timeout"' in text.replace(" ", ""), text


def test_a_connection_that_never_finishes_its_request_head_is_closed(tiny_checkpoint: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from kimi_agent.model_runtime.serving import server as server_module

    monkeypatch.setattr(server_module, "HEADER_TIMEOUT_S", 1.0)  # 30 s in a real server
    with RunningServer(build(tiny_checkpoint)) as running:
        host, port = running.base_url.split("//")[1].split("/")[0].split(":")
        for first in (b"", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: "):  # silent, then a trickle
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(first)
                assert sock.recv(65536) == b""  # closed by the server, without an answer
        with socket.create_connection((host, int(port)), timeout=30) as sock:  # a whole request is answered
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the idle kept-alive connection
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"]}"), answer[:300]


def test_a_request_still_arriving_at_shutdown_gets_the_503_shutdown_error(tiny_checkpoint: Path) -> None:
    """Not uvicorn's plain-text 500 once its grace period ends, with a traceback in the log."""
    import socket

    running = RunningServer(build(tiny_checkpoint))
    with running:
        host, port = running.base_url.split("//")[1].split("/")[0].split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")  # the rest never comes
        time.sleep(0.5)
    with sock:  # leaving the block shut the server down
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    text = reply.decode()
    assert text.startswith("HTTP/1.1 503"), text[:300]
    assert '"code":"shutdown"' in text.replace(" ", ""), text  # uvicorn's grace period ends in a plain 500


def test_data_urls_as_other_clients_write_them_are_read() -> None:
    """MIME base64 with line breaks, the URL-safe alphabet, a charset parameter; and a phone's JPEG
    whose EXIF orientation says it is turned is read upright."""
    from PIL import Image

    from kimi_agent.model_runtime.serving.protocol import RequestLimits, decode_image_url

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (250, 250, 250)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    urlsafe = base64.urlsafe_b64encode(buf.getvalue()).decode()
    for url in ("data:image/png;base64," + "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)),
                "data:image/png;base64," + urlsafe, "data:image/png;charset=utf-8;base64," + b64):
        assert decode_image_url({"url": url}, "part", RequestLimits()).size == (40, 30)
    turned = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the picture is stored turned; shown rotated 90 degrees clockwise
    Image.new("RGB", (40, 30), (10, 200, 10)).save(turned, format="JPEG", exif=exif)
    url = "data:image/jpeg;base64," + base64.b64encode(turned.getvalue()).decode()
    assert decode_image_url({"url": url}, "part", RequestLimits()).size == (30, 40)


def test_a_16_bit_png_keeps_its_greys_and_an_mpo_jpeg_is_read(server: RunningServer) -> None:
    import numpy as np
    from PIL import Image

    from kimi_agent.model_runtime.serving.protocol import to_rgb

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    grey = np.asarray(to_rgb(Image.open(io.BytesIO(buf.getvalue()))))[..., 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and 120 <= grey[32, 0] <= 135  # not all white (PIL clips)
    mpo = io.BytesIO()  # what phones and cameras write: a JPEG with a second picture after it
    Image.new("RGB", (56, 42), (200, 30, 30)).save(mpo, format="MPO", save_all=True,
                                                   append_images=[Image.new("RGB", (56, 42), (0, 0, 0))])
    url = "data:image/jpeg;base64," + base64.b64encode(mpo.getvalue()).decode()
    reply = server.client().chat.completions.create(model=MODEL, messages=image_message("What is this?", url),
                                                    max_tokens=2, temperature=0)
    assert reply.choices[0].finish_reason in ("length", "stop")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("fields", "param", "fragment"), [
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text", 'messages[0].content[0] is a text part without its "text" string'),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
     "messages[0].content[0].text", 'without its "text" string, got 7'),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role", "must be one of system"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0]", 'a part whose "type" is "input_audio"'),
    ({"stop": 5}, "stop", "stop must be a string or a list of strings, got 5"),
    ({"stop": ["ok", 5]}, "stop", "stop must be a string or a list of strings, got 5 at stop[1]"),
    ({"temperature": NAN}, "temperature", "temperature must be a finite number from 0 to 2, got NaN"),
    ({"temperature": INF}, "temperature", "must be a finite number from 0 to 2, got Infinity"),
    ({"temperature": -INF}, "temperature", "must be a finite number from 0 to 2, got -Infinity"),
    ({"top_p": NAN}, "top_p", "top_p must be a finite number greater than 0 and at most 1, got NaN"),
    ({"top_p": INF}, "top_p", "must be a finite number greater than 0 and at most 1, got Infinity"),
    ({"temperature": 5}, "temperature", "must be a finite number from 0 to 2, got 5"),
    ({"response_format": {"type": "json_object"}}, "response_format",
     'response_format of type "json_object" is not supported by this server'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     "response_format", 'response_format of type "json_schema" is not supported'),
    ({"response_format": "json"}, "response_format", 'must be an object such as {"type": "text"}'),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"logprobs": True}, "logprobs", "not supported"),
    ({"max_tokens": "5"}, "max_tokens", 'max_tokens must be an integer of at least 1, got the string "5"'),
    ({"max_tokens": True}, "max_tokens", "max_tokens must be an integer of at least 1, got true"),
    ({"max_tokens": 5.5}, "max_tokens", "got 5.5"),
    ({"max_completion_tokens": "5"}, "max_completion_tokens", "must be an integer of at least 1"),
    ({"stream": "yes"}, "stream", 'stream must be a boolean (true or false), got the string "yes"'),
    ({"stream": 1}, "stream", "must be a boolean (true or false), got 1"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "must be a boolean"),
    ({"temperature": "0.5"}, "temperature", 'must be a finite number from 0 to 2, got the string "0.5"'),
    ({"temperature": True}, "temperature", "must be a finite number from 0 to 2, got true"),
    ({"top_p": "1"}, "top_p", "must be a finite number"),
    ({"seed": "7"}, "seed", "seed must be an integer"),
    ({"n": True}, "n", "n must be 1"),
    ({"model": 5}, "model", "model must be a string, got 5"),
])
def test_bad_fields_are_400s_naming_the_field(server: RunningServer, fields: dict[str, Any], param: str,
                                              fragment: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}
    r = _post_raw(server, json.dumps(body).encode())  # json.dumps writes NaN/Infinity, as Python clients can
    error = _error_of(r)
    assert r.status_code == 400 and error["type"] == "invalid_request_error", (r.status_code, error)
    assert error["param"] == param, error
    assert fragment in error["message"], error


def test_what_openai_accepts_still_works(client: Any) -> None:
    """An integer temperature/top_p (OpenAI's API takes 1 for a number) and response_format text are fine."""
    r = chat(client, [{"role": "user", "content": "hi"}], temperature=1, top_p=1, seed=3, max_tokens=2,
             response_format={"type": "text"}, stop=["never-appears-here"])
    assert r.usage.completion_tokens <= 2 and r.choices[0].finish_reason in ("stop", "length")
    _, chunks = streamed(client, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                         max_tokens=2, temperature=0, stream_options={"include_usage": False})
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_an_unexpected_failure_is_an_openai_shaped_500(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here a processor that raises what nothing expects) is still OpenAI's error shape, not
    Starlette's plain-text page; its traceback goes to the server's log."""
    def broken(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.app.state.api, "processor", broken)
    r = httpx.post(f"{server.base_url}/chat/completions", timeout=60,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    error = _error_of(r)
    assert r.status_code == 500 and error["type"] == "server_error", (r.status_code, error)
    assert "RuntimeError" in error["message"] and "a bug" not in error["message"]


# ---- concurrency --------------------------------------------------------------------------------

def test_the_default_server_batches(server: RunningServer) -> None:
    from kimi_agent.model_runtime.serving.batching import BatchingScheduler

    scheduler = server.app.state.scheduler
    assert isinstance(scheduler, BatchingScheduler) and len(scheduler.batch.slots) == 8


def test_concurrent_clients_get_the_same_text_as_one_at_a_time(server: RunningServer) -> None:
    prompts = [image_message(f"Task {i}: click the button.", png_data_url((40 * i, 90, 200 - 30 * i)))
               for i in range(5)]
    one_at_a_time = [chat(server.client(), p, max_tokens=10).choices[0].message.content for p in prompts]

    def ask(p: list[dict[str, Any]]) -> str:
        return str(chat(server.client(), p, max_tokens=10).choices[0].message.content)

    batch = server.app.state.scheduler.batch
    body = {"model": MODEL, "messages": [{"role": "user", "content": "keep going"}], "max_tokens": 4000,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120) as long:
        # a long generation runs the whole time, so every decode step of the others is batched with it
        assert any('"content":"' in line and '"content":""' not in line for line in long.iter_lines())
        steps, rows = batch.decode_steps, batch.decoded_rows
        with ThreadPoolExecutor(max_workers=5) as pool:
            together = list(pool.map(ask, prompts * 2))
        steps, rows = batch.decode_steps - steps, batch.decoded_rows - rows
    assert together == one_at_a_time * 2
    assert rows >= 2 * steps  # two or more sequences in every decode step


@pytest.mark.parametrize("scheduler", ["batch", "serial"])
def test_a_full_queue_answers_429_and_a_closed_stream_frees_its_slot(tiny_checkpoint: Path, scheduler: str) -> None:
    """One slot, max_queue=1: one request running (a long generation), one waiting, the next is refused;
    closing both streams cancels them, so the next request runs in the freed slot."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 3000,
            "temperature": 0, "stream": True}
    app = build(tiny_checkpoint, max_queue=1, max_batch=1, scheduler=scheduler)
    with RunningServer(app) as srv, httpx.Client(timeout=120) as http:
        url = f"{srv.base_url}/chat/completions"
        with http.stream("POST", url, json=body) as running:
            lines = running.iter_lines()
            assert any('"content":"' in line and '"content":""' not in line for line in lines)  # it is generating
            with http.stream("POST", url, json=body) as waiting:
                assert waiting.status_code == 200
                refused = http.post(url, json=body)
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["type"] == "rate_limit_error"
                with pytest.raises(openai.RateLimitError):
                    srv.client().chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=2)
        # both streams were closed early: the server cancels them (when its threads notice) and then
        # answers the next request in the freed slot
        eventually(lambda: srv.app.state.scheduler.cancelled == 2, "both closed streams cancelled")
        r = srv.client().chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=2, temperature=0)
        assert r.usage.completion_tokens == 2
        assert srv.app.state.scheduler.cancelled == 2


def test_a_client_that_gives_up_cancels_its_generation(server: RunningServer) -> None:
    scheduler = server.app.state.scheduler
    before = scheduler.cancelled
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes its connection
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    r = chat(server.client(), [{"role": "user", "content": "next"}], max_tokens=2)
    assert r.usage.completion_tokens == 2
    # the server notices the disconnect within its poll; other slots keep serving meanwhile
    eventually(lambda: scheduler.cancelled == before + 1, "the abandoned request cancelled", 30)
    # the cancelled request leaves its slot at the batch loop's next step
    eventually(lambda: scheduler.batch.load() == (0, len(scheduler.batch.slots)), "every slot free", 30)


def test_serial_scheduler_queue_bound(tiny_checkpoint: Path) -> None:
    import torch

    from kimi_agent.model_runtime import Engine, KimiVL, KimiVLProcessor
    from kimi_agent.model_runtime.serving.scheduler import PreparedPrompt, SamplingParams, SerialScheduler

    model = KimiVL.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    scheduler = SerialScheduler(Engine(model, KimiVLProcessor.from_pretrained(tiny_checkpoint)), max_queue=2)
    prompt = PreparedPrompt(torch.tensor([[1, 2, 3]]))

    async def fill() -> tuple[int, QueueFullError]:
        streams = [scheduler.submit(prompt, SamplingParams(max_new_tokens=2)) for _ in range(2)]
        with pytest.raises(QueueFullError) as full:
            scheduler.submit(prompt, SamplingParams(max_new_tokens=2))
        scheduler.start()  # the worker drains the queue
        texts = [await s.text() for s in streams]
        return len(texts), full.value

    with ThreadPoolExecutor(1) as pool:  # a fresh thread: another test's event loop may be running in this one
        n, err = pool.submit(asyncio.run, fill()).result(timeout=300)
    scheduler.close()
    assert n == 2 and err.status == 429 and err.headers == {"Retry-After": "1"}
    assert scheduler.served == 2


# ---- our own client ---------------------------------------------------------------------------

def test_our_openai_backend_drives_the_server(server: RunningServer, client: Any) -> None:
    from PIL import Image

    from kimi_agent.model_runtime.backends import Sampling, make_backend

    image = Image.new("RGB", (70, 56), (250, 120, 0))
    backend = make_backend("openai", endpoint=server.base_url, model=MODEL)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where to click?"}]}]
    pieces: list[str] = []
    reply = backend.generate(messages, [image], Sampling(temperature=0, max_new_tokens=12), on_text=pieces.append)
    backend.close()
    direct = chat(client, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _png_b64(image)}},
        {"type": "text", "text": "Where to click?"}]}])
    assert reply.text == direct.choices[0].message.content == "".join(pieces)
    assert reply.finish_reason == direct.choices[0].finish_reason
    # (the backend streams without stream_options.include_usage, so its reply carries no token counts)


def _png_b64(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---- the command --------------------------------------------------------------------------------

def _kimi_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kimi_agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_serve_without_a_model_exits_2_with_one_sentence(tmp_path: Path) -> None:
    for args in (["serve"], ["serve", "--model", str(tmp_path / "missing")]):
        r = _kimi_agent(*args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr


def test_serve_command_answers_and_stops_on_sigterm(tiny_checkpoint: Path) -> None:
    cmd = [sys.executable, "-m", "kimi_agent.cli", "serve", "--model", str(tiny_checkpoint), "--port", "0",
           "--device", "cpu", "--dtype", "float32", "--served-model-name", MODEL, "--max-model-len", "2048"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(50):  # bounded: the banner is among the first lines
            line = proc.stderr.readline()
            if " at http://" in line:
                url = line.split(" at ", 1)[1].strip()
                break
        assert url is not None and url.startswith("http://127.0.0.1:")
        with httpx.Client(timeout=120) as http:
            for _ in range(600):  # until uvicorn accepts (the socket is bound and listening already)
                try:
                    models = http.get(f"{url}/models")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.1)
        assert models.json()["data"][0]["id"] == MODEL
        assert models.json()["data"][0]["max_model_len"] == 2048
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully (the lifespan closes the scheduler), then re-raises SIGTERM
    assert proc.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in rest, rest


def test_serve_command_stops_promptly_on_ctrl_c_during_a_long_stream(tiny_checkpoint: Path) -> None:
    """Ctrl-C while a long generation streams: the stream ends at once with a `shutdown` error event and
    `[DONE]`, and the command exits 130 within seconds, without a traceback (it used to wait out uvicorn's
    graceful timeout, then print "Exception in ASGI application" and a CancelledError traceback)."""
    cmd = [sys.executable, "-m", "kimi_agent.cli", "serve", "--model", str(tiny_checkpoint), "--port", "0",
           "--device", "cpu", "--dtype", "float32", "--served-model-name", MODEL, "--max-model-len", "4096"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000,
            "temperature": 0, "stream": True}
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            if " at http://" in line:
                url = line.split(" at ", 1)[1].strip()
                break
        assert url is not None
        with httpx.Client(timeout=120) as http:
            for _ in range(600):
                try:
                    http.get(f"{url}/models")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.1)
            with http.stream("POST", f"{url}/chat/completions", json=body) as r:
                lines = r.iter_lines()
                assert any('"content":"' in line and '"content":""' not in line for line in lines)  # generating
                proc.send_signal(signal.SIGINT)
                stopped = time.monotonic()
                rest = [line for line in lines if line]
        ended = time.monotonic() - stopped
        assert rest[-1] == "data: [DONE]"
        errors = [json.loads(line[6:])["error"] for line in rest if line.startswith('data: {"error"')]
        assert [e["code"] for e in errors] == ["shutdown"], rest[-3:]
        assert "shutting down" in errors[0]["message"]
        assert not any('"finish_reason":"length"' in line for line in rest)  # cut short, not run to the end
        proc.wait(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    # the stream ends at once (it used to run on for uvicorn's whole graceful timeout); the process then
    # closes the scheduler and exits (bounds with room for a loaded machine: it takes about 1 s idle)
    assert ended < 5 and took < 15, f"the stream ended after {ended:.1f} s, the server exited after {took:.1f} s"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception in ASGI application" not in err, err
    assert "Application shutdown complete" in err, err


def test_loading_is_logged(tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="kimi_agent.model_runtime.serving.server"):
        build(tiny_checkpoint, scheduler="serial")
    messages = [r.getMessage() for r in caplog.records if r.name == "kimi_agent.model_runtime.serving.server"]
    assert messages[0] == f"loading {tiny_checkpoint} on cpu (float32)", messages
    assert messages[1].startswith(f"loaded {tiny_checkpoint} in ") and messages[1].endswith(" s"), messages


# ---- stop strings (pure) ------------------------------------------------------------------------

def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_it() -> None:
    m = StopMatcher(("<|done|>",))
    assert m.push("hello <") == "hello "
    assert m.push("|do") == ""
    assert m.push("g") == "<|dog"
    assert m.push(" <|done|> tail") == " "
    assert m.stopped and m.push("more") == "" and m.flush() == ""
    n = StopMatcher(("END",))
    assert n.push("the E") == "the " and n.flush() == "E"
    assert StopMatcher().push("anything") == "anything"
