"""Renders a checkpoint's chat template in a child process under OS limits.

A template is untrusted code: in-process step/size/time bounds cannot stop one C-level operation (a
comparison of huge lists, a `%`-format blow-up) that holds the GIL or allocates GBs. So every template
other than the official one (see chat_template.py's fast path) is compiled and rendered by a small
persistent child, `python -m kimi_agent.model_runtime.template_worker`, which imports only jinja2 and
runs the bounded sandbox of chat_template.py under RLIMIT_AS and RLIMIT_CPU. The parent sends
length-prefixed JSON over the child's stdin/stdout, waits at most a wall-clock deadline, then SIGKILLs
the child and starts a fresh one on the next render. The child exits when its stdin closes (the parent
exited or closed it), and gets SIGKILL through PR_SET_PDEATHSIG when the main thread started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from kimi_agent.model_runtime.chat_template import MAX_RENDER_CHARS, MAX_RENDER_SECONDS, ChatTemplateError

WORKER_MEMORY_BYTES = 2 << 30           # RLIMIT_AS of the child (its interpreter and jinja2 take ~60 MB)
WORKER_CPU_SECONDS = 10                 # RLIMIT_CPU of the child, per request (raised before each one)
RENDER_DEADLINE_S = MAX_RENDER_SECONDS + 1.0   # the child's own bound answers first; this is the backstop
COMPILE_DEADLINE_S = 20.0               # start + compile (a 1 MiB template of 45k expressions takes ~7 s)
# A reply holds at most MAX_RENDER_CHARS characters of JSON-escaped UTF-8 ("\u0000" is 6 bytes).
MAX_REPLY_BYTES = 6 * MAX_RENDER_CHARS + (64 << 10)
MAX_REQUEST_BYTES = 1 << 30
_HEADER = 8                             # big-endian byte length of the JSON frame that follows
_PARENT_ENV = "KIMI_TEMPLATE_WORKER_PARENT"     # "<parent pid>:<1 if the main thread started us>"
# The only environment variables the child gets (what finding and running the interpreter needs).
_CHILD_ENV = frozenset({"PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR"})


def _encode(obj: Any) -> bytes:
    """A frame: header + JSON (lone surrogates pass through; objects JSON cannot hold, such as images,
    become a placeholder naming their type)."""
    text = json.dumps(obj, ensure_ascii=False, default=lambda o: f"<{type(o).__module__}.{type(o).__name__}>")
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(_HEADER, "big") + data


def _decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


# --- parent side ------------------------------------------------------------------------------------------

class _Child:
    """The running child process, if any (held apart from `TemplateWorker` so a finalizer can stop it)."""

    __slots__ = ("proc",)

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """SIGKILL the child (if running), reap it and close its pipes."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL takes ms; past 5 s, left to the OS
            proc.wait(timeout=5)


