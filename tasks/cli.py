"""`kimi-agent run PATH... [--workers N] [--max-steps N] [--out DIR] [--resume]`: OSWorld-format runs.

Tasks come from files and folders, or from an OSWorld meta file (`--test-meta test_all.json
--domain chrome`: ids under `examples/<domain>/<id>.json` next to it). The exit code is 0 only
when every runnable task was scored; 1 when any task errored (rerun those with `--resume`); 2 when
the run could not start (one `error:` line, before any worker starts or --out is written: a task
path that does not exist, no task that can run, an unusable --out, --replies or --backend, a model
that cannot be loaded: the native model is loaded before --out is touched); 130
after Ctrl-C (the tasks it stopped are `interrupted`). The results print as a table on a terminal,
else as plain whole lines, one per task.

`register(app)` adds the command to the main typer app (cli/app.py); `python -m
kimi_agent.tasks.cli run ...` works on its own. Model options are the shared ones (`--backend`,
`--model`, `--endpoint`, `--api-key`, `--replies`, as `kimi_agent.options.BackendOptions`) plus two test doubles for demos and tests:
`solutions` (scripted solutions of the built-in suite and the real Do Not Track task) and
`do-nothing` (every episode reports success at once).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kimi_agent.errors import ConfigError
from kimi_agent.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from kimi_agent.model_runtime.backends.base import Backend
    from kimi_agent.tasks.host import LocalHost
    from kimi_agent.tasks.loader import TaskSet
    from kimi_agent.tasks.runner import RunSettings, RunSummary

_MODEL_CACHE: dict[str, Any] = {}  # per worker process: a model backend is loaded once, reused per task


@dataclass(frozen=True)
class BackendChoice:
    """A picklable backend factory for the runner's worker processes."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def in_worker(self) -> bool:
        """The scripted solutions read the worker's browser, so they run in the worker; a model
        runs once in the runner's process and answers every worker."""
        return self.name in ("solutions", "do-nothing")

    def __call__(self, spec: TaskSpec, host: LocalHost, local_server: str) -> Backend:
        from kimi_agent.tasks.suites import solutions

        if self.name == "solutions":
            return solutions.solution_backend(spec, host, local_server)
        if self.name == "do-nothing":
            return solutions.do_nothing_backend(spec, host, local_server)
        from kimi_agent.options import BackendOptions, make_backend

        opts = BackendOptions.model_validate(self.options)
        if opts.resolved() == "scripted":  # stateful: a fresh replay per task
            return make_backend(opts)
        return self.load()

    def load(self) -> Backend:
        """The model backend, made once per process (a native model is loaded here: seconds to
        minutes); raises what `make_backend` raises (ModelUnavailableError, ConfigError, ...). The
        run command calls it before any worker starts or --out is touched; the test doubles and
        the scripted backend have nothing to load (made per task)."""
        from kimi_agent.options import BackendOptions, make_backend

        if self.name not in _MODEL_CACHE:
            _MODEL_CACHE[self.name] = make_backend(BackendOptions.model_validate(self.options))
        backend: Backend = _MODEL_CACHE[self.name]
        return backend

    @property
    def loads_a_model(self) -> bool:
        """Whether `load` has a model to load (not a test double, not the scripted backend)."""
        return not self.in_worker and self.name != "scripted"


