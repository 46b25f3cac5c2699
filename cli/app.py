"""The `kimi-agent` command (`kimi_agent.cli.app`; the console script is `kimi_agent.cli:main`).

`kimi-agent "enable Do Not Track"` runs one episode; `kimi-agent report RUN_DIR`, `ground IMAGE
TEXT`, `doctor`, `serve --model DIR` (and `run TASKS`, from the tasks package) are subcommands. typer cannot mix a free
positional instruction with subcommands, so `main()` dispatches: a known subcommand name goes to
the subcommand app, anything else to the episode command, whose `--help` is the guide to all of
them. Exit code 0 only when the episode ends in success; 1 when it fails; 2 when it could not
start (one sentence says what to pass; every option, the instruction and an `--endpoint` are
checked before a display or browser starts); 130 when stopped by Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from kimi_agent import __version__
from kimi_agent.cli.replay import replay_command
from kimi_agent.errors import AgentError, ArtifactError, ConfigError
from kimi_agent.model_runtime.hub import DEFAULT_MODEL_ID

SUBCOMMANDS = ("run", "report", "replay", "ground", "doctor", "serve", "osworld")
#: `-h` as well as `--help`, on every command (subcommands inherit it from the app's context).
HELP_SETTINGS = {"help_option_names": ["--help", "-h"]}
EXIT_SUCCESS, EXIT_FAILED, EXIT_CANNOT_START, EXIT_STOPPED = 0, 1, 2, 130
#: Columns used when output goes to a file or pipe (rich would wrap at 80 and split paths).
PIPE_WIDTH = 200
#: AgentSettings/EnvOptions fields whose command-line flag is not `--field-name`.
FLAGS = {"frame_format": "--frames", "history_images": "--history", "history_policy": "--history-policy", "allowed_urls": "--allow-url"}
EXAMPLES = (
    ('kimi-agent --endpoint http://localhost:8000/v1 "enable Do Not Track"',
     "one episode on a private desktop, the model behind a vLLM server"),
    ('kimi-agent --backend scripted --replies replies.jsonl "click the page"',
     "replay a file of model replies (the scripted test double; no model needed)"),
    ("kimi-agent run tasks/suites/chrome --backend solutions --workers 2 --out runs/demo",
     "the built-in task suite with its scripted solutions, scored"),
)


def make_console(*, stderr: bool) -> Console:
    """A rich console for the CLI: styled on a terminal; on a file or pipe, no colour and no wrapping
    at 80 columns (long lines stay whole, tables get `PIPE_WIDTH` columns unless $COLUMNS is set)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False)
    width = None if os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


console = make_console(stderr=True)

episode_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                          pretty_exceptions_enable=False, context_settings=HELP_SETTINGS)
app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings=HELP_SETTINGS,
                  help="kimi-agent subcommands (see kimi-agent --help).")


#: click's UsageError (the base of typer.BadParameter), whether typer uses click or its vendored copy.
USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
#: click's base of its own errors, and the usage error that stands for "no arguments: show the help".
CLICK_ERROR: type[Exception] = USAGE_ERROR.__mro__[1]
NO_ARGS_IS_HELP: type[Exception] = getattr(sys.modules[USAGE_ERROR.__module__], "NoArgsIsHelpError", USAGE_ERROR)


