"""Load a checkpoint and serve it: `build_app(...)` (model + processor + scheduler + app) and
`serve(app, sock)` (uvicorn on an already-bound socket, so a taken port fails before loading);
`BackgroundServer(app)`, the same app on a free loopback port in a thread of this process.

The scheduler: continuous batching (`BatchingScheduler`, `max_batch` sequences decoding together) by
default; `SerialScheduler` (one request at a time through an `Engine`, whose `decode` mode may replay
CUDA graphs) with `scheduler="serial"` or `max_batch=1`.

Stopping (Ctrl-C, SIGTERM, leaving a `BackgroundServer`) ends the requests in flight at once with a
503 `shutdown` error (a stream gets it in-band, then `data: [DONE]`) and cancels their generation,
before uvicorn waits for connections to close; then the lifespan closes the scheduler.

Connections are guarded in uvicorn's h11 protocol (`_guarded_protocol`): a deadline on each request head,
a cap on open connections (the open-file limit less a reserve, or `max_connections`) at which the one
idle the longest makes way for a new one, and rate-limited warnings about clients.

Loading is logged at INFO on this module's logger ("loading ... on cpu (float32)", "loaded in 2.1 s");
the caller decides where log records go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.serving.app import ServeConfig, create_app, shutdown_requests
from kimi_agent.model_runtime.serving.protocol import RequestLimits
from kimi_agent.model_runtime.serving.scheduler import Scheduler, SerialScheduler

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

#: The default bound on prompt + completion tokens (the Engine's graph-decode cache is this large).
DEFAULT_MAX_MODEL_LEN = 32768
#: How long uvicorn waits for open connections once the requests in flight were ended (a backstop:
#: they end at once; only a client that stops reading its stream can hold the server this long).
GRACEFUL_SHUTDOWN_S = 5
HEADER_TIMEOUT_S = 30.0  # a request's headers arrive within this after its connection (or last answer), or it closes
#: The listen backlog (`bind`, and uvicorn's, which would otherwise re-listen with 2,048): how many connections
#: one wake-up of the accept loop can take before the connection cap sees them.
LISTEN_BACKLOG = 128
#: File descriptors kept free beyond those open when the server starts: two accept bursts (connections
#: accepted before the cap closes them) and 64 for the process's own files, pipes and sockets.
FD_RESERVE = 2 * LISTEN_BACKLOG + 64
WARNING_EVERY_S = 60.0  # at most one warning of a kind about clients this often (limit reached, bad requests)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """`kimi-agent serve` options. device "auto": CUDA when available; dtype: a torch dtype name.
    scheduler "auto": "serial" when max_batch is 1, else "batch"; max_batch: sequences decoding
    together (each holds a max_model_len slot of the latent cache); decode: the serial Engine's mode
    ("auto": CUDA graphs on CUDA), and the batch scheduler's when given explicitly ("auto" keeps its
    batched step eager until `bench/gpu_check.py` section 6 has shown graph == static on a GPU)."""

    model: str | Path
    served_model_name: str | None = None
    device: str = "auto"
    dtype: str = "bfloat16"
    decode: Literal["auto", "eager", "static", "graph", "compile", "compile+graph"] = "auto"
    max_model_len: int | None = None
    max_queue: int = 16
    scheduler: Literal["auto", "batch", "serial"] = "auto"
    max_batch: int = 8
    limits: RequestLimits = field(default_factory=RequestLimits)

    def scheduler_kind(self) -> Literal["batch", "serial"]:
        if self.scheduler == "auto":
            return "serial" if self.max_batch == 1 else "batch"
        return self.scheduler


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); `ConfigError` when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def build_app(options: ServeOptions) -> Starlette:
    """Load the model and processor (raises `ModelUnavailableError`, `ConfigError`, `WeightLoadError`)
    and return the app serving them through the scheduler the options choose."""
    import torch

    from kimi_agent.model_runtime.config import GenerationConfig, KimiVLConfig
    from kimi_agent.model_runtime.engine import Engine
    from kimi_agent.model_runtime.hub import resolve_model_dir
    from kimi_agent.model_runtime.kimi_vl import KimiVL
    from kimi_agent.model_runtime.processor import PROCESSOR_FILES, KimiVLProcessor

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    processor = KimiVLProcessor.from_pretrained(options.model)  # a missing model fails here, before the log line
    snapshot = resolve_model_dir(options.model, allow_patterns=PROCESSOR_FILES)  # config.json and the processor's
    positions = KimiVLConfig.from_pretrained_dir(snapshot).text.max_position_embeddings
    max_len = options.max_model_len or min(DEFAULT_MAX_MODEL_LEN, positions)
    if max_len < 2:
        raise ConfigError(f"--max-model-len must be >= 2 tokens, got {max_len}")
    if max_len > positions:  # before minutes of loading
        raise ConfigError(f"--max-model-len {max_len} is more than the model's {positions} positions "
                          "(max_position_embeddings in its config.json)")
    if options.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {options.max_batch}")
    gen = GenerationConfig.from_pretrained_dir(snapshot)  # a bad generation_config.json fails before the weights load
    log.info("loading %s on %s (%s)", options.model, device, options.dtype)
    model = KimiVL.from_pretrained(options.model, device=device, torch_dtype=options.dtype)
    log.info("loaded %s in %.1f s", options.model, time.perf_counter() - started)
    scheduler: Scheduler
    if options.scheduler_kind() == "serial":
        scheduler = SerialScheduler(Engine(model, processor, decode=options.decode, max_cache_tokens=max_len),
                                    max_queue=options.max_queue)
    else:
        from kimi_agent.model_runtime.scheduler import BatchScheduler
        from kimi_agent.model_runtime.serving.batching import BatchingScheduler

        batch = BatchScheduler(model, processor, slots=options.max_batch, max_len=max_len,
                               decode="eager" if options.decode == "auto" else options.decode)
        scheduler = BatchingScheduler(batch, max_queue=options.max_queue)
    config = ServeConfig(model_name=options.served_model_name or str(options.model), max_model_len=max_len,
                         temperature=gen.temperature if gen.do_sample else 0.0, top_p=gen.top_p,
                         limits=options.limits)
    return create_app(scheduler, processor, config)


def serve(app: Starlette, sock: socket.socket, *, log_level: str = "info", max_connections: int | None = None) -> None:
    """Run `app` on `sock` until interrupted (Ctrl-C or SIGTERM stop it gracefully). The process may
    then open as many files as its hard limit allows (each client holds one: a soft limit of 1,024
    is soon reached by many idle agents). max_connections: see `make_server`."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = make_server(app, log_level=log_level, max_connections=max_connections)
    server.run(sockets=[sock])


