"""The worker channel and the model link: framing and bounds on a real socket pair, and one model
in the runner's process answering every sandboxed worker (real bwrap, Xvfb, Chromium; the model
is a scripted test double)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kimi_agent.errors import BackendError
from kimi_agent.model_runtime.backends.base import Reply, Sampling
from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks.channel import Channel, ChannelClosed
from kimi_agent.tasks.model_link import ChannelBackend, ModelHost
from kimi_agent.tasks.suites.solutions import terminate


def _pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    return Channel(a), Channel(b)


def test_messages_and_blobs_cross_intact_and_bad_frames_are_refused() -> None:
    a, b = _pair()
    a.send({"type": "x", "text": "é\n<>"}, [b"\0" * 5, b"abc"])
    header, blobs = b.recv(timeout_s=5)
    assert header == {"type": "x", "text": "é\n<>"} and blobs == [b"\0" * 5, b"abc"]
    with pytest.raises(TimeoutError):
        b.recv(timeout_s=0.05)
    a.sock.sendall(struct.pack("!I", 1 << 30))  # a header size over the bound
    with pytest.raises(ChannelClosed, match="over the"):
        b.recv(timeout_s=5)
    a, b = _pair()
    body = json.dumps({"type": "x", "_blobs": [-1]}).encode()
    a.sock.sendall(struct.pack("!I", len(body)) + body)
    with pytest.raises(ChannelClosed, match="blob lengths"):
        b.recv(timeout_s=5)
    a.close()
    with pytest.raises(ChannelClosed):
        b.recv(timeout_s=5)


def test_a_channel_closed_on_this_end_is_channel_closed_not_a_raw_oserror() -> None:
    """The runner closes a worker's channel while its reader thread is about to read (Ctrl-C): the
    reader must see ChannelClosed (its normal end), not EBADF, which printed a traceback."""
    a, b = _pair()
    b.close()
    with pytest.raises(ChannelClosed, match="closed"):
        b.recv()
    a.close()


def test_a_channel_closed_during_a_read_ends_with_channel_closed() -> None:
    """The peer's end (EOF) and this end's close racing: whatever order, ChannelClosed comes out."""
    import threading

    def close_both(a: Channel, b: Channel) -> None:
        a.close()
        b.close()

    for _ in range(50):
        a, b = _pair()
        closer = threading.Thread(target=close_both, args=(a, b))
        closer.start()
        with pytest.raises(ChannelClosed):
            b.recv(timeout_s=5)
        closer.join()


def test_a_channel_closed_right_after_a_message_began_ends_with_channel_closed() -> None:
    """This end closed by another thread between a message's length and its body (a run being
    interrupted as a worker reports): ChannelClosed, not EBADF from setting the body's timeout."""
    a, b = _pair()
    a.send({"type": "x"})
    read = b._read

    def read_then_closed(n: int, *, first: bool = False) -> bytes:
        got = read(n, first=first)
        if first:
            b.close()  # the runner's main thread, at this very moment
        return got

    b._read = read_then_closed  # type: ignore[method-assign]
    with pytest.raises(ChannelClosed, match="closed"):
        b.recv(timeout_s=5)
    a.close()


class _Echo:
    """A test double for a model: answers with the sizes of the images it was given, streaming."""

    name = "echo"

    def generate(self, messages: list[Any], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        if messages == "boom":
            raise BackendError("the model failed")
        text = f"{len(messages)} messages, images {[im.size for im in images]}"
        if on_text is not None:
            on_text(text[:5])
            on_text(text[5:])
        return Reply(text=text, completion_tokens=3)


def test_channel_backend_streams_and_reports_model_errors() -> None:
    worker_end, runner_end = _pair()
    host = ModelHost()

    def serve() -> None:
        while True:
            try:
                header, blobs = runner_end.recv(timeout_s=10)
            except ChannelClosed:
                return
            host.answer(_Echo(), header, blobs, runner_end)

    threading.Thread(target=serve, daemon=True).start()
    backend = ChannelBackend(worker_end, "echo", task_id="t")
    pieces: list[str] = []
    images = [Image.new("RGB", (64, 32), "red"), Image.new("RGB", (8, 8), "blue")]
    reply = backend.generate([{"role": "user", "content": "hi"}], images, Sampling(), on_text=pieces.append)
    assert reply.text == "1 messages, images [(64, 32), (8, 8)]" and "".join(pieces) == reply.text
    assert reply.completion_tokens == 3
    worker_end.send({"type": "generate", "id": 9, "messages": [], "images": [{"size": [4, 4]}]}, [b"short"])
    header, _ = worker_end.recv(timeout_s=10)
    assert header["id"] == 9 and "malformed image" in header["error"]
    worker_end.close()


class _ParentModel:
    """A backend factory called in the runner's process (`in_worker = False`): one test-double model
    for every worker, recording which process answered and the screenshots it received."""

    in_worker = False

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, int]]] = []
        self.made = 0
        self.backend = self._Model(self.calls)

    class _Model:
        name = "parent-model"

        def __init__(self, calls: list[tuple[int, tuple[int, int]]]) -> None:
            self.calls = calls

        def generate(self, messages: list[Any], images: list[Image.Image], sampling: Sampling, *,
                     on_text: Callable[[str], None] | None = None) -> Reply:
            self.calls.append((os.getpid(), images[-1].size))
            return Reply(text=terminate("success"))

    def __call__(self, spec: Any, host: Any, local_server: str) -> Any:
        assert host is None  # called in the runner, which has no worker host
        self.made += 1
        return self.backend


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None, reason="needs Xvfb and Chromium")
def test_one_model_in_the_runner_answers_every_sandboxed_worker(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(3):
        (folder / f"t{i}.json").write_text(json.dumps({
            "id": f"task-{i}", "instruction": "Do nothing.", "config": [],
            "evaluator": {"func": "check_include_exclude",
                          "result": {"type": "vm_command_line", "command": "echo ok", "shell": True},
                          "expected": {"type": "rule", "rules": {"include": ["ok"], "exclude": []}}}}))
    factory = _ParentModel()
    summary = run_tasks(folder, factory, RunSettings(workers=2, max_steps=2, out_dir=tmp_path / "out"),
                        progress=False)
    assert [(r.status, r.score) for r in summary.results] == [("success", 1.0)] * 3
    assert factory.made == 3 and len(factory.calls) == 3
    assert {pid for pid, _ in factory.calls} == {os.getpid()}  # the model never left this process
    assert {size for _, size in factory.calls} == {(1920, 1080)}  # whole screenshots crossed the channel
    assert len({r.host["worker_dir"] for r in summary.results}) == 2  # ... from two sandboxed workers
