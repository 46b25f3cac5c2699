"""The OSWorld bridge process: OUR code, run by the bridge environment's Python (`.venv-osworld`),
where OSWorld's `desktop-env` package is installed. It imports only the standard library and
`desktop_env`, never kimi_agent (whose dependencies that environment does not have).

Protocol: one JSON object per line. The first line this process writes is a hello
({"ok": true, "hello": {"desktop_env": VERSION, "mode": "vm"|"provider", "optional_missing": [...]}});
then for each request line one reply line:
  {"op": "reset", "task": TASK}           -> {"ok": true, "server": URL, "screen": [w, h], "chromium_port": N}
  {"op": "evaluate", "last_action": "DONE"|"FAIL"|null}
                                          -> {"ok": true, "score": float, "details": {...}}
  {"op": "check", "task": TASK}           -> {"ok": true, "missing": ["metric 'x'", ...]}
  {"op": "close"}                         -> {"ok": true} and the process exits
Any failure is {"ok": false, "error": KIND, "message": TEXT}; KIND is "bad_request",
"setup_failed", "evaluation_failed", "unreachable" (the VM did not answer) or "internal".
The protocol's stdout is a private copy of fd 1; fd 1 itself goes to stderr, so anything OSWorld's
code prints never corrupts the protocol.

Modes: `--vm http://HOST:5000` (a VM the user runs: no snapshot revert; OSWorld's `DesktopEnv.reset`
and `.evaluate` run against it with the provider step skipped) or `--provider NAME` (OSWorld's own
`DesktopEnv(provider_name=NAME, ...)`, which starts, reverts and stops the VM).

Heavy optional packages left out of the bridge environment (`OPTIONAL`) are replaced by placeholder
modules, so the metric modules that import them at the top still load; calling into one raises
`OptionalMissing`, and `--inventory` names the functions that use them.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import os
import sys
import textwrap
import traceback
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

OPTIONAL = ("easyocr", "librosa")  # torch / numba: too heavy for the bridge environment
PROTOCOL = 1


class OptionalMissing(ImportError):
    """A metric needs a package the bridge environment leaves out."""


class _Placeholder(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise OptionalMissing(f"{self.__name__} is not installed in the OSWorld bridge environment "
                              f"(left out as too heavy); install it there to use this metric")


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


_SETUP_RESULTS: list[bool] = []


def record_setup_results() -> None:
    """OSWorld's `SetupController.setup` returns False (no exception) when the VM never answered;
    `DesktopEnv.reset` only logs that. Record each result so a reset can report it."""
    from desktop_env.controllers.setup import SetupController

    original = SetupController.setup

    def setup(self: Any, config: Any, use_proxy: bool = False) -> bool:
        ok = bool(original(self, config, use_proxy))
        _SETUP_RESULTS.append(ok)
        return ok

    setattr(SetupController, "setup", setup)  # noqa: B010  (typed with desktop-env or without)


def install_placeholders() -> list[str]:
    """Placeholders for the OPTIONAL packages that are really absent; returns their names."""
    missing = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.append(_PlaceholderFinder(missing))
    return missing


# ---------------------------------------------------------------- availability

def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _uses(func: Any, modules: list[str]) -> list[str]:
    """The OPTIONAL modules a function's source names (an AST walk of its body)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return []
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return [m for m in modules if m in names]


def task_missing(task: dict[str, Any], optional_missing: list[str]) -> list[str]:
    """Every setup step, getter and metric of a task that this environment cannot run, by name."""
    from desktop_env.controllers.setup import SetupController
    from desktop_env.evaluators import getters, metrics

    missing: list[str] = []
    evaluator = task.get("evaluator") or {}
    if not isinstance(evaluator, dict):
        return [f"evaluator (a JSON {type(evaluator).__name__}, not an object)"]
    steps = [*_as_list(task.get("config")), *_as_list(evaluator.get("postconfig"))]
    for step in steps:
        kind = step.get("type") if isinstance(step, dict) else None
        if not kind or not hasattr(SetupController, f"_{kind}_setup"):
            missing.append(f"setup step {kind!r}")
    for func in _as_list(evaluator.get("func")):
        if func == "infeasible":
            continue
        metric = getattr(metrics, str(func), None)
        if metric is None:
            missing.append(f"metric {func!r}")
        else:
            missing += [f"metric {func!r} needs {m}" for m in _uses(metric, optional_missing)]
    for key in ("result", "expected"):
        for getter_config in _as_list(evaluator.get(key)):
            if not getter_config:
                continue
            kind = getter_config.get("type") if isinstance(getter_config, dict) else None
            getter = getattr(getters, f"get_{kind}", None)
            if getter is None:
                missing.append(f"getter {kind!r}")
            else:
                missing += [f"getter {kind!r} needs {m}" for m in _uses(getter, optional_missing)]
    return sorted(set(missing))


