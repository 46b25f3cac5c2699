"""Backend and environment options shared by the CLI's episode command and the task runner.

`make_backend(BackendOptions(...))` picks the backend (explicit, or inferred: `--endpoint` ->
openai, `--replies` -> scripted, else native) and fails fast, before any environment starts: the
in-process backends resolve the model directory first (before torch is imported), the openai
backend checks that the endpoint answers at all. `check_env(EnvOptions(...))` raises for what would
make the environment fail to start (a start URL that is not one, or that `--allow-url` blocks,
`--allow-url` outside the browser environment, an
`--app` that is not on PATH, a profile that is a file, an X display where nothing answers), in
about a millisecond and before anything starts; `check_folder(path, flag)` for a folder that cannot
be created. `open_env(EnvOptions(...))` checks the same, opens the desktop or
browser environment (and the app in it) and closes everything on exit, Chromium gracefully so its
profile is flushed. `option_error(err)` turns a pydantic `ValidationError` of these options into one
sentence that names the command-line flag.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kimi_agent.env.base import Environment
from kimi_agent.env.url_allowlist import UrlAllowlist
from kimi_agent.errors import ConfigError, EnvironmentStartError, ModelUnavailableError
from kimi_agent.model_runtime.backends import make_backend as _make
from kimi_agent.model_runtime.backends.base import Backend
from kimi_agent.model_runtime.device import check_device_name, check_dtype_name
from kimi_agent.model_runtime.hub import DEFAULT_MODEL_ID, resolve_model_dir

BackendName = Literal["native", "openai", "transformers", "scripted"]


#: Seconds to wait for an endpoint to accept a connection in `check_endpoint`.
ENDPOINT_CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for an X server to accept a connection in `check_display`.
DISPLAY_CONNECT_TIMEOUT_S = 2.0
#: Schemes a start page (`--url`) may have: a web page (with a host), a local file or a built-in page.
START_URL_SCHEMES = ("http", "https", "file", "about", "chrome", "data")
#: Ports Chromium refuses to load http(s) from (ERR_UNSAFE_PORT): the Fetch standard's bad ports, as the
#: installed Chromium blocks them (newer ones also block 4190 and 6679; those still fail when the page loads).
CHROMIUM_BLOCKED_PORTS = frozenset({
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109,
    110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530,
    531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 5060,
    5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6697, 10080})
_DISPLAY_NAME = re.compile(r"(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?")


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

    def key(self) -> str | None:
        """The API key for `endpoint`: `api_key`, else `$OPENAI_API_KEY` (None: send none)."""
        return self.api_key or os.environ.get("OPENAI_API_KEY") or None


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
        api_key = opts.key()
        model = check_endpoint(opts.endpoint, model=opts.model, api_key=api_key,
                               adopt="model" not in opts.model_fields_set)
        return _make("openai", opts.endpoint, model=model, api_key=api_key, timeout_s=opts.timeout_s,
                     image_format=opts.image_format)
    check_device_name(opts.device, "device")  # names only: before minutes of loading
    check_dtype_name(opts.dtype, "dtype")
    try:
        model_dir = resolve_model_dir(opts.model)  # fails fast, before torch is imported
    except ModelUnavailableError as e:  # the runtime's words, with the options that mend it
        raise ModelUnavailableError(f"{e} (--model DIR: a local snapshot; --endpoint URL: an OpenAI-compatible "
                                    "server; to try kimi-agent without a model: --backend scripted --replies FILE, "
                                    "see the README's \"Without a model\")") from None
    if name == "native" and opts.slots > 1:
        return _make(name, model_dir, device=opts.device, dtype=opts.dtype, slots=opts.slots)
    return _make(name, model_dir, device=opts.device, dtype=opts.dtype)


def check_endpoint(endpoint: str, *, model: str = DEFAULT_MODEL_ID, api_key: str | None = None,
                   timeout_s: float = ENDPOINT_CONNECT_TIMEOUT_S, adopt: bool = False) -> str:
    """Raise unless an OpenAI-compatible server that serves `model` answers at `endpoint` (an
    http(s) API base URL); returns the model name to ask for: `model`, or with `adopt` (the caller
    named no model) the server's only model when it serves one other.

    One `GET {endpoint}/models`. A refused or timed-out connection raises `ModelUnavailableError`;
    a URL that is not http(s), a 404 at an API base that does not end in /v1 (the usual mistake),
    and a model list that lacks `model` raise `ConfigError`. Any other answer (401 without a key, a
    server without /models) and a server that accepts the connection but is slow count as up.
    """
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint must be an http(s) URL such as http://localhost:8000/v1, not {endpoint!r}.")
    base = endpoint.rstrip("/")
    url = base + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(url, timeout=httpx.Timeout(timeout_s, connect=timeout_s), headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise ModelUnavailableError(
            f"Nothing answers at --endpoint {endpoint} ({e or type(e).__name__}); start the model server "
            f"(e.g. `vllm serve {model}`) or pass the right --endpoint URL.") from None
    except httpx.TimeoutException:
        return model  # connected, but slow: the server is there
    except httpx.HTTPError as e:
        raise ConfigError(f"--endpoint {endpoint} cannot be used: {type(e).__name__}: {e}.") from None
    if resp.status_code == 404 and not base.endswith("/v1"):
        raise ConfigError(f"--endpoint {endpoint} is not an OpenAI API base ({url} answered HTTP 404); it usually "
                          f"ends in /v1, e.g. --endpoint {base}/v1.")
    served = _served_models(resp) if resp.status_code == 200 else []
    if served and model not in served:
        if adopt and len(served) == 1:
            return served[0]
        names = ", ".join(repr(m) for m in served[:5]) + (", ..." if len(served) > 5 else "")
        raise ConfigError(f"the server at --endpoint {endpoint} serves {names}, not --model {model!r}; "
                          f"pass --model {served[0]}.")
    return model


def _served_models(resp: httpx.Response) -> list[str]:
    """The model ids of an OpenAI `/models` answer ({"data": [{"id": ...}]}); [] when it is not one."""
    try:
        data = resp.json().get("data")
    except (ValueError, AttributeError):
        return []
    if not isinstance(data, list):
        return []
    return [str(m["id"]) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


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
    page (about:blank when None); `allowed_urls` are URL prefixes, or globs when they contain `*`,
    enforced by the browser environment only (`check_env` refuses them for the desktop).
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


def check_env(opts: EnvOptions) -> None:
    """Raise `ConfigError` for an option `open_env(opts)` would fail on, or `EnvironmentStartError`
    when its X display does not answer; nothing is started (and nothing is left on disk)."""
    if opts.allowed_urls and opts.env != "browser":
        raise ConfigError(f"--allow-url works only with --env browser: the {opts.env} environment's Chromium is not "
                          "restricted, so the model could type any URL into its address bar; use --env browser "
                          "--url URL, or leave --allow-url out.")
    if opts.url is not None:
        check_start_url(opts.url)
        if opts.allowed_urls and not UrlAllowlist(opts.allowed_urls).allows(opts.url):
            raise ConfigError(f"--url {opts.url} is not allowed by --allow-url {' '.join(opts.allowed_urls)}; "
                              "start on an allowed page, or add its origin with another --allow-url.")
    if opts.app is not None:
        check_app(opts.app)
    if opts.profile is not None:
        check_folder(opts.profile, "--profile")
    display, headless = _display(opts)
    if display is not None and (opts.env == "desktop" or not headless):
        check_display(display, source="--display" if opts.display else "$DISPLAY")


def check_start_url(url: str) -> None:
    """Raise `ConfigError` unless `url` is a page a browser can start on (`START_URL_SCHEMES`, not on
    one of `CHROMIUM_BLOCKED_PORTS`)."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        web = scheme in ("http", "https")
        where_ok = bool(parts.hostname) and (parts.port is None or parts.port > 0) if web else True
        ok = (scheme in START_URL_SCHEMES and where_ok and bool(url[len(scheme) + 1:].strip("/"))
              and not any(c.isspace() for c in url))
    except ValueError:  # a port that is not a number or out of range, a bad IPv6 literal
        ok = False
    if not ok:
        raise ConfigError(f"--url {url!r} is not a URL a browser can open; give one with its scheme, e.g. "
                          "https://example.com, file:///path/to/page.html or about:blank.")
    if web and parts.port in CHROMIUM_BLOCKED_PORTS:
        raise ConfigError(f"--url {url}: Chromium refuses to load pages from port {parts.port} (ERR_UNSAFE_PORT, "
                          "a port of another protocol); serve the page on another port, e.g. 8000.")


