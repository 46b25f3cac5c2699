"""Client of the HTTP server inside OSWorld virtual machines (port 5000 by default).

Observations come from `GET /screenshot` (PNG), actions go to `POST /execute` as a `python -c`
command that WE generate from the typed action: only pyautogui calls with `repr()`-quoted literals
(ints, canonical key names, the text to type); the model's text is never sent as code. Reads are
retried on transport errors and 5xx; `/execute` is retried only when the request never reached the
server. Every failure is typed: `VMUnreachableError` (no answer: connection refused, a timeout, the
VM died) or `VMServerError` (an error status, with the server's own reason from its body); an
unreachable server raises `EnvironmentStartError` at construction. Every request is bounded: a
connect timeout, a read timeout, and a total deadline on the whole response (a server that drips
bytes cannot hold a step). Settling compares small grayscale thumbnails of the screenshots with a
changed-pixel tolerance, so a blinking caret is not a change.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np
from PIL import Image

from kimi_agent.actions.geometry import Geometry, norm_to_exec_pixel
from kimi_agent.actions.types import (
    Action,
    AskUser,
    Done,
    Navigate,
    NewTab,
    NormPoint,
    TypeText,
    Wait,
)
from kimi_agent.env.base import EnvKind, Observation, Outcome
from kimi_agent.env.pyautogui_plan import BROWSER_SHORTCUT_TYPES, format_call, plan_input
from kimi_agent.env.settle import SettleConfig, SettleResult, settle
from kimi_agent.errors import ActionError, EnvironmentStartError, VMServerError, VMUnreachableError

PREFIX = "import pyautogui; import time; pyautogui.FAILSAFE = False; pyautogui.PAUSE = 0; "
# Thumbnails are 1/8 of the screen per side (240x135 at 1080p); a change of more than 0.2% of
# them (~65 thumbnail pixels) counts. A text caret (2x20 screen pixels) touches at most ~6.
VM_SETTLE = SettleConfig(min_s=0.3, cap_s=3.0, interval_s=0.2, stable_frames=1, tolerance=0.002)
THUMB_DIVISOR = 8
PIXEL_DELTA = 24  # grayscale levels a thumbnail pixel must move to count as changed
CONNECT_TIMEOUT_S = 5.0
REASON_CHARS = 500


def settle_frame(png: bytes) -> np.ndarray:
    """A screenshot as a (H/8, W/8) uint8 grayscale thumbnail, quantised so small shading noise
    (JPEG-like dithering, antialiasing shimmer) compares equal; the frame `settle` compares."""
    image = Image.open(io.BytesIO(png))
    image.draft("L", (max(1, image.width // THUMB_DIVISOR), max(1, image.height // THUMB_DIVISOR)))
    thumb = image.convert("L").resize((max(1, image.width // THUMB_DIVISOR),
                                       max(1, image.height // THUMB_DIVISOR)), Image.Resampling.BOX)
    return np.asarray(thumb, dtype=np.uint8) // PIXEL_DELTA


def server_reason(response: httpx.Response) -> str:
    """The reason an OSWorld server gave for an error status: its JSON `message`/`error`, else its text."""
    text = response.text.strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or body.get("output") or text)
    return text[-REASON_CHARS:] or "(empty body)"


class OSWorldVMEnv:
    """An OSWorld VM reached over HTTP.

    Args:
        base_url: the in-VM server, e.g. "http://192.168.1.5:5000".
        timeout_s: per-request timeout (an `/execute` may run long: it gets `execute_timeout_s`).
        retries: attempts for reads and for requests that never reached the server.
        python: the interpreter name inside the VM (OSWorld's controller uses "python").
        browser_shortcuts: map navigate/back/tabs to Chrome keyboard shortcuts (else refused).
        settle_config: frame-difference settle over `/screenshot` thumbnails (`settle_frame`).
        max_response_s: total deadline of one response (a read, not `/execute`), on top of the
            per-read `timeout_s`.
    """

    kind: EnvKind = "osworld_vm"

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, execute_timeout_s: float = 120.0,
                 retries: int = 3, retry_delay_s: float = 1.0, python: str = "python",
                 browser_shortcuts: bool = False, settle_config: SettleConfig | None = None,
                 max_response_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries, self.retry_delay_s = max(1, retries), retry_delay_s
        self.timeout_s, self.execute_timeout_s, self.max_response_s = timeout_s, execute_timeout_s, max_response_s
        self.python = python
        self.browser_shortcuts = browser_shortcuts
        self.settle_config = settle_config or VM_SETTLE
        self._client = httpx.Client(base_url=self.base_url,
                                    timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)))
        try:
            size = self._request("POST", "/screen_size").json()
            self.width, self.height = int(size["width"]), int(size["height"])
        except (VMServerError, KeyError, TypeError, ValueError) as exc:
            self._client.close()
            raise EnvironmentStartError(f"OSWorld VM server at {self.base_url} is unreachable or not an "
                                        f"OSWorld server: {exc!r}") from exc
        self._last_geometry = Geometry.identity(self.width, self.height)

    # -- the Environment protocol -------------------------------------------------------------

    def reset(self) -> Observation:
        """The VM's state is reset by its provider (snapshot revert), not here: observe."""
        return self.observe()

    def observe(self) -> Observation:
        """The screen as the VM shows it; raises VMServerError/VMUnreachableError."""
        start = time.perf_counter()
        data = self._request("GET", "/screenshot").content
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (OSError, ValueError) as exc:
            raise VMServerError(f"GET /screenshot on {self.base_url} did not return an image "
                                f"({len(data)} bytes): {exc}", endpoint="/screenshot", status=200) from exc
        grab_ms = (time.perf_counter() - start) * 1000.0
        self._last_geometry = Geometry(shot_width=image.width, shot_height=image.height,
                                       exec_width=self.width, exec_height=self.height)
        return Observation(image=image, geometry=self._last_geometry, pointer=self.cursor_position(),
                           grab_ms=grab_ms)

    def execute(self, action: Action, *, geometry: Geometry | None = None, settle: bool = True,
                on_settle: Callable[[], None] | None = None) -> Outcome:
        """Generate the pyautogui code for `action`, run it in the VM; errors in `Outcome.error`."""
        outcome = Outcome(action=action)
        start = time.perf_counter()
        try:
            lines = self._code(action, outcome, geometry or self._last_geometry)
            if isinstance(action, Wait):
                time.sleep(action.seconds)
            if lines:
                outcome.executed.extend(lines)
                self.run_python("; ".join(lines))
            outcome.exec_ms = (time.perf_counter() - start) * 1000.0
            if settle and not isinstance(action, Wait | Done | AskUser):
                if on_settle is not None:
                    on_settle()
                outcome.settle_ms = self.settle().settle_ms
        except VMServerError as exc:  # before ActionError's branch: typed, with the server's reason
            error = ActionError(f"{action.type}: {exc}")
            error.__cause__ = exc
            outcome.ok, outcome.error = False, error
        except ActionError as exc:
            outcome.ok, outcome.error = False, exc
        if not outcome.exec_ms:
            outcome.exec_ms = (time.perf_counter() - start) * 1000.0
        return outcome

    def focused_is_password(self) -> bool | None:
        """None: the VM's server has no endpoint that says what has the keyboard focus."""
        return None

    def settle(self, config: SettleConfig | None = None) -> SettleResult:
        """Wait (at most the config's cap) until two thumbnails in a row agree; see `settle_frame`."""
        return settle(lambda: self._settle_grab(), config or self.settle_config)

    def _settle_grab(self) -> np.ndarray:
        data = self._request("GET", "/screenshot").content
        try:
            return settle_frame(data)
        except (OSError, ValueError) as exc:
            raise VMServerError(f"GET /screenshot on {self.base_url} did not return an image: {exc}",
                                endpoint="/screenshot", status=200) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OSWorldVMEnv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- server endpoints (task setup and evaluation use these; never with model text) --------

    def run_python(self, code: str) -> dict[str, Any]:
        """Run our generated `code` with pyautogui imported, like OSWorld's controller does."""
        return self.run([self.python, "-c", PREFIX + code])

    def run(self, command: Sequence[str], *, shell: bool = False) -> dict[str, Any]:
        """`POST /execute`; raises ActionError when the command fails (exit code, stderr)."""
        response = self._request("POST", "/execute", json={"command": list(command), "shell": shell},
                                 timeout=self.execute_timeout_s, idempotent=False)
        result = _json_object(response, "/execute")
        if result.get("status") != "success" or result.get("returncode", 0) != 0:
            raise ActionError(f"the VM could not run the command (exit {result.get('returncode')}): "
                              f"{(result.get('error') or result.get('message') or '').strip()[-500:]}")
        return result

    def cursor_position(self) -> tuple[int, int]:
        response = self._request("GET", "/cursor_position")
        try:
            x, y = response.json()
            return int(x), int(y)
        except (TypeError, ValueError) as exc:
            raise VMServerError(f"GET /cursor_position on {self.base_url} answered {response.text[:200]!r}, "
                                "not [x, y]", endpoint="/cursor_position", status=response.status_code) from exc

    def get_file(self, path: str, *, max_s: float = 600.0) -> bytes:
        """`POST /file`: the bytes of a file inside the VM (a 404 names the path)."""
        return self._request("POST", "/file", data={"file_path": path}, deadline_s=max_s).content

    def setup(self, step: str, payload: dict[str, Any]) -> dict[str, Any]:
        """`POST /setup/<step>` (launch, open_file, activate_window, close_window, ...)."""
        response = self._request("POST", f"/setup/{step}", json=payload, idempotent=False)
        if response.headers.get("content-type", "").startswith("application/json"):
            return _json_object(response, f"/setup/{step}")
        return {"text": response.text}

    def launch(self, command: str | Sequence[str], *, shell: bool = False) -> dict[str, Any]:
        return self.setup("launch", {"command": command if isinstance(command, str) else list(command),
                                     "shell": shell})

    def activate_window(self, name: str, *, strict: bool = False, by_class: bool = False) -> dict[str, Any]:
        return self.setup("activate_window", {"window_name": name, "strict": strict, "by_class": by_class})

    def close_window(self, name: str, *, strict: bool = False, by_class: bool = False) -> dict[str, Any]:
        return self.setup("close_window", {"window_name": name, "strict": strict, "by_class": by_class})

    # -- internals ----------------------------------------------------------------------------

    def _code(self, action: Action, outcome: Outcome, geometry: Geometry) -> list[str]:
        """pyautogui source lines for an action: the shared plan plus typing and URLs (literals via repr only)."""
        lines: list[str] = []
        emit: Callable[..., None] = lambda name, *a, **kw: lines.append(format_call(name, a, kw))  # noqa: E731

        def at(p: NormPoint) -> tuple[int, int]:
            x, y = norm_to_exec_pixel(p, geometry)
            outcome.exec_points.append((float(x), float(y)))
            return x, y

        if action.type in BROWSER_SHORTCUT_TYPES:
            self._require_browser(action)
        planned = plan_input(action, at)
        if planned is not None:
            lines.extend(format_call(f"pyautogui.{name}", args, kwargs) for name, args, kwargs in planned)
            return lines
        match action:
            case TypeText(text=text):
                lines.extend(_type_lines(text))
            case Navigate(url=url):
                self._require_browser(action)
                emit("pyautogui.hotkey", "ctrl", "l")
                emit("time.sleep", 0.3)
                lines.extend(_type_lines(url))
                emit("pyautogui.press", "enter")
            case NewTab(url=url):
                self._require_browser(action)
                emit("pyautogui.hotkey", "ctrl", "t")
                if url is not None:
                    emit("time.sleep", 0.3)
                    lines.extend(_type_lines(url))
                    emit("pyautogui.press", "enter")
            case _:
                pass  # Wait sleeps here, locally; terminal actions belong to the agent loop
        return lines

    def _require_browser(self, action: Action) -> None:
        if not self.browser_shortcuts:
            raise ActionError(f"{action.type} needs browser shortcuts; this VM env was created without "
                              "browser_shortcuts=True, so use the browser's controls instead")

    def _request(self, method: str, path: str, *, idempotent: bool = True, timeout: float | None = None,
                 deadline_s: float | None = None, **kwargs: Any) -> httpx.Response:
        """One bounded request with retries; raises VMServerError (an error status, with the
        server's reason) or VMUnreachableError (no complete answer in time)."""
        where = f"{method} {path} on {self.base_url}"
        read_s = timeout if timeout is not None else self.timeout_s
        total_s = deadline_s if deadline_s is not None else timeout if timeout is not None else self.max_response_s
        last: VMServerError | None = None
        for attempt in range(self.retries):
            try:
                response = self._bounded(method, path, read_s, total_s, kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server
                last = VMUnreachableError(f"{where}: cannot connect ({type(exc).__name__}: {exc})", endpoint=path)
            except (httpx.TransportError, TimeoutError) as exc:
                last = VMUnreachableError(f"{where}: no complete answer ({type(exc).__name__}: {exc})",
                                          endpoint=path)
                if not idempotent:
                    raise last from exc
            else:
                if response.status_code < 400:
                    return response
                last = VMServerError(f"{where} failed with {response.status_code}: {server_reason(response)}",
                                     endpoint=path, status=response.status_code)
                if response.status_code < 500 or not idempotent:
                    raise last
            if attempt + 1 < self.retries:
                time.sleep(self.retry_delay_s * (attempt + 1))
        assert last is not None
        raise last

    def _bounded(self, method: str, path: str, read_s: float, total_s: float,
                 kwargs: dict[str, Any]) -> httpx.Response:
        """The whole response within `total_s` (httpx's timeouts bound each read, not the sum)."""
        deadline = time.monotonic() + total_s
        timeout = httpx.Timeout(read_s, connect=min(CONNECT_TIMEOUT_S, read_s))
        with self._client.stream(method, path, timeout=timeout, **kwargs) as response:
            chunks: list[bytes] = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the response took longer than {total_s:g} s")
            headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
            return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks),
                                  request=response.request)


def _json_object(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise VMServerError(f"{endpoint} answered {response.text[:200]!r}, not JSON", endpoint=endpoint,
                            status=response.status_code) from exc
    if not isinstance(data, dict):
        raise VMServerError(f"{endpoint} answered {data!r:.200}, not a JSON object", endpoint=endpoint,
                            status=response.status_code)
    return data


def _type_lines(text: str) -> list[str]:
    """ASCII via pyautogui.write ('<' as shift+comma); other text via the clipboard (xclip in the VM)."""
    if not text.isascii():  # subprocess.DEVNULL is -3; xclip keeps serving the selection in the background
        return [f"__import__('subprocess').run(['xclip', '-selection', 'clipboard'], input={text.encode()!r}, "
                "stdout=-3, stderr=-3, timeout=5)", format_call("time.sleep", (0.1,), {}),
                format_call("pyautogui.hotkey", ("ctrl", "v"), {})]
    lines: list[str] = []
    for i, chunk in enumerate(text.split("<")):
        if i > 0:
            lines.append(format_call("pyautogui.hotkey", ("shift", ","), {}))
        if chunk:
            lines.append(format_call("pyautogui.write", (chunk,), {}))
    return lines