class EpisodeCommand(typer.core.TyperCommand):
    """The episode command; words past the instruction get a hint to quote it."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERROR as e:
            message = str(getattr(e, "message", e))
            if "unexpected extra argument" not in message:
                raise
            raise USAGE_ERROR(f'{message}; quote an instruction of several words: kimi-agent [OPTIONS] "open the page"',
                              getattr(e, "ctx", None)) from None


# Options shared by every command that talks to a model (the tasks runner reuses BackendOptions).
ModelOpt = Annotated[str, typer.Option("--model", metavar="ID|DIR",
                                       help="hub id or local snapshot dir (the served model name with --endpoint)")]
# The same, where leaving it out means the server's only model with --endpoint, else DEFAULT_MODEL_ID.
ServedModelOpt = Annotated[str | None, typer.Option(
    "--model", metavar="ID|DIR", show_default=False,
    help=f"hub id or local snapshot dir [default: {DEFAULT_MODEL_ID}]; with --endpoint the served model name "
         "[default: the server's model, when it serves one]")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint", metavar="URL", envvar="OPENAI_BASE_URL",
                                                 help="OpenAI-compatible API base, e.g. http://localhost:8000/v1")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", metavar="KEY", envvar="OPENAI_API_KEY",
                                               help="API key for --endpoint")]
BackendOpt = Annotated[str | None, typer.Option("--backend", metavar="NAME",
                                                help="native | openai | transformers | scripted "
                                                     "(default: openai with --endpoint, scripted with --replies, "
                                                     "else native); transformers runs the model folder's own "
                                                     "Python code: only for a folder you trust")]
RepliesOpt = Annotated[Path | None, typer.Option("--replies", metavar="FILE",
                                                 help="JSONL replies for the scripted backend (a test double): "
                                                      'one JSON string or {"text": ...} per line, one per step')]


def _version(value: bool) -> None:
    if value:
        print(f"kimi-agent {__version__}")
        raise typer.Exit(EXIT_SUCCESS)


def backend_options(*, backend: str | None, model: str | None, endpoint: str | None, api_key: str | None,
                    replies: Path | None) -> Any:
    """The `BackendOptions` of the shared model flags (raises pydantic's ValidationError on a bad one);
    `model` None: not given (BackendOptions' default, or the endpoint's only model)."""
    from kimi_agent.options import BackendOptions

    given = {"model": model} if model is not None else {}
    return BackendOptions(backend=backend, endpoint=endpoint, api_key=api_key, replies=replies, **given)


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            row.append(min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb)))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def check_not_a_command(instruction: str) -> None:
    """Raise `ConfigError` when `instruction` is one word that looks like a mistyped subcommand
    (within 2 edits of its name, 1 for names of up to 5 letters), e.g. `kimi-agent doctr`."""
    word = instruction.strip()
    if not word or len(word.split()) != 1:
        return
    for name in SUBCOMMANDS:
        if edit_distance(word.lower(), name) <= (1 if len(name) <= 5 else 2):
            raise ConfigError(f"{word!r} is not a command; did you mean 'kimi-agent {name}'? (for an episode, "
                              'say more in quotes, e.g. kimi-agent "open the settings page")')


def not_a_run_folder(folder: Path) -> str:
    """Why the folder `folder` is no run folder, naming the run folders inside it where it holds
    some (a task folder of `kimi-agent run` holds its episode's)."""
    inside = sorted(d for d in folder.iterdir() if d.is_dir() and not d.is_symlink() and (d / "steps.jsonl").is_file())
    if not inside:
        return "is not a run folder (no run.json or steps.jsonl)"
    names = ", ".join(str(d) for d in inside[-3:])
    return f"is not a run folder, but holds {'one' if len(inside) == 1 else len(inside)}: {names}"


def _fail_start(err: BaseException) -> typer.Exit:
    """Print one `error:` line for `err` (a typed error or a bad option) and exit 2."""
    if isinstance(err, ValidationError):
        from kimi_agent.options import option_error

        text = option_error(err, FLAGS)
    else:
        text = str(err)
    console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
    return typer.Exit(EXIT_CANNOT_START)


@episode_app.command(cls=EpisodeCommand, no_args_is_help=True)
def episode(
    instruction: Annotated[str, typer.Argument(metavar="INSTRUCTION", show_default=False,
                                               help="what the agent should do, e.g. 'enable Do Not Track'")],
    model: ServedModelOpt = None,
    endpoint: EndpointOpt = None,
    api_key: ApiKeyOpt = None,
    backend: BackendOpt = None,
    replies: RepliesOpt = None,
    max_steps: Annotated[int, typer.Option("--max-steps", metavar="N", min=1, help="steps before giving up")] = 15,
    max_seconds: Annotated[float, typer.Option("--max-seconds", metavar="S", help="wall-clock budget")] = 1800.0,
    temperature: Annotated[float, typer.Option("--temperature", metavar="T", min=0.0, max=2.0)] = 0.0,
    thinking: Annotated[bool, typer.Option("--thinking", help="a Kimi-VL Thinking model")] = False,
    history: Annotated[int, typer.Option("--history", metavar="N", min=1, help="screenshots the model sees")] = 3,
    history_policy: Annotated[str, typer.Option(
        "--history-policy", metavar="exact|chunked",
        help="exact: always N screenshots; chunked: N..2N-1, folded N at a time, so the prompt mostly only "
             "grows and a local model reuses its cache")] = "exact",
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for trajectories")] = Path("runs"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before risky actions")] = False,
    env: Annotated[str, typer.Option("--env", metavar="desktop|browser",
                                     help="Chromium on an X desktop, or a Playwright page (needs --url)")] = "desktop",
    url: Annotated[str | None, typer.Option("--url", metavar="URL", help="first page to open")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", metavar="DIR",
                                                 help="Chromium profile dir (default: a fresh one)")] = None,
    app_cmd: Annotated[str | None, typer.Option("--app", metavar="CMD", help="start this app instead of Chromium")] = None,
    display: Annotated[str | None, typer.Option("--display", metavar=":N",
                                                help="X display (default $DISPLAY, else a private Xvfb)")] = None,
    allow_url: Annotated[list[str] | None, typer.Option("--allow-url", metavar="URL",
                                                        help="allowed origin, optionally with a path prefix: https://example.com or "
                                                             "http://127.0.0.1:8000/app/ (repeat); --env browser only: "
                                                             "refused with --env desktop, whose Chromium it cannot "
                                                             "restrict")] = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", metavar="NAME=VALUE",
                                                     help="the model types <secret>NAME</secret> (repeat)")] = None,
    frames: Annotated[str, typer.Option("--frames", metavar="png|jpeg", help="screenshot file format")] = "png",
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Run one episode: the model sees the screen and acts until INSTRUCTION is done.

    \b
      kimi-agent [OPTIONS] INSTRUCTION   one episode (options below)
      kimi-agent COMMAND [ARGS]...       run, report, replay, ground, doctor, serve, osworld (listed below)

    An episode writes runs/<time>_<slug>/ (run.json, steps.jsonl, frames/, report.html,
    traj.jsonl, recording.mp4). Exit code 0 on success, 1 on failure, 2 when it could not start, 130 after Ctrl-C.
    """
    from kimi_agent.loop import Agent, AgentSettings
    from kimi_agent.model_runtime.backends.base import Sampling
    from kimi_agent.options import EnvOptions, check_env, check_folder, make_backend, open_env
    from kimi_agent.progress import ConsoleListener
    from kimi_agent.result import EpisodeInterrupted
    from kimi_agent.safety import SafetySettings

    try:
        if not instruction.strip():
            raise ConfigError('the instruction is empty; say what the agent should do, e.g. '
                              'kimi-agent "enable Do Not Track".')
        check_not_a_command(instruction)
        if env == "browser" and url is None:
            raise ConfigError("--env browser needs --url URL, the page to start on "
                              "(pass --url about:blank to start on an empty page).")
        secrets = dict(_pair(s) for s in secret or [])
        bopts = backend_options(backend=backend, model=model, endpoint=endpoint, api_key=api_key, replies=replies)
        eopts = EnvOptions(env=env, url=url, profile=profile, app=app_cmd, display=display,
                           allowed_urls=allow_url or [])
        settings = AgentSettings(max_steps=max_steps, max_seconds=max_seconds, thinking=thinking,
                                 history_images=history, history_policy=history_policy,
                                 out_dir=out, frame_format=frames,
                                 sampling=Sampling(temperature=temperature, top_p=0.95, max_new_tokens=1024),
                                 safety=SafetySettings(confirm_risky=not yes, allowed_urls=allow_url or [],
                                                       secrets=secrets))
        check_env(eopts)  # a bad --url, --app, --profile or --display: before a model or display starts
        check_folder(out, "--out")
        model_backend = make_backend(bopts)  # before any environment starts: a missing model fails fast
    except (AgentError, ValueError) as e:
        raise _fail_start(e) from None
    interactive = sys.stdin.isatty()
    listener = ConsoleListener(console, secrets=secrets.values())
    console.print(f"[bold]kimi-agent[/] {escape(instruction)}  [dim]({bopts.resolved()} backend, {env} env)[/]")
    try:
        with open_env(eopts, checked=True) as environment:
            agent = Agent(model_backend, environment, settings, listener=listener,
                          confirm=listener.confirm if interactive else None,
                          ask=listener.ask if interactive else None)
            result = agent.run(instruction)  # the trajectory, report.html and traj.jsonl
    except EpisodeInterrupted as stop:  # Ctrl-C: written as far as it went
        result = stop.result
    except AgentError as e:
        raise _fail_start(e) from None
    finally:
        listener.stop()
    listener.summary(result)
    raise typer.Exit(EXIT_SUCCESS if result.success else EXIT_STOPPED if result.status == "user_stopped" else EXIT_FAILED)



def _show_serving_log() -> None:
    """The serving package's INFO lines (loading, shutdown), plainly on stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    serving_log = logging.getLogger("kimi_agent.model_runtime.serving")
    serving_log.addHandler(handler)
    serving_log.setLevel(logging.INFO)
    serving_log.propagate = False

