"""Our side of the OSWorld bridge: start `osworld_bridge_process.py` with the bridge
environment's Python and talk to it in typed JSON lines (see that file for the protocol).

`Bridge.start(BridgeTarget(vm=URL) | BridgeTarget(provider=NAME, ...))` -> `reset(task)` ->
`ResetReply(server, screen, chromium_port)` -> (an episode through `OSWorldVMEnv(server)`) ->
`evaluate(last_action)` -> `EvaluateReply(score, details)` -> `close()`. Every wait is bounded;
every failure is a `BridgeError` (a `TaskError`), `BridgeDeadError` when the process exited or did
not answer in time, `VMUnreachableError` when the VM did not answer the bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kimi_agent.errors import TaskError, VMUnreachableError

BRIDGE_SCRIPT = Path(__file__).with_name("osworld_bridge_process.py")
VENV_ENV = "KIMI_AGENT_OSWORLD_VENV"
HELLO_TIMEOUT_S = 120.0  # importing every evaluator module takes ~10 s on a busy 2-core machine
STDERR_TAIL = 60


def default_venv() -> Path:
    """`$KIMI_AGENT_OSWORLD_VENV`, else `.venv-osworld` in the current folder or the checkout."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV])
    here = Path.cwd() / ".venv-osworld"
    checkout = Path(__file__).resolve().parent.parent / ".venv-osworld"
    return here if here.exists() or not checkout.exists() else checkout


def bridge_python(venv: Path | None = None) -> Path:
    """The bridge environment's interpreter; TaskError (with the fix) when it is not set up."""
    venv = venv or default_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        raise TaskError(f"no OSWorld bridge environment at {venv}: run `kimi-agent osworld setup` "
                        f"(or `bash scripts/setup.sh --osworld`), or set ${VENV_ENV}")
    return python


class BridgeError(TaskError):
    """The bridge refused or failed a request; `kind` is the protocol's error kind."""

    def __init__(self, message: str, *, kind: str = "internal") -> None:
        super().__init__(message)
        self.kind = kind


class BridgeDeadError(BridgeError):
    """The bridge process exited, or did not answer in time (it is then killed)."""


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ok: Literal[True]


R = TypeVar("R", bound=_Reply)


class Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")
    protocol: int
    desktop_env: str
    mode: Literal["vm", "provider"]
    optional_missing: list[str] = []


class ResetReply(_Reply):
    server: str
    screen: tuple[int, int]
    chromium_port: int


class EvaluateReply(_Reply):
    score: float
    details: dict[str, Any] = {}


class CheckReply(_Reply):
    missing: list[str]


@dataclass(frozen=True)
class BridgeTarget:
    """Where the bridge finds its VM: `vm` (a running server's URL) or `provider` (OSWorld's
    DesktopEnv starts one; `provider_args` are its options, e.g. ["--path-to-vm", P, "--headless"])."""

    vm: str | None = None
    provider: str | None = None
    provider_args: tuple[str, ...] = ()
    chromium_port: int = 9222
    screen: tuple[int, int] = (1920, 1080)
    client_password: str = "password"

    def __post_init__(self) -> None:
        if (self.vm is None) == (self.provider is None):
            raise ValueError("a bridge target is exactly one of vm=URL or provider=NAME")

    def argv(self, cache_dir: Path) -> list[str]:
        where = ["--vm", self.vm] if self.vm else ["--provider", str(self.provider), *self.provider_args]
        return [*where, "--chromium-port", str(self.chromium_port), "--screen", *map(str, self.screen),
                "--client-password", self.client_password, "--cache-dir", str(cache_dir)]

    @property
    def label(self) -> str:
        return self.vm or f"provider {self.provider}"


