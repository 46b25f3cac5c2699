"""`kimi-agent replay RUN_DIR [--env browser --url URL | --env desktop]`: the replay subcommand.

The environment defaults to the run's own (run.json: env kind, start URL, screen size). Exit code
0 when every step's screen matches the recorded frame within the threshold, 1 when any differs,
2 when the replay could not start (not a run folder, a bad option, an environment that fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from kimi_agent.errors import AgentError, ConfigError


def replay_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a runs/<time>_<slug> folder")],
    env: Annotated[str | None, typer.Option("--env", metavar="desktop|browser",
                                            help="default: the run's environment")] = None,
    url: Annotated[str | None, typer.Option("--url", metavar="URL", help="first page (default: the run's)")] = None,
    threshold: Annotated[float, typer.Option("--threshold", metavar="F", min=0.0, max=1.0,
                                             help="largest fraction of differing pixels that still matches")] = 0.02,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR",
                                             help="replay folder (default RUN_DIR/replay-<time>)")] = None,
    display: Annotated[str | None, typer.Option("--display", metavar=":N", help="X display (default: a private Xvfb)")]
    = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", metavar="NAME=VALUE",
                                                     help="a secret the run typed (repeatable); without it, "
                                                          "that step's typing is skipped")] = None,
) -> None:
    """Re-execute RUN_DIR's recorded actions in a fresh environment; report where the screen differs."""
    from kimi_agent.cli.app import (
        EXIT_CANNOT_START,
        EXIT_FAILED,
        EXIT_SUCCESS,
        _fail_start,
        _pair,
        console,
        not_a_run_folder,
    )
    from kimi_agent.options import EnvOptions, check_folder, open_env
    from kimi_agent.replay import read_recorded_run, replay_run

    try:
        secrets = dict(_pair(p) for p in secret or [])
        if not run_dir.exists():
            raise ConfigError(f"{run_dir} does not exist")
        if not (run_dir / "steps.jsonl").is_file():
            raise ConfigError(f"{run_dir} {not_a_run_folder(run_dir)}" if run_dir.is_dir() else
                              f"{run_dir} is a file, not a run folder")
        run = read_recorded_run(run_dir)
        if out is not None:
            check_folder(out, "--out")
        recorded: dict[str, Any] = run["env"] if isinstance(run.get("env"), dict) else {}
        geometry = recorded.get("geometry") or {}
        kind = env or recorded.get("kind") or run.get("env_kind") or "desktop"
        start = url or run.get("start_url")
        if kind == "browser" and not start:
            raise ConfigError("--env browser needs --url URL (the run did not record its start page)")
        opts = EnvOptions(env=kind, url=start, display=display,
                          width=round(geometry.get("exec_width") or 1920), height=round(geometry.get("exec_height") or 1080))
    except (AgentError, ValueError) as e:
        raise _fail_start(e) from None
    try:
        with open_env(opts) as environment:
            result = replay_run(run_dir, environment, out_dir=out, threshold=threshold, secrets=secrets)
    except AgentError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(EXIT_CANNOT_START) from None
    for s in result.steps:
        mark = "[green]matches[/]" if s.matched else "[red]DIFFERS[/]"
        console.print(f"step {s.step}: {mark} ({s.difference:.2%} of pixels differ)"
                      + (f": {escape(s.error)}" if s.error else ""))
    print(result.out_dir / "report.html")
    raise typer.Exit(EXIT_SUCCESS if result.matched else EXIT_FAILED)
