"""Backend and environment options shared by the CLI's episode command and the task runner.

`make_backend(BackendOptions(...))` picks the backend (explicit, or inferred: `--endpoint` ->
openai, `--replies` -> scripted, else native) and, for the in-process backends, resolves the model
directory first, so a missing model fails in well under a second, before torch is imported.
`open_env(EnvOptions(...))` opens the desktop or browser environment (and the app in it) and
closes everything on exit, Chromium gracefully so its profile is flushed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from kimi_agent.env.base import Environment
from kimi_agent.model_runtime.backends import make_backend as _make
from kimi_agent.model_runtime.backends.base import Backend
from kimi_agent.model_runtime.hub import DEFAULT_MODEL_ID, resolve_model_dir

BackendName = Literal["native", "openai", "transformers", "scripted"]


class BackendOptions(BaseModel):
    """Which model answers, and how to reach it."""

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

    def resolved(self) -> BackendName:
        if self.backend is not None:
            return self.backend
        if self.endpoint:
            return "openai"
        if self.replies is not None:
            return "scripted"
        return "native"


def make_backend(opts: BackendOptions) -> Backend:
    """Construct the backend `opts` describes. Raises ModelUnavailableError / ConfigError with the fix."""
    from kimi_agent.errors import ConfigError

    name = opts.resolved()
    if name == "scripted":
        if opts.replies is None:
            raise ConfigError("--backend scripted needs --replies FILE (a JSONL file of replies).")
        return _make("scripted", opts.replies)
    if name == "openai":
        if not opts.endpoint:
            raise ConfigError("--backend openai needs --endpoint URL (e.g. http://localhost:8000/v1).")
        api_key = opts.api_key or os.environ.get("OPENAI_API_KEY")
        return _make("openai", opts.endpoint, model=opts.model, api_key=api_key, timeout_s=opts.timeout_s,
                     image_format=opts.image_format)
    model_dir = resolve_model_dir(opts.model)  # fails fast, before torch is imported
    return _make(name, model_dir, device=opts.device, dtype=opts.dtype)


class EnvOptions(BaseModel):
    """Where the episode runs: a desktop with an app (Chromium by default) or a Playwright browser."""

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