class TemplateWorker:
    """One template compiled in one child process; `render` is thread-safe (one render at a time).

    The child starts lazily (on the first render) and again after a failure that killed it. Every
    failure, a deadline passed, a crash or an oversized reply is `ChatTemplateError` naming `where`.
    `close()` (also run when the worker is garbage-collected, and at interpreter exit) stops the child.
    """

    def __init__(self, source: str, *, where: str, special_tokens: Mapping[str, str] | None = None) -> None:
        self.source, self.where = source, where
        self.special_tokens = dict(special_tokens or {})
        self._lock = threading.Lock()
        self._child = _Child()
        self._closed = False
        self._finalizer = weakref.finalize(self, self._child.stop)

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs."""
        proc = self._child.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def close(self) -> None:
        """Stop the child; later renders raise `ChatTemplateError`. A render in flight ends with one."""
        self._closed = True
        proc = self._child.proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # unblocks a render in flight at once (it reads EOF), without waiting for its lock
        with self._lock:
            self._finalizer()

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool) -> str:
        """The prompt text of `messages`, rendered in the child within `RENDER_DEADLINE_S`."""
        request = _encode({"op": "render", "messages": list(messages), "add_generation_prompt": add_generation_prompt})
        if len(request) > MAX_REQUEST_BYTES:
            raise ChatTemplateError(f"chat template {self.where} failed to render: the messages take "
                                    f"{len(request):,} bytes as JSON, over this runtime's bound of {MAX_REQUEST_BYTES:,}")
        with self._lock:
            if self._closed:
                raise ChatTemplateError(f"chat template {self.where} failed to render: the template was closed")
            if self._child.proc is None or self._child.proc.poll() is not None:
                self._start()
            reply = self._exchange(request, RENDER_DEADLINE_S, "failed to render")
            text = reply.get("text")
            if not isinstance(text, str) or len(text) > MAX_RENDER_CHARS:
                self._fail("failed to render", "the renderer process sent a malformed reply")
        return text

    def _start(self) -> None:
        self._child.stop()
        env = {k: v for k, v in os.environ.items() if k in _CHILD_ENV}  # no tokens or secrets
        env[_PARENT_ENV] = f"{os.getpid()}:{int(threading.current_thread() is threading.main_thread())}"
        try:  # -P and cwd "/": a jinja2.py in the working directory (a model folder?) is never imported
            self._child.proc = subprocess.Popen(
                [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m",
                 "kimi_agent.model_runtime.template_worker"], cwd="/",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, env=env)
        except OSError as e:
            raise ChatTemplateError(f"chat template {self.where}: cannot start the renderer process "
                                    f"({e.strerror or type(e).__name__})") from None
        self._exchange(_encode({"op": "compile", "source": self.source, "where": self.where,
                                "special_tokens": self.special_tokens}), COMPILE_DEADLINE_S, "does not compile")

    def _fail(self, doing: str, why: str) -> NoReturn:
        self._child.stop()
        raise ChatTemplateError(f"chat template {self.where} {doing}: {why}")

    def _exchange(self, request: bytes, deadline_s: float, doing: str) -> dict[str, Any]:
        """Send one frame and read the answer within `deadline_s`; kill the child on any failure."""
        proc = self._child.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + deadline_s
        try:
            self._send(proc.stdin.fileno(), request, deadline)
            header = self._recv(proc.stdout.fileno(), _HEADER, deadline)
            size = int.from_bytes(header, "big") if header is not None else 0
            if size > MAX_REPLY_BYTES:
                self._fail(doing, f"the renderer process sent a reply of {size:,} bytes (bound "
                                         f"{MAX_REPLY_BYTES:,})")
            body = self._recv(proc.stdout.fileno(), size, deadline) if header is not None else None
        except TimeoutError:
            self._fail(doing, f"it ran longer than {deadline_s:g} s (the renderer process was killed)")
        except OSError:  # EPIPE: the child died before reading
            body = None
        except BaseException:  # KeyboardInterrupt, ...: the child's answer would be read by the next request
            self._child.stop()
            raise
        if body is None:
            self._fail(doing, f"the renderer process died ({self._exit_reason(proc)})")
        try:
            reply = _decode(body)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            self._fail(doing, "the renderer process sent a malformed reply")
        if isinstance(reply.get("error"), str):
            if reply.get("fatal"):  # e.g. the template does not compile: this child is of no further use
                self._child.stop()
            raise ChatTemplateError(reply["error"])
        return reply

    @staticmethod
    def _exit_reason(proc: subprocess.Popen[bytes]) -> str:
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "it closed its output"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = {"SIGXCPU": ": it used more than its CPU time bound", "SIGKILL": ": killed"}.get(name, "")
            return f"signal {name}{hint}"
        return f"exit status {code}"

    @staticmethod
    def _wait(fd: int, events: int, deadline: float) -> bool:
        """Whether `fd` is ready for `events` before `deadline` (`TimeoutError` past it); poll, not select,
        so descriptors past FD_SETSIZE work."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        poller = select.poll()
        poller.register(fd, events)
        return bool(poller.poll(max(1, int(left * 1000))))

    @classmethod
    def _send(cls, fd: int, data: bytes, deadline: float) -> None:
        os.set_blocking(fd, False)
        view = memoryview(data)
        while view:
            if cls._wait(fd, select.POLLOUT, deadline):
                try:
                    view = view[os.write(fd, view[:1 << 20]):]
                except BlockingIOError:
                    continue

    @classmethod
    def _recv(cls, fd: int, size: int, deadline: float) -> bytes | None:
        """`size` bytes from `fd` by `deadline` (`TimeoutError`), or None at end of file."""
        chunks: list[bytes] = []
        got = 0
        while got < size:
            if not cls._wait(fd, select.POLLIN, deadline):
                continue
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


# --- child side -------------------------------------------------------------------------------------------

def _limit_self() -> None:
    """RLIMIT_AS, a first RLIMIT_CPU, and SIGKILL when the parent dies (Linux; only when the parent's main
    thread started us: PR_SET_PDEATHSIG fires when the *thread* that forked exits)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    _raise_cpu_limit()
    parent, _, main_thread = os.environ.get(_PARENT_ENV, "").partition(":")
    if sys.platform.startswith("linux") and main_thread == "1":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if parent.isdigit() and os.getppid() != int(parent):  # the parent died before we got here
        sys.exit(0)


def _raise_cpu_limit() -> None:
    """Allow `WORKER_CPU_SECONDS` more CPU time from now (SIGXCPU past it, SIGKILL at the hard limit)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + WORKER_CPU_SECONDS
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _read_frame(stream: Any) -> Any:
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_REQUEST_BYTES:
        return None
    data = stream.read(size)
    return _decode(data) if len(data) == size else None


def _handle(request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    from kimi_agent.model_runtime.chat_template import compile_sandboxed, render_sandboxed

    if request.get("op") == "compile":
        state["where"] = request["where"]
        state["specials"] = request["special_tokens"]
        try:
            state["template"] = compile_sandboxed(request["source"], request["where"])
        except ChatTemplateError as e:
            return {"error": str(e), "fatal": True}
        return {"ok": True}
    try:
        text = render_sandboxed(state["template"], state["where"], request["messages"],
                                add_generation_prompt=bool(request["add_generation_prompt"]),
                                special_tokens=state["specials"])
    except ChatTemplateError as e:
        return {"error": str(e)}
    return {"text": text}


def main() -> None:
    """Serve compile/render requests on stdin/stdout until stdin closes."""
    _limit_self()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    state: dict[str, Any] = {}
    while True:
        try:
            request = _read_frame(stdin)
        except (ValueError, RecursionError, MemoryError):
            return
        if not isinstance(request, dict):
            return
        _raise_cpu_limit()
        try:
            reply = _handle(request, state)
            frame = _encode(reply)
        except MemoryError:
            frame = _encode({"error": f"chat template {state.get('where')} failed to render: out of memory"})
        except Exception as e:  # a malformed request: answered with the error, never swallowed
            frame = _encode({"error": f"chat template {state.get('where')} failed to render: "
                                      f"{type(e).__name__}: {e}"})
        try:
            stdout.write(frame)
            stdout.flush()
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    main()