@dataclass
class Bridge:
    """One bridge process (one VM). Use `Bridge.start(...)`; a context manager closes it."""

    proc: subprocess.Popen[str]
    target: BridgeTarget
    hello: Hello
    _lines: queue.Queue[str | None]
    _stderr: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, target: BridgeTarget, *, cache_dir: Path, venv: Path | None = None,
              script: Path = BRIDGE_SCRIPT, hello_timeout_s: float = HELLO_TIMEOUT_S) -> Bridge:
        python = bridge_python(venv)
        cache_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        proc = subprocess.Popen([str(python), str(script), *target.argv(cache_dir)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                env=env, cwd=cache_dir, start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        stderr: list[str] = []
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        threading.Thread(target=_tail, args=(proc.stderr, stderr), daemon=True).start()
        bridge = cls(proc, target, Hello(protocol=0, desktop_env="?", mode="vm"), lines, stderr)
        raw = bridge._read(hello_timeout_s, "start")
        try:
            bridge.hello = Hello.model_validate(raw.get("hello"))
        except ValidationError as e:
            bridge.kill()
            raise BridgeError(f"the OSWorld bridge did not say hello: {raw!r:.300}") from e
        return bridge

    # -- requests ------------------------------------------------------------------------------

    def reset(self, task: dict[str, Any], *, timeout_s: float = 900.0) -> ResetReply:
        """OSWorld's reset for `task`: snapshot revert (providers) and its setup steps."""
        return self._call({"op": "reset", "task": task}, ResetReply, timeout_s)

    def evaluate(self, last_action: Literal["DONE", "FAIL"] | None, *, timeout_s: float = 600.0) -> EvaluateReply:
        """OSWorld's evaluate: postconfig, getters, metrics (infeasible tasks score the last action)."""
        return self._call({"op": "evaluate", "last_action": last_action}, EvaluateReply, timeout_s)

    def check(self, task: dict[str, Any], *, timeout_s: float = 60.0) -> list[str]:
        """The task's setup steps, getters and metrics that this bridge cannot run ([] = all there)."""
        return self._call({"op": "check", "task": task}, CheckReply, timeout_s).missing

    def close(self, *, timeout_s: float = 60.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BridgeError):  # it is killed below either way
                self._call({"op": "close"}, _Reply, timeout_s)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stderr_tail(self) -> str:
        return "".join(self._stderr[-STDERR_TAIL:])

    # -- internals -----------------------------------------------------------------------------

    def _call(self, request: dict[str, Any], model: type[R], timeout_s: float) -> R:
        if self.proc.poll() is not None or self.proc.stdin is None:
            raise BridgeDeadError(f"the OSWorld bridge for {self.target.label} has exited "
                                  f"(code {self.proc.returncode}):\n{self.stderr_tail}", kind="dead")
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise BridgeDeadError(f"the OSWorld bridge for {self.target.label} is gone: {e}", kind="dead") from e
        raw = self._read(timeout_s, str(request["op"]))
        if raw.get("ok") is not True:
            kind, message = str(raw.get("error") or "internal"), str(raw.get("message") or raw)
            text = f"OSWorld bridge {request['op']} on {self.target.label}: {message}"
            if kind == "unreachable":
                raise VMUnreachableError(text, endpoint=f"bridge:{request['op']}")
            raise BridgeError(text, kind=kind)
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            raise BridgeError(f"OSWorld bridge {request['op']}: a malformed reply {raw!r:.300}: {e}") from e

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise BridgeDeadError(f"the OSWorld bridge for {self.target.label} did not answer {what} within "
                                  f"{timeout_s:g} s (killed):\n{self.stderr_tail}", kind="timeout") from None
        if line is None:
            code = self.proc.wait(10)
            raise BridgeDeadError(f"the OSWorld bridge for {self.target.label} exited (code {code}) during "
                                  f"{what}:\n{self.stderr_tail}", kind="dead")
        try:
            data = json.loads(line)
        except ValueError as e:
            raise BridgeError(f"the OSWorld bridge wrote a line that is not JSON: {line[:300]!r}") from e
        if not isinstance(data, dict):
            raise BridgeError(f"the OSWorld bridge wrote {line[:300]!r}, not a JSON object")
        return data


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _tail(stream: Any, out: list[str]) -> None:
    for line in stream:
        out.append(line)
        if len(out) > 4 * STDERR_TAIL:
            del out[:-STDERR_TAIL]


def inventory(paths: Sequence[Path], *, venv: Path | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """What `kimi-agent run` on VMs would take from task files/folders, and what the bridge lacks.

    `vm_tasks.vm_problem` decides which files load, as the VM runner does (a readable UTF-8 JSON object
    with an instruction and one safe, unused id; OSWorld's code reads the raw file, so our stricter
    schema does not decide); only those go to the bridge process (`--inventory`), which names each
    setup step, getter and metric its desktop-env cannot run. Returns {files, loaded, complete,
    problems: {name: count}, tasks: [{path, error} | {path, id, missing}]} in load order.
    """
    from kimi_agent.tasks.loader import load_tasks
    from kimi_agent.tasks.vm_tasks import read_raw_task, vm_problem

    python = bridge_python(venv)
    tasks = load_tasks(paths)
    seen: set[str] = set()
    refused: dict[str, str] = {}
    for t in tasks:
        raw = read_raw_task(t)
        problem = vm_problem(t, raw, seen)
        if problem is not None or raw is None:
            refused[str(t.path)] = problem or "invalid"
        else:
            seen.add(raw["id"])
    loadable = [str(t.path) for t in tasks if str(t.path) not in refused]
    bridged: dict[str, dict[str, Any]] = {}
    if loadable:
        try:
            r = subprocess.run([str(python), str(BRIDGE_SCRIPT), "--inventory", *loadable],
                               capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise BridgeDeadError(f"the OSWorld bridge inventory took longer than {timeout_s:g} s") from e
        if r.returncode != 0:
            raise BridgeError(f"the OSWorld bridge inventory failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        bridged = {row["path"]: row for row in json.loads(r.stdout.strip().splitlines()[-1])["tasks"]}
    rows: list[dict[str, Any]] = []
    problems: dict[str, int] = {}
    for t in tasks:
        path = str(t.path)
        if path in refused:
            rows.append({"path": path, "error": refused[path].removeprefix(f"{path}: ")})
            continue
        row = bridged.get(path) or {"path": path, "error": "the bridge did not report this file"}
        for name in row.get("missing", []):
            problems[name] = problems.get(name, 0) + 1
        rows.append(row)
    loaded = [row for row in rows if "error" not in row]
    return {"files": len(rows), "loaded": len(loaded), "complete": sum(not row["missing"] for row in loaded),
            "problems": problems, "tasks": rows}