def inventory(paths: list[str], optional_missing: list[str]) -> dict[str, Any]:
    """{files, loaded, complete, tasks: [{path, id, missing}], problems: {name: count}}. The runner
    (osworld_bridge.py `inventory`) passes only the files its own loader accepts, and merges."""
    files = sorted(p for root in paths for p in (Path(root).rglob("*.json") if Path(root).is_dir()
                                                 else [Path(root)]))
    rows: list[dict[str, Any]] = []
    loaded, complete, problems = 0, 0, dict[str, int]()
    for path in files:
        try:
            task = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(task, dict) or "id" not in task or "evaluator" not in task:
                raise ValueError("not an OSWorld task (no id or evaluator)")
        except (OSError, ValueError) as e:
            rows.append({"path": str(path), "error": str(e)})
            continue
        loaded += 1
        missing = task_missing(task, optional_missing)
        complete += not missing
        for name in missing:
            problems[name] = problems.get(name, 0) + 1
        rows.append({"path": str(path), "id": task["id"], "missing": missing})
    return {"files": len(files), "loaded": loaded, "complete": complete, "problems": problems, "tasks": rows}


# ---------------------------------------------------------------- the environment

class Bridge:
    """One OSWorld environment: a DesktopEnv built by a provider, or one around a running VM."""

    def __init__(self, args: argparse.Namespace, optional_missing: list[str]) -> None:
        self.args, self.optional_missing = args, optional_missing
        self.cache_dir = args.cache_dir
        self.env: Any = None

    def open(self) -> None:
        from desktop_env.desktop_env import DesktopEnv

        if self.args.vm:
            self.env = self._around_vm(DesktopEnv)
        else:
            self.env = DesktopEnv(provider_name=self.args.provider, region=self.args.region,
                                  path_to_vm=self.args.path_to_vm, snapshot_name=self.args.snapshot,
                                  cache_dir=self.cache_dir, screen_size=tuple(self.args.screen),
                                  headless=self.args.headless, os_type=self.args.os_type,
                                  require_a11y_tree=False, client_password=self.args.client_password)

    def _around_vm(self, desktop_env_class: Any) -> Any:
        """A DesktopEnv whose provider step is skipped: OSWorld's own reset (setup) and evaluate
        run against a VM the user already runs (which this bridge never reverts)."""
        from desktop_env.controllers.python import PythonController
        from desktop_env.controllers.setup import SetupController

        url = urlparse(self.args.vm)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"--vm {self.args.vm!r} is not an http://HOST:PORT URL")
        env = desktop_env_class.__new__(desktop_env_class)
        width, height = self.args.screen
        env.provider_name, env.region, env.enable_proxy, env.current_use_proxy = "vm", None, False, False
        env.client_password, env.screen_width, env.screen_height = self.args.client_password, width, height
        env.vm_ip, env.server_port = url.hostname, url.port or 5000
        env.chromium_port, env.vnc_port, env.vlc_port = self.args.chromium_port, 8006, self.args.vlc_port
        env.cache_dir_base, env.os_type, env.snapshot_name, env.path_to_vm = self.cache_dir, "Ubuntu", None, None
        env.headless, env.require_a11y_tree, env.require_terminal = True, False, False
        env.action_space, env.instruction, env.is_environment_used = "pyautogui", None, False
        env._traj_no, env._step_no, env.action_history = -1, 0, []
        env.controller = PythonController(vm_ip=env.vm_ip, server_port=env.server_port)
        env.setup_controller = SetupController(
            vm_ip=env.vm_ip, server_port=env.server_port, chromium_port=env.chromium_port,
            vlc_port=env.vlc_port, cache_dir=self.cache_dir, client_password=env.client_password,
            screen_width=width, screen_height=height)
        return env

    def reset(self, task: dict[str, Any]) -> dict[str, Any]:
        if self.env is None:
            self.open()
        missing = task_missing(task, self.optional_missing)
        if missing:
            return _error("bad_request", "this task cannot run through the bridge: " + "; ".join(missing))
        if self.args.vm:
            self.env.is_environment_used = False  # a user's VM: never reverted by us
            self._check_reachable()
        _SETUP_RESULTS.clear()
        self.env.reset(task_config=task)
        if False in _SETUP_RESULTS:
            return _error("setup_failed", "OSWorld's setup controller could not reach the VM server "
                                          f"{self.env.setup_controller.http_server}")
        return {"ok": True, "server": f"http://{self.env.vm_ip}:{self.env.server_port}",
                "screen": [self.env.screen_width, self.env.screen_height],
                "chromium_port": self.env.chromium_port}

    def _check_reachable(self) -> None:
        """OSWorld's controller would retry an unreachable server for minutes: ask once, bounded."""
        import urllib.request

        with urllib.request.urlopen(f"{self.args.vm.rstrip('/')}/platform", timeout=10) as response:
            response.read()

    def evaluate(self, last_action: str | None) -> dict[str, Any]:
        if self.env is None or getattr(self.env, "evaluator", None) is None:
            return _error("bad_request", "evaluate before reset")
        self.env.action_history = [last_action] if last_action else []
        score = self.env.evaluate()
        evaluator = self.env.evaluator
        return {"ok": True, "score": float(score),
                "details": {"func": evaluator.get("func"), "conj": evaluator.get("conj", "and"),
                            "result": evaluator.get("result"), "expected": evaluator.get("expected"),
                            "last_action": last_action}}

    def close(self) -> None:
        if self.env is not None and not self.args.vm:
            self.env.close()
        self.env = None


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": kind, "message": message[-4000:]}