def check_app(cmd: str) -> None:
    """Raise `ConfigError` unless `cmd` splits into shell words whose first is an executable."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise ConfigError(f"--app {cmd!r} cannot be split into words ({e}); check its quotes.") from None
    if not argv:
        raise ConfigError("--app is empty; give the command that starts the app, e.g. --app mousepad.")
    if shutil.which(argv[0]) is None:
        raise ConfigError(f"--app {cmd!r}: no executable {argv[0]!r} on PATH; install it or give its full path.")


def check_folder(path: Path, flag: str) -> None:
    """Raise `ConfigError` unless `path` is a folder, or one that can be created: a folder is made
    and removed again in its nearest existing ancestor (so nothing is left behind)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path.absolute() else f"is inside {existing}, a file"
        raise ConfigError(f"{flag} {path} {where}, not a folder; pass a folder.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kimi-agent-check-", dir=existing))
    except OSError as e:
        raise ConfigError(f"{flag} {path} cannot be used: a folder cannot be created in {existing} "
                          f"({e.strerror or e}); pass a writable folder.") from None


def check_display(display: str, *, source: str = "--display") -> None:
    """Raise unless an X server accepts connections at `display` (`:N`, `unix:N` or `host:N`, with an
    optional `.screen`), within `DISPLAY_CONNECT_TIMEOUT_S`: `ConfigError` for a name that is not a
    display name, `EnvironmentStartError` when nothing answers."""
    match = _DISPLAY_NAME.fullmatch(display)
    if match is None:
        raise ConfigError(f"{source} {display!r} is not an X display name such as :0 or :99.")
    host, number = match["host"], int(match["number"])
    try:
        if host in ("", "unix"):  # the local socket: the abstract one Xvfb also listens on, then the file
            _connect_unix(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + number), timeout=DISPLAY_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        fix = ("pass --display :N of a running X server, or leave --display out" if source == "--display"
               else "set DISPLAY to a running X server, or unset it")
        raise EnvironmentStartError(f"nothing answers on X display {display} ({source}; {e.strerror or e}): "
                                    f"start that X server, or {fix} to use a private Xvfb.") from None


