"""`kimi-agent osworld setup|inventory`: the OSWorld bridge environment from the command line.

`setup` creates `.venv-osworld` (see tasks/osworld_setup.py) and prints the install time and
size; `inventory PATH...` loads OSWorld task files as `kimi-agent run` on VMs does (tasks/vm_tasks.py) and
prints how many load, how many have every setup step, getter and metric available through the
bridge (and, per missing name, how many tasks need it), and each file that does not load with its
reason. `register(app)` adds the group to the main CLI (agent/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

osworld_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="OSWorld on its own machinery: the bridge environment (desktop-env).")

VenvOption = Annotated[Path | None, typer.Option(
    "--venv", metavar="DIR", help="the bridge environment (default: $KIMI_AGENT_OSWORLD_VENV or ./.venv-osworld)")]


@osworld_app.command("setup", short_help="Build the bridge environment (desktop-env and what its evaluators import).")
def setup_command(venv: VenvOption = None,
                  force: Annotated[bool, typer.Option(help="delete and recreate an existing environment")] = False,
                  ) -> None:
    """Create the bridge environment: desktop-env (--no-deps) plus what its evaluators import."""
    from kimi_agent.errors import ConfigError
    from kimi_agent.tasks.osworld_bridge import default_venv
    from kimi_agent.tasks.osworld_setup import setup_bridge_env

    target = venv or Path(".venv-osworld")
    if venv is None and default_venv().exists():
        target = default_venv()
    try:
        report = setup_bridge_env(target, force=force, log=lambda line: typer.echo(line, err=True))
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    what = "kept (use --force to rebuild)" if report.reused else f"installed in {report.seconds:.0f} s"
    typer.echo(f"OSWorld bridge environment {report.venv}: desktop-env {report.desktop_env}, {what}, "
               f"{report.size_mb:.0f} MB")


@osworld_app.command("inventory", short_help="Count the task files the bridge loads and can run whole.")
def inventory_command(paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="OSWorld task files or folders")],
                      venv: VenvOption = None,
                      show: Annotated[bool, typer.Option("--tasks", help="list every task that misses something")]
                      = False) -> None:
    """How many task files load, and how many have every step, getter and metric in the bridge."""
    from kimi_agent.errors import ConfigError, TaskError
    from kimi_agent.tasks.osworld_bridge import inventory

    try:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise ConfigError(f"{missing[0]}: no such task file or folder")
        report = inventory(paths, venv=venv)
    except (ConfigError, TaskError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"{report['files']} task files, {report['loaded']} load, {report['complete']} have every setup "
               "step, getter and metric available through the bridge")
    for name, count in sorted(report["problems"].items(), key=lambda kv: (-kv[1], kv[0])):
        typer.echo(f"  {count:4d}  {name}")
    invalid = [row for row in report["tasks"] if "error" in row]
    if invalid:
        typer.echo(f"{len(invalid)} do not load:")
        for row in invalid:
            typer.echo(f"  {row['path']}: {row['error']}")
    if show:
        for row in report["tasks"]:
            if row.get("missing"):
                typer.echo(f"{row['path']}: {'; '.join(row['missing'])}")


def register(app: typer.Typer) -> None:
    """Add the `osworld` group to the main CLI (idempotent)."""
    if not any(g.name == "osworld" for g in app.registered_groups):
        app.add_typer(osworld_app, name="osworld")