def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--secret expects NAME=VALUE, got {text.split('=')[0]!r}")
    return name, value


def _finish_run(run_dir: Path) -> dict[str, Path]:
    from kimi_agent.artifacts import write_episode_artifacts

    return write_episode_artifacts(run_dir)


@app.command(context_settings={"help_option_names": ["--help", "-h"]})
def report(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a runs/<time>_<slug> folder")],
           open_browser: Annotated[bool, typer.Option("--open", help="open it in a web browser")] = False) -> None:
    """Write RUN_DIR/report.html (self-contained), traj.jsonl (OSWorld format) and recording.mp4."""
    if not (run_dir / "steps.jsonl").exists() and not (run_dir / "run.json").exists():
        why = ("does not exist" if not run_dir.exists() else "is a file, not a run folder" if not run_dir.is_dir()
               else not_a_run_folder(run_dir))
        console.print(f"[bold red]error:[/] {escape(str(run_dir))} {why}", soft_wrap=True)
        raise typer.Exit(EXIT_CANNOT_START)
    from kimi_agent.report import load_run

    try:  # a run.json or steps.jsonl that is not JSON: named, nothing rewritten (as replay does)
        load_run(run_dir)
    except ArtifactError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}; nothing was rewritten", soft_wrap=True)
        raise typer.Exit(EXIT_CANNOT_START) from None
    written = _finish_run(run_dir)
    missing = [name for name in ("report.html", "traj.jsonl") if name not in written]
    if missing:  # the reason was logged as it happened
        names = " and ".join(str(run_dir / name) for name in missing)
        console.print(f"[bold red]error:[/] {escape(names)} not written (the reason is above)", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)
    path = run_dir / "report.html"
    print(path)
    if open_browser:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            console.print(f"no web browser could be started here (no $BROWSER, no desktop); open {escape(str(path))} "
                          "yourself", style="yellow")