UNREACHABLE = ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "TimeoutError")


def _unreachable(exc: BaseException | None) -> bool:
    """A transport failure (requests' or the standard library's), here or as a cause."""
    while exc is not None:
        if any(c.__name__ in UNREACHABLE for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def serve(bridge: Bridge, inp: Any, out: Any, hello: dict[str, Any]) -> None:
    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, default=str) + "\n")
        out.flush()

    send({"ok": True, "hello": hello})
    for line in inp:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
        except ValueError as e:
            send(_error("bad_request", f"not JSON: {e}"))
            continue
        try:
            if op == "reset" and isinstance(request.get("task"), dict):
                send(bridge.reset(request["task"]))
            elif op == "evaluate":
                send(bridge.evaluate(request.get("last_action")))
            elif op == "check" and isinstance(request.get("task"), dict):
                send({"ok": True, "missing": task_missing(request["task"], bridge.optional_missing)})
            elif op == "close":
                bridge.close()
                send({"ok": True})
                return
            else:
                send(_error("bad_request", f"unknown request {str(line)[:200]!r}"))
        except Exception as e:  # the one place OSWorld's errors become protocol errors
            kind = ("unreachable" if _unreachable(e) else "setup_failed" if op == "reset" else
                    "evaluation_failed" if op == "evaluate" else "internal")
            logging.getLogger("osworld_bridge").error("%s failed:\n%s", op, traceback.format_exc())
            send(_error(kind, f"{type(e).__name__}: {e}"))
    bridge.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="osworld_bridge_process", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--vm", help="a running VM's server, http://HOST:5000")
    where.add_argument("--provider", help="docker | vmware | virtualbox | aws | azure | gcp | aliyun | volcengine")
    where.add_argument("--inventory", nargs="+", metavar="PATH", help="task files/folders: print availability")
    p.add_argument("--region")
    p.add_argument("--path-to-vm")
    p.add_argument("--snapshot", default="init_state")
    p.add_argument("--os-type", default="Ubuntu")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--screen", type=int, nargs=2, default=[1920, 1080], metavar=("W", "H"))
    p.add_argument("--client-password", default="password")
    p.add_argument("--chromium-port", type=int, default=9222)
    p.add_argument("--vlc-port", type=int, default=8080)
    p.add_argument("--cache-dir", default="cache")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever OSWorld's code prints goes to stderr
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    optional_missing = install_placeholders()

    if args.inventory:
        protocol_out.write(json.dumps(inventory(args.inventory, optional_missing)) + "\n")
        protocol_out.flush()
        return 0
    from importlib.metadata import version

    record_setup_results()

    hello = {"protocol": PROTOCOL, "desktop_env": version("desktop-env"), "mode": "vm" if args.vm else "provider",
             "optional_missing": optional_missing}
    serve(Bridge(args, optional_missing), sys.stdin, protocol_out, hello)
    return 0


if __name__ == "__main__":
    sys.exit(main())