def default_max_connections() -> int:
    """The connections a server may hold at once: the soft open-file limit less the files open now and
    `FD_RESERVE` (so accepting never fails with EMFILE). Under a limit too low for that reserve (below
    about 400), half of the files left, with a warning at startup."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    free = soft - len(os.listdir(fd_dir))
    if free - FD_RESERVE >= 16:
        return free - FD_RESERVE
    cap = max(1, free // 2)
    log.warning("the open-file limit (%d) leaves room for only %d connections; raise it (ulimit -n) or set "
                "--max-connections", soft, cap)
    return cap


def make_server(app: Starlette, *, log_level: str = "info", max_connections: int | None = None) -> uvicorn.Server:
    """A uvicorn server for `app` whose shutdown first ends the requests in flight (`shutdown_requests`),
    so open streams close at once instead of holding the server until uvicorn's graceful timeout
    (after which it would cancel them with a traceback). It holds at most `max_connections` connections
    (None: `default_max_connections()`), see `_guarded_protocol`."""
    import uvicorn

    cap = default_max_connections() if max_connections is None else max_connections
    if cap < 1:
        raise ConfigError(f"--max-connections must be >= 1, got {cap}")

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            shutdown_requests(app)
            await super().shutdown(sockets)

    return _Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                                  http=_guarded_protocol(cap), backlog=LISTEN_BACKLOG))


class _Connections:
    """The open connections of one server, in the order they last became idle (the first idle one has
    waited longest), bounded by `cap`; counts what the bound did for a rate-limited warning."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: OrderedDict[Any, None] = OrderedDict()  # protocol -> None
        self.closed_idle = self.refused = 0  # since the last warning
        self.warned_at = -WARNING_EVERY_S

    def admit(self, conn: Any) -> bool:
        """Take `conn`; at the cap, first close the connection idle the longest. False (and the caller
        closes `conn`) when every connection has a request in progress."""
        if len(self.open) >= self.cap:
            victim = next((c for c in self.open if c.idle()), None)
            if victim is None:
                self.refused += 1
                self._warn()
                return False
            del self.open[victim]
            victim.close_idle()
            self.closed_idle += 1
            self._warn()
        self.open[conn] = None
        return True

    def became_idle(self, conn: Any) -> None:
        if conn in self.open:
            self.open.move_to_end(conn)

    def remove(self, conn: Any) -> None:
        self.open.pop(conn, None)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self.warned_at < WARNING_EVERY_S:
            return
        log.warning("connection limit (%d) reached: closed %d idle connections and refused %d new ones while "
                    "all were busy (at most one such line every %g s; see --max-connections)",
                    self.cap, self.closed_idle, self.refused, WARNING_EVERY_S)
        self.warned_at, self.closed_idle, self.refused = now, 0, 0