app.command("replay", context_settings={"help_option_names": ["--help", "-h"]})(replay_command)


@app.command()
def ground(image: Annotated[Path, typer.Argument(metavar="IMAGE", help="a screenshot (PNG/JPEG)")],
           text: Annotated[str, typer.Argument(metavar="TEXT", help="what to find, e.g. 'the Save button'")],
           model: ServedModelOpt = None, endpoint: EndpointOpt = None, api_key: ApiKeyOpt = None,
           backend: BackendOpt = None, replies: RepliesOpt = None) -> None:
    """Print the point the model picks for TEXT on IMAGE (fractions and pixels)."""

    from kimi_agent.ground import ground_point
    from kimi_agent.options import make_backend

    try:
        if not text.strip():
            raise ConfigError("TEXT is empty; say what to find on the screenshot, e.g. 'the Save button'.")
        picture = _open_image(image)
        model_backend = make_backend(backend_options(backend=backend, model=model, endpoint=endpoint,
                                                     api_key=api_key, replies=replies))
        point, raw = ground_point(model_backend, picture, text)
    except (AgentError, OSError, ValidationError) as e:
        raise _fail_start(e) from None
    if point is None:
        console.print(f"[red]no point in the reply:[/] {escape(raw)}")
        raise typer.Exit(EXIT_FAILED)
    w, h = picture.size
    print(f"x={point[0]:.4f} y={point[1]:.4f}  ({round(point[0] * w)}, {round(point[1] * h)}) px of {w}x{h}")


