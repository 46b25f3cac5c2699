"""The `kimi-agent` command.

`kimi-agent "enable Do Not Track"` runs one episode; `kimi-agent report RUN_DIR`, `ground IMAGE
TEXT`, `doctor` (and `run TASKS`, from the tasks package) are subcommands. typer cannot mix a free
positional instruction with subcommands, so `main()` dispatches: a known subcommand name goes to
the subcommand app, anything else to the episode command. Exit code 0 only when the episode ends
in success; 2 when it could not start (the message says what to pass); 130 when stopped by Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from kimi_agent.errors import AgentError
from kimi_agent.model_runtime.hub import DEFAULT_MODEL_ID

console = Console(stderr=True, highlight=False)

SUBCOMMANDS = ("run", "report", "ground", "doctor")
EXIT_SUCCESS, EXIT_FAILED, EXIT_CANNOT_START, EXIT_STOPPED = 0, 1, 2, 130

episode_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                          help="Run one GUI-agent episode (subcommands: run, report, ground, doctor).")
app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  help="kimi-agent subcommands.")

# Options shared by every command that talks to a model (the tasks runner reuses BackendOptions).
ModelOpt = Annotated[str, typer.Option("--model", help="hub id or local snapshot dir (served model name for --endpoint)")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint", help="OpenAI-compatible API base, e.g. http://localhost:8000/v1")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key for --endpoint (default $OPENAI_API_KEY)")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="native | openai | transformers | scripted")]
RepliesOpt = Annotated[Path | None, typer.Option("--replies", help="JSONL replies for the scripted backend (a test double)")]


def backend_options(*, backend: str | None, model: str, endpoint: str | None, api_key: str | None,
                    replies: Path | None) -> Any:
    from kimi_agent.options import BackendOptions

    return BackendOptions(backend=backend, model=model, endpoint=endpoint, api_key=api_key,
                          replies=replies)


def _fail_start(err: BaseException) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    return typer.Exit(EXIT_CANNOT_START)


@episode_app.command()
def episode(
    instruction: Annotated[str, typer.Argument(help="what the agent should do, e.g. 'enable Do Not Track'")],
    model: ModelOpt = DEFAULT_MODEL_ID,
    endpoint: EndpointOpt = None,
    api_key: ApiKeyOpt = None,
    backend: BackendOpt = None,
    replies: RepliesOpt = None,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1)] = 15,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help="wall-clock budget")] = 1800.0,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.0,
    thinking: Annotated[bool, typer.Option("--thinking", help="a Kimi-VL Thinking model")] = False,
    history: Annotated[int, typer.Option("--history", min=1, help="screenshots the model sees")] = 3,
    out: Annotated[Path, typer.Option("--out", help="folder for trajectories")] = Path("runs"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before risky actions")] = False,
    env: Annotated[str, typer.Option("--env", help="desktop | browser")] = "desktop",
    url: Annotated[str | None, typer.Option("--url", help="first page to open")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", help="Chromium profile dir (default: a fresh one)")] = None,
    app_cmd: Annotated[str | None, typer.Option("--app", help="start this app instead of Chromium")] = None,
    display: Annotated[str | None, typer.Option("--display", help="X display (default $DISPLAY, else a private Xvfb)")] = None,
    allow_url: Annotated[list[str] | None, typer.Option("--allow-url", help="allowed origin, optionally with a path prefix: https://example.com or http://127.0.0.1:8000/app/ (repeat)")] = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", help="NAME=VALUE; the model types <secret>NAME</secret>")] = None,
    frames: Annotated[str, typer.Option("--frames", help="png | jpeg")] = "png",
) -> None:
    """Run one episode for INSTRUCTION and write runs/<time>_<slug>/ with report.html."""
    from kimi_agent.loop import Agent, AgentSettings
    from kimi_agent.model_runtime.backends.base import Sampling
    from kimi_agent.options import EnvOptions, make_backend, open_env
    from kimi_agent.progress import ConsoleListener, ask_on_terminal, confirm_on_terminal
    from kimi_agent.safety import SafetySettings

    try:
        secrets = dict(_pair(s) for s in secret or [])
        bopts = backend_options(backend=backend, model=model, endpoint=endpoint, api_key=api_key, replies=replies)
        eopts = EnvOptions(env=env, url=url, profile=profile, app=app_cmd, display=display,
                           allowed_urls=allow_url or [])
        settings = AgentSettings(max_steps=max_steps, max_seconds=max_seconds, thinking=thinking,
                                 history_images=history, out_dir=out, frame_format=frames,
                                 sampling=Sampling(temperature=temperature, top_p=0.95, max_new_tokens=1024),
                                 safety=SafetySettings(confirm_risky=not yes, allowed_urls=allow_url or [],
                                                       secrets=secrets))
        model_backend = make_backend(bopts)  # before any environment starts: a missing model fails fast
    except (AgentError, ValueError) as e:
        raise _fail_start(e) from None
    interactive = sys.stdin.isatty()
    listener = ConsoleListener(console, secrets=secrets.values())
    console.print(f"[bold]kimi-agent[/] {escape(instruction)}  [dim]({bopts.resolved()} backend, {env} env)[/]")
    try:
        with open_env(eopts) as environment:
            agent = Agent(model_backend, environment, settings, listener=listener,
                          confirm=confirm_on_terminal if interactive else None,
                          ask=ask_on_terminal if interactive else None)
            result = agent.run_episode(instruction)
    except AgentError as e:
        raise _fail_start(e) from None
    _finish_run(result.run_dir)
    listener.summary(result)
    raise typer.Exit(EXIT_SUCCESS if result.success else EXIT_STOPPED if result.status == "user_stopped" else EXIT_FAILED)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--secret expects NAME=VALUE, got {text.split('=')[0]!r}")
    return name, value


def _finish_run(run_dir: Path) -> None:
    from kimi_agent.export import export_osworld
    from kimi_agent.report import write_report

    write_report(run_dir)
    export_osworld(run_dir)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a runs/<time>_<slug> folder")],
           open_browser: Annotated[bool, typer.Option("--open", help="open it in a web browser")] = False) -> None:
    """Write RUN_DIR/report.html (self-contained) and RUN_DIR/traj.jsonl (OSWorld format)."""
    if not (run_dir / "steps.jsonl").exists() and not (run_dir / "run.json").exists():
        console.print(f"[bold red]error:[/] {escape(str(run_dir))} is not a run folder (no run.json or steps.jsonl)")
        raise typer.Exit(EXIT_CANNOT_START)
    _finish_run(run_dir)
    path = run_dir / "report.html"
    print(path)
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command()
def ground(image: Annotated[Path, typer.Argument(help="a screenshot (PNG/JPEG)")],
           text: Annotated[str, typer.Argument(help="what to find, e.g. 'the Save button'")],
           model: ModelOpt = DEFAULT_MODEL_ID, endpoint: EndpointOpt = None, api_key: ApiKeyOpt = None,
           backend: BackendOpt = None, replies: RepliesOpt = None) -> None:
    """Print the point the model picks for TEXT on IMAGE (fractions and pixels)."""
    from PIL import Image

    from kimi_agent.ground import ground_point
    from kimi_agent.options import make_backend

    try:
        picture = Image.open(image).convert("RGB")
        model_backend = make_backend(backend_options(backend=backend, model=model, endpoint=endpoint,
                                                     api_key=api_key, replies=replies))
        point, raw = ground_point(model_backend, picture, text)
    except (AgentError, OSError) as e:
        raise _fail_start(e) from None
    if point is None:
        console.print(f"[red]no point in the reply:[/] {escape(raw)}")
        raise typer.Exit(EXIT_FAILED)
    w, h = picture.size
    print(f"x={point[0]:.4f} y={point[1]:.4f}  ({round(point[0] * w)}, {round(point[1] * h)}) px of {w}x{h}")


@app.command()
def doctor(model: ModelOpt = DEFAULT_MODEL_ID) -> None:
    """Check Chromium, Xvfb, the display, GPU/CUDA and the model files; print fixes."""
    from kimi_agent.doctor import print_checks, run_checks

    checks = run_checks(model=model)
    print_checks(checks, Console())
    raise typer.Exit(EXIT_SUCCESS if all(c.ok or c.optional for c in checks) else EXIT_FAILED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: dispatch subcommands vs. the episode command."""
    args = list(sys.argv[1:] if argv is None else argv)
    # ---- tasks runner: the tasks package adds the `run` subcommand here --------------------------
    from kimi_agent.tasks.cli import register

    register(app)
    # ----------------------------------------------------------------------------------------------
    try:
        if args and args[0] in SUBCOMMANDS:
            app(args=args, prog_name="kimi-agent")
        else:
            episode_app(args=args, prog_name="kimi-agent")
    except KeyboardInterrupt:
        console.print("[yellow]stopped[/]")
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    main()
