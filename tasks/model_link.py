"""The model stays with the runner: workers ask it for each generation over their channel.

`ChannelBackend` is the `Backend` a sandboxed worker hands to its agent: `generate` sends the
messages and the screenshots (raw RGB blobs) to the runner and waits for the reply; streamed text
pieces come back as `text` messages before the final `reply`. `ModelHost` is the runner's side: it
answers a worker's `generate` request with the backend the run was given for that worker's task
(one model for every worker, never a copy each) and serialises calls to a backend that is not
safe to call from several threads at once (the native runtime), while an HTTP backend serves
workers concurrently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from kimi_agent.errors import AgentError, BackendError
from kimi_agent.model_runtime.backends.base import Message, Reply, Sampling
from kimi_agent.tasks.channel import Channel

if TYPE_CHECKING:
    from PIL import Image

    from kimi_agent.model_runtime.backends.base import Backend

log = logging.getLogger("kimi_agent.tasks")
MAX_IMAGE_PIXELS = 8192 * 8192
GENERATE_TIMEOUT_S = 3600.0  # a generation the runner never answers fails the task instead of hanging


def image_blob(image: Image.Image) -> tuple[dict[str, Any], bytes]:
    rgb = image.convert("RGB")
    return {"size": list(rgb.size)}, rgb.tobytes()


def blob_image(meta: Any, blob: bytes) -> Image.Image:
    """A worker's screenshot back to an image; raises BackendError for sizes that do not add up."""
    from PIL import Image

    size = meta.get("size") if isinstance(meta, dict) else None
    if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
            or size[0] * size[1] > MAX_IMAGE_PIXELS or len(blob) != size[0] * size[1] * 3):
        raise BackendError(f"a worker sent a malformed image ({size!r}, {len(blob)} bytes)")
    return Image.frombytes("RGB", (size[0], size[1]), blob)


class ChannelBackend:
    """A worker's backend: every generation is answered by the runner's model."""

    def __init__(self, channel: Channel, name: str, *, task_id: str) -> None:
        self.channel, self.name, self.task_id = channel, name, task_id
        self._calls = 0

    def generate(self, messages: list[Message], images: list[Image.Image], sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        self._calls += 1
        metas, blobs = zip(*(image_blob(im) for im in images), strict=True) if images else ((), ())
        self.channel.send({"type": "generate", "id": self._calls, "task_id": self.task_id, "messages": messages,
                           "images": list(metas), "sampling": sampling.model_dump(mode="json"),
                           "stream": on_text is not None}, list(blobs))
        while True:
            try:
                header, _ = self.channel.recv(timeout_s=GENERATE_TIMEOUT_S)
            except TimeoutError:
                raise BackendError(f"the runner did not answer a generation within {GENERATE_TIMEOUT_S:g} s") from None
            if header.get("type") == "text" and on_text is not None:
                on_text(str(header.get("piece", "")))
            elif header.get("type") == "reply" and header.get("id") == self._calls:
                if header.get("error"):
                    raise BackendError(str(header["error"]))
                return Reply.model_validate(header["reply"])


class BackendLocks:
    """One generation at a time per backend, unless the backend says it takes concurrent calls
    (`concurrent = True`: a batching native model, whose callers' generations decode together)."""

    def __init__(self) -> None:
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, backend: Backend) -> AbstractContextManager[Any]:
        """What to hold around `backend.generate(...)`."""
        if getattr(backend, "concurrent", False):
            return nullcontext()
        with self._guard:
            return self._locks.setdefault(id(backend), threading.Lock())


class ModelHost:
    """The runner's side: answers `generate` requests from workers with their task's backend."""

    def __init__(self) -> None:
        self.locks = BackendLocks()

    def answer(self, backend: Backend, header: dict[str, Any], blobs: list[bytes], channel: Channel) -> None:
        """Run one request and send the `reply` (an `error` field on failure); never raises for
        a bad request or a failing model, only ChannelClosed when the worker is gone."""
        request_id = header.get("id")
        try:
            messages = header.get("messages")
            metas = header.get("images") or []
            if not isinstance(messages, list) or not isinstance(metas, list) or len(metas) != len(blobs):
                raise BackendError("a worker sent a malformed generation request")
            images = [blob_image(m, b) for m, b in zip(metas, blobs, strict=True)]
            sampling = Sampling.model_validate(header.get("sampling") or {})

            def piece(text: str) -> None:
                channel.send({"type": "text", "id": request_id, "piece": text})

            with self.locks.lock(backend):
                reply = backend.generate(messages, images, sampling, on_text=piece if header.get("stream") else None)
            channel.send({"type": "reply", "id": request_id, "reply": reply.model_dump(mode="json")})
        except (AgentError, ValueError) as e:
            log.warning("generation for worker request %s failed: %s", request_id, e)
            channel.send({"type": "reply", "id": request_id, "error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # a bug in a backend: that task errors (with the traceback logged), the run goes on
            log.exception("backend %s raised on worker request %s", getattr(backend, "name", "?"), request_id)
            channel.send({"type": "reply", "id": request_id, "error": f"internal error: {type(e).__name__}: {e}"})