def _open_image(path: Path) -> Any:
    """`path` as an RGB PIL image; `ConfigError` saying plainly why not (missing, a folder, not an image)."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise ConfigError(f"IMAGE {path}: no such file.")
    if path.is_dir():
        raise ConfigError(f"IMAGE {path} is a folder; give a screenshot file (PNG or JPEG).")
    try:
        with Image.open(path) as f:
            return f.convert("RGB")
    except UnidentifiedImageError:
        raise ConfigError(f"IMAGE {path} is not a PNG or JPEG image.") from None
    except OSError as e:
        raise ConfigError(f"IMAGE {path} cannot be read ({e.strerror or e}).") from None


@app.command()
def doctor(model: ModelOpt = DEFAULT_MODEL_ID) -> None:
    """Check Chromium, Xvfb, the display, GPU/CUDA, the model files and the task sandbox; print fixes."""
    from kimi_agent.doctor import print_checks, run_checks
    from kimi_agent.tasks.doctor import run_checks as task_checks

    checks = [*run_checks(model=model), *task_checks()]
    print_checks(checks, make_console(stderr=False))
    raise typer.Exit(EXIT_SUCCESS if all(c.ok or c.optional for c in checks) else EXIT_FAILED)


@app.command()
def serve(
    model: Annotated[str | None, typer.Option("--model", metavar="DIR|ID", show_default=False,
                                              help="Kimi-VL snapshot directory or hub id (required)")] = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDR", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="N", min=0, max=65535, help="0: any free port")] = 8000,
    device: Annotated[str, typer.Option("--device", metavar="auto|cuda|cpu", help="auto: CUDA when present")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", metavar="NAME", help="bfloat16 | float16 | float32 | auto")] = "bfloat16",
    served_model_name: Annotated[str | None, typer.Option(
        "--served-model-name", metavar="NAME", help="the model name clients send (default: --model as given)")] = None,
    max_model_len: Annotated[int | None, typer.Option(
        "--max-model-len", metavar="N", min=2, help="prompt + completion tokens per request (default 32768)")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", metavar="N", min=1,
                                           help="requests waiting before the server answers 429")] = 16,
    max_batch: Annotated[int, typer.Option("--max-batch", metavar="N", min=1,
                                           help="requests decoding together (1: one at a time)")] = 8,
    scheduler: Annotated[str, typer.Option("--scheduler", metavar="auto|batch|serial",
                                           help="auto: batch, or serial with --max-batch 1")] = "auto",
    max_connections: Annotated[int | None, typer.Option(
        "--max-connections", metavar="N", min=1, show_default=False,
        help="open connections at once (default: the open-file limit less a reserve)")] = None,
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API (/v1/chat/completions)."""
    from kimi_agent.model_runtime.device import check_dtype_name
    from kimi_agent.model_runtime.serving.server import ServeOptions, bind, build_app
    from kimi_agent.model_runtime.serving.server import serve as run_server

    sock = None
    try:
        if not model:
            raise ConfigError("kimi-agent serve needs --model DIR_OR_ID: a Kimi-VL snapshot directory or a hub id "
                              f"such as {DEFAULT_MODEL_ID}.")
        if scheduler not in ("auto", "batch", "serial"):
            raise ConfigError(f"--scheduler {scheduler!r}: use auto, batch or serial")
        _check_device(device)
        check_dtype_name(dtype)
        sock = bind(host, port)  # a taken port fails before minutes of loading
        options = ServeOptions(model=model, served_model_name=served_model_name, device=device, dtype=dtype,
                               max_model_len=max_model_len, max_queue=max_queue, max_batch=max_batch,
                               scheduler=scheduler)  # the scheduler was checked above
        _show_serving_log()  # "loading ... on cuda (bfloat16)", "loaded in N s", shutdown notes
        server_app = build_app(options)
    except (AgentError, ValueError) as e:
        if sock is not None:
            sock.close()
        raise _fail_start(e) from None
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    console.print(f"[bold]kimi-agent serve[/] {escape(options.served_model_name or model)} at "
                  f"http://{url_host}:{bound_port}/v1", soft_wrap=True)
    run_server(server_app, sock, max_connections=max_connections)


def _check_device(device: str) -> None:
    """Raise `ConfigError` unless `device` is auto, cpu, or cuda[:N] where torch sees a CUDA GPU."""
    from kimi_agent.model_runtime.device import check_device_name

    check_device_name(device)
    if device.startswith("cuda"):
        from kimi_agent.model_runtime.device import device_info  # imports torch (here, not at module top)

        info = device_info()
        if info.cuda_device is None:
            found = "torch is not installed" if info.torch_version is None else f"torch {info.torch_version} sees none"
            raise ConfigError(f"--device cuda needs a CUDA GPU, and {found}; pass --device cpu (slow), or run on a "
                              "machine with an NVIDIA GPU and a CUDA build of torch.")