def run_command(
    paths: Annotated[list[Path] | None, typer.Argument(metavar="PATH", help="task JSON files or folders (searched recursively)")]
    = None,
    test_meta: Annotated[Path | None, typer.Option(
        metavar="FILE",
        help="OSWorld meta file ({domain: [ids]}); tasks are <its folder>/examples/<domain>/<id>.json")] = None,
    domain: Annotated[list[str] | None, typer.Option(metavar="NAME", help="with --test-meta: only these domains (repeatable)")]
    = None,
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="parallel workers, each with its own display and browser")] = 1,
    max_steps: Annotated[int, typer.Option(min=1, metavar="N", help="steps per episode")] = 15,
    out: Annotated[Path, typer.Option(metavar="DIR", help="output folder: <task id>/result.json, results.json/csv, index.html")]
    = Path("runs/tasks"),
    resume: Annotated[bool, typer.Option(help="keep scored results in --out; rerun errored and unfinished tasks")]
    = False,
    confirm: Annotated[bool, typer.Option(
        help="refuse risky actions (ctrl+w, closing windows...) as the interactive agent does; default: none "
             "needs a confirmation, as in OSWorld. Refusals are listed in each result")] = False,
    max_seconds: Annotated[float | None, typer.Option("--max-seconds", metavar="S", help="wall-clock budget of one episode "
                                                      "(default: --task-timeout)")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0, metavar="T",
                                                           help="sampling temperature (0: greedy)")] = 0.0,
    thinking: Annotated[bool, typer.Option("--thinking", help="a Kimi-VL Thinking model")] = False,
    history: Annotated[int, typer.Option("--history", min=1, metavar="K", help="screenshots the model sees")] = 3,
    history_policy: Annotated[str, typer.Option("--history-policy", metavar="exact|chunked",
                                                help="see kimi-agent --help")] = "exact",
    task_timeout: Annotated[float, typer.Option(metavar="S", help="wall-clock seconds per task")] = 900.0,
    start_timeout: Annotated[float, typer.Option(
        min=1.0, max=600.0, metavar="S", help="seconds a worker's display and each task's Chromium may take to "
                                              "start (raise it on a slow or loaded machine)")] = 20.0,
    allow_network: Annotated[bool, typer.Option(
        help="also run tasks that need the internet (each sandboxed worker gets a network of its own that does not "
             "reach this machine; `kimi-agent doctor` says if it can)")] = False,
    backend: Annotated[str | None, typer.Option(
        metavar="NAME", help="native | openai | transformers | scripted, or the test doubles solutions | do-nothing")] = None,
    model: Annotated[str | None, typer.Option(metavar="ID|DIR", help="hub id or local snapshot dir (served model name for --endpoint)")]
    = None,
    endpoint: Annotated[str | None, typer.Option(envvar="OPENAI_BASE_URL", metavar="URL",
                                                 help="OpenAI-compatible API base, e.g. http://localhost:8000/v1")]
    = None,
    api_key: Annotated[str | None, typer.Option(metavar="KEY", help="API key for --endpoint (default $OPENAI_API_KEY)")] = None,
    replies: Annotated[Path | None, typer.Option(metavar="FILE", help="JSONL replies for the scripted backend (a test double)")]
    = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no live progress display")] = False,
    no_sandbox: Annotated[bool, typer.Option(
        "--no-sandbox", help="run workers directly on this machine instead of in a bubblewrap sandbox: task "
                             "files' commands then act on it (only for task files you trust)")] = False,
    worker_memory: Annotated[int, typer.Option("--worker-memory", min=256, metavar="MB",
                                               help="a worker's memory, tmpfs included: the kernel's limit "
                                                    "(cgroups), else polled; its task is then an error")] = 16384,
    worker_disk: Annotated[int, typer.Option("--worker-disk", min=64, metavar="MB",
                                             help="what one worker may write to this machine's disk (its home "
                                                  "and task folders), polled; its task is then an error")] = 8192,
    worker_pids: Annotated[int, typer.Option("--worker-pids", min=64, metavar="N",
                                             help="processes and threads one worker may have (cgroups)")] = 2048,
    worker_cpus: Annotated[float | None, typer.Option(
        "--worker-cpus", min=0.01, metavar="CORES",
        help="CPU time one worker may use, in cores (cgroups; default: cores / workers, at least 1)")] = None,
    vm: Annotated[list[str] | None, typer.Option(
        "--vm", metavar="URL", help="OSWorld on its own machinery: a running OSWorld VM's server "
        "(http://HOST:5000), one worker per --vm (repeatable); setup and scoring by desktop-env")] = None,
    provider: Annotated[str | None, typer.Option(
        metavar="NAME", help="OSWorld on its own machinery: desktop-env starts --workers VMs with this provider "
             "(docker, vmware, virtualbox, aws, ...)")] = None,
    provider_args: Annotated[str, typer.Option(
        metavar="ARGS", help="options for the provider's DesktopEnv, e.g. '--path-to-vm VM.vmx --headless --region R'")] = "",
    vm_chromium_port: Annotated[int, typer.Option(metavar="PORT", help="the --vm VMs' Chrome debugging relay port")] = 9222,
) -> None:
    """Run OSWorld-format tasks through the agent and score them."""
    from kimi_agent.errors import AgentError
    from kimi_agent.options import check_folder
    from kimi_agent.tasks.runner import make_out_dir, run_tasks

    sources: list[Path] = list(paths or [])
    if test_meta is None and domain:
        raise typer.BadParameter("--domain needs --test-meta", param_hint="--domain")
    if not sources and test_meta is None:
        raise typer.BadParameter("give task files or folders, or --test-meta FILE")
    try:  # every input is checked here, before any worker starts or --out is written
        backend, options = _backend_choice(backend, model=model, endpoint=endpoint, api_key=api_key,
                                           replies=replies, workers=workers)
        tasks = _load(sources, test_meta, domain, allow_network=allow_network, on_vm=bool(vm or provider))
        if vm and provider:
            raise ConfigError("give --vm URL(s) or --provider NAME, not both")
        settings = _settings(workers=workers, max_steps=max_steps, out_dir=out, resume=resume,
                             task_timeout_s=task_timeout, start_timeout_s=start_timeout, allow_network=allow_network,
                             confirm=confirm, max_seconds=max_seconds, temperature=temperature, thinking=thinking,
                             history_images=history, history_policy=history_policy, sandbox=not no_sandbox,
                             worker_memory_mb=worker_memory, worker_disk_mb=worker_disk, worker_pids=worker_pids, worker_cpus=worker_cpus)
        check_folder(out, "--out")
        if vm or provider:  # OSWorld's own machinery runs in its bridge environment: it must be there
            from kimi_agent.tasks.osworld_bridge import bridge_python

            bridge_python()
        choice = BackendChoice(str(backend), options)
        if choice.loads_a_model:  # a missing or broken model fails here, before --out is touched
            choice.load()
        make_out_dir(out)
    except AgentError as e:  # the one place a bad input becomes `error: ...` and exit 2
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    # ---- OSWorld VMs (--vm/--provider): tasks/vm_runner.py; the local runner otherwise ----------
    if vm or provider:
        import shlex

        from kimi_agent.tasks.osworld_bridge import BridgeTarget
        from kimi_agent.tasks.vm_runner import run_vm_tasks

        targets = ([BridgeTarget(vm=url, chromium_port=vm_chromium_port) for url in vm] if vm else
                   [BridgeTarget(provider=provider, provider_args=tuple(shlex.split(provider_args)))] * workers)
        summary = run_vm_tasks(tasks, choice, settings, targets,
                               progress=not no_progress)
    else:
        summary = run_tasks(tasks, choice, settings, progress=not no_progress)
    # ----------------------------------------------------------------------------------------------
    _print_summary(summary, out)
    if summary.interrupted:
        unfinished = len(summary.unfinished)
        typer.echo(f"interrupted: the results above are partial ({_count(unfinished, 'task')} not finished, not "
                   f"scored); finish the run with: {_resume_command()}", err=True)
        raise typer.Exit(130)
    if summary.errored:
        typer.echo(f"{_count(len(summary.errored), 'task')} errored (not scored); rerun them with: {_resume_command()}",
                   err=True)
        raise typer.Exit(1)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _resume_command() -> str:
    """This command line again, with --resume (what finishes an interrupted run or reruns its errors)."""
    import shlex

    args = sys.argv[1:]
    return shlex.join(["kimi-agent", *args, *([] if "--resume" in args else ["--resume"])])


