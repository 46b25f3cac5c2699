"""Backend and environment options shared by the CLI's episode command and the task runner.

`make_backend(BackendOptions(...))` picks the backend (explicit, or inferred: `--endpoint` ->
openai, `--replies` -> scripted, else native) and fails fast, before any environment starts: the
in-process backends resolve the model directory first (before torch is imported), the openai
backend checks that the endpoint answers at all. `open_env(EnvOptions(...))` opens the desktop or
browser environment (and the app in it) and closes everything on exit, Chromium gracefully so its
profile is flushed. `option_error(err)` turns a pydantic `ValidationError` of these options into one
sentence that names the command-line flag.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kimi_agent.env.base import Environment
from kimi_agent.errors import ConfigError, ModelUnavailableError
from kimi_agent.model_runtime.backends import make_backend as _make
from kimi_agent.model_runtime.backends.base import Backend
from kimi_agent.model_runtime.hub import DEFAULT_MODEL_ID, resolve_model_dir

BackendName = Literal["native", "openai", "transformers", "scripted"]


#: Seconds to wait for an endpoint to accept a connection in `check_endpoint`.
ENDPOINT_CONNECT_TIMEOUT_S = 5.0


class BackendOptions(BaseModel):
    """Which model answers, and how to reach it (the CLI's `--backend`, `--model`, `--endpoint`,
    `--api-key` and `--replies`; `endpoint` is an OpenAI-compatible API base such as
    `http://localhost:8000/v1`, `replies` a JSONL file for the scripted test double)."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendName | None = None
    model: str = DEFAULT_MODEL_ID
    endpoint: str | None = None
    api_key: str | None = None
    replies: Path | None = None
    device: str = "auto"
    dtype: str = "bfloat16"
    image_format: Literal["png", "jpeg"] = "png"
    timeout_s: float = 120.0
    slots: int = Field(default=1, ge=1, le=64, description="native: conversations decoded together (the runner "
                       "sets it to --workers)")

    def resolved(self) -> BackendName:
        """The backend that will answer: `backend` if given, else openai with an endpoint, scripted
        with a replies file, native otherwise."""
        if self.backend is not None:
            return self.backend
        if self.endpoint:
            return "openai"
        if self.replies is not None:
            return "scripted"
        return "native"


def make_backend(opts: BackendOptions) -> Backend:
    """Construct the backend `opts` describes, failing fast before any environment starts.

    Raises `ModelUnavailableError` (no local model, endpoint not answering) or `ConfigError` (a
    missing or bad option), each with one sentence saying what to pass instead.
    """
    name = opts.resolved()
    if name == "scripted":
        if opts.replies is None:
            raise ConfigError("--backend scripted needs --replies FILE (a JSONL file of replies).")
        return _make("scripted", opts.replies)
    if name == "openai":
        if not opts.endpoint:
            raise ConfigError("--backend openai needs --endpoint URL (e.g. http://localhost:8000/v1).")
        check_endpoint(opts.endpoint, model=opts.model)
        api_key = opts.api_key or os.environ.get("OPENAI_API_KEY")
        return _make("openai", opts.endpoint, model=opts.model, api_key=api_key, timeout_s=opts.timeout_s,
                     image_format=opts.image_format)
    model_dir = resolve_model_dir(opts.model)  # fails fast, before torch is imported
    if name == "native" and opts.slots > 1:
        return _make(name, model_dir, device=opts.device, dtype=opts.dtype, slots=opts.slots)
    return _make(name, model_dir, device=opts.device, dtype=opts.dtype)


def check_endpoint(endpoint: str, *, model: str = DEFAULT_MODEL_ID,
                   timeout_s: float = ENDPOINT_CONNECT_TIMEOUT_S) -> None:
    """Raise unless a server accepts connections at `endpoint` (an http(s) API base URL).

    One `GET {endpoint}/models`: any HTTP answer (even 401 or 404) counts as up, and so does a
    server that accepts the connection but is slow to answer. A refused or timed-out connection
    raises `ModelUnavailableError`, a URL that is not http(s) raises `ConfigError`.
    """
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint must be an http(s) URL such as http://localhost:8000/v1, not {endpoint!r}.")
    url = endpoint.rstrip("/") + "/models"
    try:
        httpx.get(url, timeout=httpx.Timeout(timeout_s, connect=timeout_s))
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise ModelUnavailableError(
            f"Nothing answers at --endpoint {endpoint} ({e or type(e).__name__}); start the model server "
            f"(e.g. `vllm serve {model}`) or pass the right --endpoint URL.") from None
    except httpx.TimeoutException:
        return  # connected, but slow: the server is there
    except httpx.HTTPError as e:
        raise ConfigError(f"--endpoint {endpoint} cannot be used: {type(e).__name__}: {e}.") from None


def option_error(err: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """One sentence for the first problem in `err`, naming the option as a command-line flag.

    `flags` maps field names whose flag differs (`{"frame_format": "--frames"}`); other fields
    become `--field-name`. e.g. `--backend must be 'native', 'openai', 'transformers' or
    'scripted', not 'nonsense'.`
    """
    first = err.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    flag = (flags or {}).get(field) or ("--" + field.replace("_", "-") if field else err.title)
    got = first.get("input")
    expected = (first.get("ctx") or {}).get("expected")
    if first["type"] == "literal_error" and expected:
        return f"{flag} must be {expected}, not {got!r}."
    if first["type"] == "extra_forbidden":
        return f"unknown option {flag}."
    return f"{flag}: {first['msg']} (got {got!r})."


class EnvOptions(BaseModel):
    """Where the episode runs: a desktop with an app (Chromium by default) or a Playwright browser.

    `width`/`height` are the screen (desktop) or viewport (browser) in pixels; `url` is the first
    page (about:blank when None); `allowed_urls` are URL prefixes, or globs when they contain `*`.
    """

    model_config = ConfigDict(extra="forbid")

    env: Literal["desktop", "browser"] = "desktop"
    url: str | None = None
    profile: Path | None = None
    app: str | None = None
    display: str | None = None  # None: $DISPLAY if set, else a private Xvfb
    width: int = 1920
    height: int = 1080
    headless: bool | None = None  # browser env; None: headless unless a display is given
    allowed_urls: list[str] = []


@contextmanager
def open_env(opts: EnvOptions) -> Iterator[Environment]:
    """The environment, with its app started; everything is stopped on exit."""
    display = opts.display or os.environ.get("DISPLAY") or None
    with ExitStack() as stack:
        profile = opts.profile
        if profile is None and opts.app is None:
            profile = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kimi-agent-profile-")))
        if opts.env == "browser":
            from kimi_agent.env.browser import BrowserEnv

            headless = opts.headless if opts.headless is not None else display is None
            browser = BrowserEnv(headless=headless, viewport=(opts.width, opts.height), user_data_dir=profile,
                                 start_url=opts.url or "about:blank", allowed_urls=opts.allowed_urls or None,
                                 display=display if not headless else None)
            yield stack.enter_context(browser)
            return
        from kimi_agent.env.desktop import DesktopEnv

        desktop = stack.enter_context(DesktopEnv(display=display, width=opts.width, height=opts.height))
        if opts.app:
            desktop.launch(opts.app)
        else:
            assert profile is not None
            desktop.start_chromium(profile, url=opts.url or "about:blank")
        desktop.settle()  # the first observation shows the app, not an empty screen
        yield desktop