def _connect_unix(path: str) -> None:
    """Connect to the X server's socket `path`, trying its abstract-namespace twin first."""
    for address in ("\0" + path, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(DISPLAY_CONNECT_TIMEOUT_S)
            try:
                sock.connect(address)
                return
            except OSError:
                if address == path:
                    raise


def _display(opts: EnvOptions) -> tuple[str | None, bool]:
    """The X display the environment uses (None: a private Xvfb) and, for the browser, headless or not."""
    display = opts.display or os.environ.get("DISPLAY") or None
    headless = opts.headless if opts.headless is not None else display is None
    return display, headless


@contextmanager
def open_env(opts: EnvOptions, *, checked: bool = False) -> Iterator[Environment]:
    """The environment, with its app started (after `check_env`, unless the caller has `checked`
    `opts` already); everything is stopped on exit.

    Raises `ConfigError` or `EnvironmentStartError` (also for an OS error while starting)."""
    if not checked:
        check_env(opts)
    with ExitStack() as stack:
        try:
            environment = _start_env(opts, stack)
        except OSError as e:
            raise EnvironmentStartError(f"the {opts.env} environment could not start: {e}") from e
        yield environment


def _start_env(opts: EnvOptions, stack: ExitStack) -> Environment:
    display, headless = _display(opts)
    profile = opts.profile
    if profile is None and opts.app is None:
        profile = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kimi-agent-profile-")))
    if opts.env == "browser":
        from kimi_agent.env.browser import BrowserEnv

        browser = BrowserEnv(headless=headless, viewport=(opts.width, opts.height), user_data_dir=profile,
                             start_url=opts.url or "about:blank", allowed_urls=opts.allowed_urls or None,
                             display=display if not headless else None)
        return stack.enter_context(browser)
    from kimi_agent.env.desktop import DesktopEnv

    desktop = stack.enter_context(DesktopEnv(display=display, width=opts.width, height=opts.height))
    if opts.app:
        desktop.launch(opts.app)
    else:
        assert profile is not None
        desktop.start_chromium(profile, url=opts.url or "about:blank")
    desktop.settle()  # the first observation shows the app, not an empty screen
    return desktop
