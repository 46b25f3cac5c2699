"""Client of the HTTP server inside OSWorld virtual machines (port 5000 by default).

Observations come from `GET /screenshot` (PNG), actions go to `POST /execute` as a `python -c`
command that WE generate from the typed action: only pyautogui calls with `repr()`-quoted literals
(ints, canonical key names, the text to type); the model's text is never sent as code. Reads are
retried on transport errors and 5xx; `/execute` is retried only when the request never reached the
server. An unreachable server raises `EnvironmentStartError` at construction.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx
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
from kimi_agent.errors import ActionError, EnvironmentStartError

PREFIX = "import pyautogui; import time; pyautogui.FAILSAFE = False; pyautogui.PAUSE = 0; "
VM_SETTLE = SettleConfig(min_s=0.3, cap_s=3.0, interval_s=0.2, stable_frames=1)


class OSWorldVMEnv:
    """An OSWorld VM reached over HTTP.

    Args:
        base_url: the in-VM server, e.g. "http://192.168.1.5:5000".
        timeout_s: per-request timeout (an `/execute` may run long: it gets `execute_timeout_s`).
        retries: attempts for reads and for requests that never reached the server.
        python: the interpreter name inside the VM (OSWorld's controller uses "python").
        browser_shortcuts: map navigate/back/tabs to Chrome keyboard shortcuts (else refused).
        settle_config: frame-diff settle over `/screenshot` (PNG bytes compared for equality).
    """

    kind: EnvKind = "osworld_vm"

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, execute_timeout_s: float = 120.0,
                 retries: int = 3, retry_delay_s: float = 1.0, python: str = "python",
                 browser_shortcuts: bool = False, settle_config: SettleConfig | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries, self.retry_delay_s = max(1, retries), retry_delay_s
        self.execute_timeout_s = execute_timeout_s
        self.python = python
        self.browser_shortcuts = browser_shortcuts
        self.settle_config = settle_config or VM_SETTLE
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        try:
            size = self._request("POST", "/screen_size").json()
            self.width, self.height = int(size["width"]), int(size["height"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            self._client.close()
            raise EnvironmentStartError(f"OSWorld VM server at {self.base_url} is unreachable or not an "
                                        f"OSWorld server: {exc!r}") from exc
        self._last_geometry = Geometry.identity(self.width, self.height)

    # -- the Environment protocol -------------------------------------------------------------

    def reset(self) -> Observation:
        """The VM's state is reset by its provider (snapshot revert), not here: observe."""
        return self.observe()

    def observe(self) -> Observation:
        start = time.perf_counter()
        data = self._request("GET", "/screenshot").content
        image = Image.open(io.BytesIO(data)).convert("RGB")
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
        except ActionError as exc:
            outcome.ok, outcome.error = False, exc
        except httpx.HTTPError as exc:
            outcome.ok, outcome.error = False, ActionError(f"{action.type}: the VM server failed: {exc!r}")
        outcome.exec_ms = (time.perf_counter() - start) * 1000.0
        if settle and outcome.ok and not isinstance(action, Wait | Done | AskUser):
            if on_settle is not None:
                on_settle()
            outcome.settle_ms = self.settle().settle_ms
        return outcome

    def focused_is_password(self) -> bool | None:
        """None: the VM's server has no endpoint that says what has the keyboard focus."""
        return None

    def settle(self, config: SettleConfig | None = None) -> SettleResult:
        return settle(lambda: self._request("GET", "/screenshot").content, config or self.settle_config)

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
        result: dict[str, Any] = response.json()
        if result.get("status") != "success" or result.get("returncode", 0) != 0:
            raise ActionError(f"the VM could not run the command (exit {result.get('returncode')}): "
                              f"{(result.get('error') or result.get('message') or '').strip()[-500:]}")
        return result

    def cursor_position(self) -> tuple[int, int]:
        x, y = self._request("GET", "/cursor_position").json()
        return int(x), int(y)

    def get_file(self, path: str) -> bytes:
        """`POST /file`: the bytes of a file inside the VM."""
        return self._request("POST", "/file", data={"file_path": path}).content

    def setup(self, step: str, payload: dict[str, Any]) -> dict[str, Any]:
        """`POST /setup/<step>` (launch, open_file, activate_window, close_window, ...)."""
        response = self._request("POST", f"/setup/{step}", json=payload, idempotent=False)
        return dict(response.json()) if response.headers.get("content-type", "").startswith(
            "application/json") else {"text": response.text}

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

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                response = self._client.request(method, path, **kwargs)
                if response.status_code >= 500 and idempotent and attempt + 1 < self.retries:
                    last = httpx.HTTPStatusError(f"{response.status_code} from {path}", request=response.request,
                                                 response=response)
                else:
                    response.raise_for_status()
                    return response
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server
                last = exc
            except httpx.TransportError as exc:
                if not idempotent:
                    raise
                last = exc
            if attempt + 1 < self.retries:
                time.sleep(self.retry_delay_s * (attempt + 1))
        assert last is not None
        raise last


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