class _QuietLogger:
    """uvicorn's error logger as its connections use it, with each warning about a client (uvicorn's "Invalid
    HTTP request received.", one a garbage connection) logged at most once per `WARNING_EVERY_S`, with
    the count of those left out; errors (the server's own failures) and other levels pass through."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.last: dict[str, float] = {}  # message -> when last logged (time.monotonic s)
        self.left_out: dict[str, int] = {}

    @property
    def level(self) -> int:
        return self.logger.level

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(msg, -WARNING_EVERY_S) < WARNING_EVERY_S:
            self.left_out[msg] = self.left_out.get(msg, 0) + 1
            return
        self.last[msg] = now
        if left_out := self.left_out.pop(msg, 0):
            msg = f"{msg} ({left_out} more like it in the last {WARNING_EVERY_S:g} s were not logged)"
        self.logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # error, info, log, ...: as they are
        return getattr(self.logger, name)


def _refusal(cap: int) -> bytes:
    """The whole HTTP answer to a connection refused at the cap: a 503 in OpenAI's error shape."""
    body = json.dumps({"error": {
        "message": f"the server holds its limit of {cap} connections, each with a request in progress; retry shortly",
        "type": "server_error", "param": None, "code": "too_many_connections"}}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"retry-after: 1\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _guarded_protocol(max_connections: int) -> type:
    """uvicorn's h11 protocol, guarded against clients that hold connections (uvicorn has no such guard):

    - a deadline on each request's headers: `HEADER_TIMEOUT_S` after the connection opens, or after the
      previous answer, a connection still waiting for a whole request head is closed (a client trickling
      its headers a byte a second, or connecting and sending nothing, held its connection for ever);
    - at most `max_connections` open at once: a new connection closes the one idle the longest (no request
      in progress: a kept-alive connection between requests, or one whose head has not arrived), as nginx
      reuses kept-alive connections; when every one is busy, the new one gets a 503 and is closed at once.
      Before, 1,100 idle sockets under a 1,024 open-file limit made accepting fail with EMFILE: other
      clients timed out until the head deadline, and 53 MB of "Too many open files" were logged;
    - warnings about clients rate-limited (`_QuietLogger`): no log line per hostile connection.
    The class (one per server) holds its `_Connections`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    connections = _Connections(max_connections)
    refusal = _refusal(max_connections)
    quiet = _QuietLogger(logging.getLogger("uvicorn.error"))

    class GuardedH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _admitted = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.logger = quiet  # type: ignore[assignment]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if not connections.admit(self):
                transport.write(refusal)
                transport.close()  # uvicorn never sees it: no state, no log line
                return
            self._admitted = True
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            connections.remove(self)
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            connections.became_idle(self)
            self._arm()

        def idle(self) -> bool:
            """No request in progress: none has come yet, or the last one was answered."""
            return self.cycle is None or self.cycle.response_complete

        def close_idle(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_late)

        def _head_late(self) -> None:
            if self.idle() and not self.transport.is_closing():  # no request head since the timer began
                self.transport.close()

    return GuardedH11

class BackgroundServer:
    """`app` under uvicorn on a free loopback port, in a daemon thread of this process (a library's
    or a benchmark's own server): `with BackgroundServer(app) as s: post(s.base_url + "/chat/completions")`.
    Entering waits up to `start_timeout_s` for startup; leaving stops it within `stop_timeout_s`."""

    def __init__(self, app: Starlette, *, start_timeout_s: float = 60.0, stop_timeout_s: float = 60.0,
                 log_level: str = "warning", max_connections: int | None = None) -> None:
        self.app, self.start_timeout_s, self.stop_timeout_s = app, start_timeout_s, stop_timeout_s
        self.server = make_server(app, log_level=log_level, max_connections=max_connections)
        self.sock = bind("127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="kimi-agent-serve")

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        for _ in range(max(1, int(self.start_timeout_s * 10))):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            self.thread.join(0.1)
        self.__exit__()
        raise ConfigError(f"the model server did not start within {self.start_timeout_s:g} s")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(self.stop_timeout_s)
        self.sock.close()