#: `run --backend`: the model backends (kimi_agent.options.BackendName) and the two test doubles.
RUN_BACKENDS = ("native", "openai", "transformers", "scripted", "solutions", "do-nothing")
#: RunSettings/BackendOptions fields whose flag is not `--<field>`.
_FLAGS = {"out_dir": "--out", "task_timeout_s": "--task-timeout", "start_timeout_s": "--start-timeout",
          "history_images": "--history", "worker_memory_mb": "--worker-memory", "worker_disk_mb": "--worker-disk", "slots": "--workers"}


def _backend_choice(backend: str | None, *, model: str | None, endpoint: str | None, api_key: str | None,
                    replies: Path | None, workers: int) -> tuple[str, dict[str, Any]]:
    """(backend name, BackendOptions fields) for `BackendChoice`; raises ConfigError (or
    ModelUnavailableError: an endpoint where nothing answers) for a backend that cannot run."""
    from kimi_agent.options import BackendOptions, check_endpoint

    if backend is not None and backend not in RUN_BACKENDS:
        names = ", ".join(repr(n) for n in RUN_BACKENDS[:-1]) + f" or {RUN_BACKENDS[-1]!r}"
        raise ConfigError(f"--backend must be {names}, not {backend!r}.")
    options: dict[str, Any] = {"backend": None if backend in ("solutions", "do-nothing") else backend,
                               "endpoint": endpoint, "api_key": api_key,
                               "replies": None if replies is None else str(replies)}
    if model is not None:
        options["model"] = model
    options["slots"] = workers  # a native model decodes the workers' requests together (one copy for all)
    if backend in ("solutions", "do-nothing"):
        return backend, options
    opts = _validated(BackendOptions, options)
    if opts.resolved() == "scripted":
        from kimi_agent.model_runtime.backends.scripted import load_script

        if opts.replies is None:
            raise ConfigError("--backend scripted needs --replies FILE (a JSONL file of replies).")
        load_script(opts.replies)  # a missing or malformed file fails here, not in every task
    if opts.resolved() == "openai" and opts.endpoint:
        # a server that is down fails before any worker starts; without --model, its only model is used
        options["model"] = check_endpoint(opts.endpoint, model=opts.model, api_key=opts.key(),
                                          adopt="model" not in opts.model_fields_set)
    return opts.resolved(), options