def _name(info: Any) -> str:
    return str(info.name or (info.callback.__name__ if info.callback else ""))


def guide() -> str:
    """The end of `kimi-agent --help`: every subcommand with its one-line summary, then examples.

    Lines starting with a backspace (`\\b`) keep click from rewrapping the paragraph after them.
    """
    lines = ["\b", "Commands (kimi-agent COMMAND --help for their options):"]
    order = {name: i for i, name in enumerate(SUBCOMMANDS)}
    entries = [(_name(c), (c.help or (c.callback.__doc__ if c.callback else "") or "").strip())
               for c in app.registered_commands]
    for group in app.registered_groups:  # command groups (`osworld setup|inventory`)
        instance = group.typer_instance
        doc = group.help or (instance.info.help if instance is not None else None) or ""
        entries.append((str(group.name), str(doc).strip()))
    for name, doc in sorted(entries, key=lambda e: order.get(e[0], len(order))):
        lines.append(f"  {name:<8} {doc.splitlines()[0] if doc else ''}")
    lines += ["", "\b", "Examples:"]
    for command, what in EXAMPLES:
        lines += [f"  # {what}", f"  {command}"]
    return "\n".join(lines)


def usage_line(error: Exception) -> str:
    """A click usage error as the text of the one `error:` line every other mistake gets, with where to look.

    `kimi-agent --max-stesp 3 x` -> `No such option: --max-stesp (Possible options: --max-seconds,
    --max-steps); see kimi-agent --help`.
    """
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "kimi-agent"
    message = str(getattr(error, "format_message", lambda: error)()).rstrip(".")
    return f"{message}; see {path} --help"


def run_click(command: typer.Typer, args: list[str]) -> None:
    """Run a typer app without click's own exit handling, so a usage error is one `error:` line (exit 2).

    click's standalone mode prints a usage error as a four-line block (`Usage:`, `Try ...`, blank, `Error:`);
    here it reads like every other mistake. A bare command still prints its help (click's "no args is help").
    """
    try:
        code = command(args=args, prog_name="kimi-agent", standalone_mode=False)
    except NO_ARGS_IS_HELP as e:
        e.show()  # type: ignore[attr-defined]  # click's method: the command's help, on stderr
        sys.exit(EXIT_CANNOT_START)
    except USAGE_ERROR as e:
        console.print(f"[bold red]error:[/] {escape(usage_line(e))}", soft_wrap=True)
        sys.exit(EXIT_CANNOT_START)
    except CLICK_ERROR as e:  # a FileError or another of click's own: click's wording, click's exit code
        e.show()  # type: ignore[attr-defined]
        sys.exit(int(getattr(e, "exit_code", EXIT_CANNOT_START)))
    except typer.Abort:  # click's Ctrl-C at a prompt
        raise KeyboardInterrupt from None
    if isinstance(code, int) and not isinstance(code, bool):  # typer.Exit(code): returned, not raised
        sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: dispatch subcommands vs. the episode command."""
    args = list(sys.argv[1:] if argv is None else argv)
    from kimi_agent.logs import log_to_stderr

    log_to_stderr()  # the library's warnings, as lines on stderr
    # ---- subcommands that other packages add, each with its own register(app) -------------------
    from kimi_agent.tasks.cli import register

    register(app)
    from kimi_agent.tasks.osworld_cli import register as register_osworld  # `kimi-agent osworld setup`

    register_osworld(app)
    # ----------------------------------------------------------------------------------------------
    episode_app.registered_commands[0].epilog = guide()
    try:
        if args and args[0] not in SUBCOMMANDS and not args[0].startswith("-"):
            check_not_a_command(args[0])  # `kimi-agent doctr` or `kimi-agent reprt RUN_DIR`
        run_click(app if args and args[0] in SUBCOMMANDS else episode_app, args)
    except KeyboardInterrupt:
        console.print("[yellow]stopped[/]")
        sys.exit(EXIT_STOPPED)
    except (AgentError, ValidationError) as e:  # a typed error no command handled: one line, no traceback
        try:
            raise _fail_start(e) from None
        except typer.Exit as stop:
            sys.exit(stop.exit_code)