def _validated(model: Any, data: dict[str, Any]) -> Any:
    """`model.model_validate(data)`, a ValidationError becoming a ConfigError naming the flag."""
    from pydantic import ValidationError

    from kimi_agent.options import option_error

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(option_error(e, _FLAGS)) from None


def _settings(**fields: Any) -> RunSettings:
    from kimi_agent.tasks.runner import RunSettings

    settings: RunSettings = _validated(RunSettings, fields)
    return settings


def _load(sources: list[Path], test_meta: Path | None, domain: list[str] | None, *, allow_network: bool,
          on_vm: bool) -> TaskSet:
    """The tasks of the command line's paths and --test-meta; raises ConfigError for a path that
    does not exist, and when no task can run (each skipped one is listed on stderr first)."""
    from kimi_agent.tasks.loader import load_tasks

    for p in sources:
        if not p.exists():
            raise ConfigError(f"{p}: no such task file or folder")
    if test_meta is not None:
        from kimi_agent.tasks.meta import paths_from_meta

        try:
            sources = sources + paths_from_meta(test_meta, domain)
        except ConfigError as e:
            raise ConfigError(f"--test-meta {e}") from None
    tasks = load_tasks(sources, allow_network=allow_network)
    if len(tasks) == 0:
        raise ConfigError(f"no task files (*.json) found in {', '.join(map(str, sources))}")
    skipped = [*([] if on_vm else tasks.unsupported), *tasks.invalid]  # a VM runs what this machine cannot
    for t in skipped:
        typer.echo(f"skipping {t.describe()}", err=True)
    if len(skipped) == len(tasks):
        counts = ", ".join(f"{n} {what}" for what, n in (("invalid", len(tasks.invalid)),
                                                          ("unsupported", len(skipped) - len(tasks.invalid))) if n)
        raise ConfigError(f"no task can run: {len(tasks)} task file(s), {counts} (listed above); nothing was run")
    return tasks


def _print_summary(summary: RunSummary, out: Path) -> None:
    """The results (a table on a terminal, else plain whole lines), the rate per domain and overall."""
    if sys.stdout.isatty():
        from rich.console import Console

        from kimi_agent.tasks.report import results_table

        Console(soft_wrap=True).print(results_table(summary))
    else:
        from kimi_agent.tasks.report import results_lines

        for line in results_lines(summary):
            typer.echo(line)
    for name, d in summary.domain_rates().items():
        unfinished = sum(1 for r in summary.unfinished if r.domain == name)
        typer.echo(f"  {name or '-'}: {d['rate']:.0%} over {d['scored']:g} scored ({d['errored']:g} errored"
                   + (f", {unfinished} interrupted)" if unfinished else ")"))
    typer.echo(f"{summary.success_rate:.0%} success over {len(summary.scored)} scored tasks; "
               f"results in {out / 'results.json'}, report {out / 'index.html'}")
    if others := other_task_folders(summary):
        typer.echo(f"{out} also holds {_count(len(others), 'task folder')} of another run, not in these results "
                   f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})", err=True)


def other_task_folders(summary: RunSummary) -> list[str]:
    """Names of the task folders in the run's --out (a result.json inside) that its results do not list:
    an earlier run's, into the same --out with other task files."""
    listed = {r.task_id for r in summary.results}
    try:
        folders = sorted(d.name for d in summary.out_dir.iterdir() if d.is_dir() and not d.is_symlink()
                         and not d.name.startswith(".") and (d / "result.json").is_file())
    except OSError:
        return []
    return [name for name in folders if name not in listed]


def register(app: typer.Typer) -> None:
    """Add the `run` command to the main CLI (idempotent)."""
    if not any(c.name == "run" for c in app.registered_commands):
        app.command("run")(run_command)


def main() -> None:
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(app)

    @app.callback()
    def _root() -> None:
        """kimi-agent task runner."""

    app()


if __name__ == "__main__":
    main()
