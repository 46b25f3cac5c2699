"""The OSWorld bridge protocol end to end: our client starts our bridge process with a real
virtual environment's Python, where the test writes a stand-in `desktop_env` package (a test
double of OSWorld's; no VM exists here). The stand-in records what OSWorld's code would have been
asked to do, prints to stdout (which must not corrupt the protocol), imports a left-out heavy
package (easyocr) at the top of its metrics, fails a setup step on request, and has a metric that
hangs, so every error path is exercised through the real process boundary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.task_files import make_venv_with

from kimi_agent.env.chromium import free_port
from kimi_agent.errors import TaskError, VMUnreachableError
from kimi_agent.tasks.osworld_bridge import Bridge, BridgeDeadError, BridgeError, BridgeTarget, bridge_python

STAND_IN = {
    "desktop_env/__init__.py": "",
    "desktop_env/controllers/__init__.py": "",
    "desktop_env/controllers/python.py": """
        class PythonController:
            def __init__(self, vm_ip, server_port):
                self.vm_ip, self.server_port = vm_ip, server_port
    """,
    "desktop_env/controllers/setup.py": """
        import json, os
        class SetupController:
            def __init__(self, vm_ip, server_port, chromium_port, vlc_port, cache_dir, client_password,
                         screen_width, screen_height):
                self.http_server = f"http://{vm_ip}:{server_port}"
                self.chromium_port, self.cache_dir = chromium_port, cache_dir
            def reset_cache_dir(self, cache_dir):
                self.cache_dir = cache_dir
            def setup(self, config, use_proxy=False):
                for step in config:
                    getattr(self, "_" + step["type"] + "_setup")(**step["parameters"])
                return True
            def _launch_setup(self, command, shell=False):
                print("OSWorld code printing to stdout")  # must not reach the protocol
                with open(os.path.join(self.cache_dir, "steps.jsonl"), "a") as f:
                    f.write(json.dumps({"launch": command, "chromium_port": self.chromium_port}) + "\\n")
            def _fail_setup(self, why):
                raise Exception(f"Setup step failed: {why}")
            def _unreachable_setup(self):
                raise ConnectionError("Connection refused")
    """,
    "desktop_env/evaluators/__init__.py": "",
    "desktop_env/evaluators/getters/__init__.py": """
        def get_rule(env, config):
            return config["rules"]
        def get_profile_name(env, config):
            return "Thomas"
    """,
    "desktop_env/evaluators/metrics/__init__.py": """
        import time
        import easyocr
        def exact_match(result, rules):
            return float(result == rules["expected"])
        def compare_image_text(path, rule):
            return float(easyocr.Reader(["en"]).readtext(path) == rule)
        def slow_metric(result, rules):
            time.sleep(60)
            return 1.0
    """,
    "desktop_env/desktop_env.py": """
        import os
        from desktop_env.evaluators import getters, metrics
        class DesktopEnv:
            def __init__(self, provider_name="vmware", **kwargs):
                raise RuntimeError("no VM provider in this test")
            def reset(self, task_config=None, seed=None, options=None):
                self.cache_dir = os.path.join(self.cache_dir_base, task_config["id"])
                os.makedirs(self.cache_dir, exist_ok=True)
                self.setup_controller.reset_cache_dir(self.cache_dir)
                self.evaluator = task_config["evaluator"]
                self.setup_controller.setup(task_config.get("config", []))
            def evaluate(self):
                if self.evaluator["func"] == "infeasible":
                    return 1 if self.action_history[-1:] == ["FAIL"] else 0
                metric = getattr(metrics, self.evaluator["func"])
                result = getattr(getters, "get_" + self.evaluator["result"]["type"])(self, self.evaluator["result"])
                expected = getattr(getters, "get_" + self.evaluator["expected"]["type"])(self, self.evaluator["expected"])
                return metric(result, expected)
            def close(self):
                pass
    """,
    "desktop_env-1.0.2.dist-info/METADATA": "Metadata-Version: 2.1\nName: desktop-env\nVersion: 1.0.2\n",
}


def task(func: str = "exact_match", config: list[dict] | None = None, **evaluator: object) -> dict:
    return {"id": "t-1", "instruction": "rename the profile to Thomas",
            "config": config if config is not None else [
                {"type": "launch", "parameters": {"command": ["google-chrome", "--remote-debugging-port=1337"]}}],
            "evaluator": {"func": func, "result": {"type": "profile_name"},
                          "expected": {"type": "rule", "rules": {"expected": "Thomas"}}, **evaluator}}


@pytest.fixture(scope="module")
def stand_in_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv_with(tmp_path_factory.mktemp("bridge") / "venv", STAND_IN)


class _Platform(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:  # OSWorld's GET /platform: the bridge's reachability check
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"Linux")


@pytest.fixture(scope="module")
def vm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_unreachable_vm_is_reported_at_once(stand_in_venv: Path, tmp_path: Path) -> None:
    with Bridge.start(BridgeTarget(vm=f"http://127.0.0.1:{free_port()}"), cache_dir=tmp_path,
                      venv=stand_in_venv) as b:
        assert b.hello.desktop_env == "1.0.2" and b.hello.mode == "vm"
        assert b.hello.optional_missing == ["easyocr", "librosa"]
        with pytest.raises(VMUnreachableError, match="reset"):  # not OSWorld's minutes of retries
            b.reset(task())


def test_protocol_end_to_end(stand_in_venv: Path, tmp_path: Path, vm_url: str) -> None:
    url = vm_url
    with Bridge.start(BridgeTarget(vm=url, chromium_port=4242), cache_dir=tmp_path / "cache",
                      venv=stand_in_venv) as b:
        reply = b.reset(task())
        assert reply.server == url and reply.screen == (1920, 1080) and reply.chromium_port == 4242
        steps = (tmp_path / "cache" / "t-1" / "steps.jsonl").read_text().splitlines()
        assert json.loads(steps[0]) == {"launch": ["google-chrome", "--remote-debugging-port=1337"],
                                        "chromium_port": 4242}
        ev = b.evaluate("DONE")
        assert ev.score == 1.0 and ev.details["func"] == "exact_match" and ev.details["last_action"] == "DONE"
        assert b.check(task("compare_image_text")) == ["metric 'compare_image_text' needs easyocr"]
        assert b.check(task("no_such_metric", config=[{"type": "nope", "parameters": {}}])) == [
            "metric 'no_such_metric'", "setup step 'nope'"]
        with pytest.raises(BridgeError, match=r"cannot run through the bridge.*needs easyocr"):
            b.reset(task("compare_image_text"))
        with pytest.raises(BridgeError, match=r"Setup step failed: disk full") as info:
            b.reset(task(config=[{"type": "fail", "parameters": {"why": "disk full"}}]))
        assert info.value.kind == "setup_failed"
        with pytest.raises(VMUnreachableError, match="Connection refused"):
            b.reset(task(config=[{"type": "unreachable", "parameters": {}}]))
        b.reset(task("infeasible"))
        assert b.evaluate("FAIL").score == 1.0 and b.evaluate("DONE").score == 0.0
        b.reset(task("slow_metric"))
        with pytest.raises(BridgeDeadError, match="did not answer evaluate within 2 s") as dead:
            b.evaluate("DONE", timeout_s=2.0)
        assert dead.value.kind == "timeout" and b.proc.poll() is not None
        with pytest.raises(BridgeDeadError, match="has exited"):
            b.evaluate("DONE")


def test_a_missing_bridge_env_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="kimi-agent osworld setup"):
        bridge_python(tmp_path / "nothing-here")


def test_a_bridge_that_cannot_start_is_typed(stand_in_venv: Path, tmp_path: Path) -> None:
    with pytest.raises(BridgeDeadError, match="exited"):
        Bridge.start(BridgeTarget(vm="http://127.0.0.1:9"), cache_dir=tmp_path, venv=stand_in_venv,
                     script=tmp_path / "missing_script.py")


def test_runner_retries_a_task_once_when_the_vm_stops_answering(stand_in_venv: Path, tmp_path: Path,
                                                                vm_url: str) -> None:
    from kimi_agent.tasks.loader import load_tasks
    from kimi_agent.tasks.runner import RunSettings, read_result
    from kimi_agent.tasks.suites.solutions import do_nothing_backend
    from kimi_agent.tasks.vm_runner import run_vm_tasks

    folder = tmp_path / "tasks" / "chrome"
    folder.mkdir(parents=True)
    dead = {**task(config=[{"type": "unreachable", "parameters": {}}]), "id": "dead-vm"}
    unsupported = {**task("compare_image_text"), "id": "needs-ocr"}
    noted = {**task(), "id": "noted", "_config_note": "our schema rejects this field; OSWorld ignores it"}
    for t in (dead, unsupported, noted):
        (folder / f"{t['id']}.json").write_text(json.dumps(t))
    (folder / "broken.json").write_text("{not json")
    starts: list[str] = []

    def start(target: BridgeTarget, cache: Path) -> Bridge:
        starts.append(cache.name)
        return Bridge.start(target, cache_dir=cache, venv=stand_in_venv)

    out = tmp_path / "out"
    summary = run_vm_tasks(load_tasks([folder]), do_nothing_backend, RunSettings(out_dir=out),
                           [BridgeTarget(vm=vm_url)], start_bridge=start)
    by_id = {r.task_id: r for r in summary.results}
    assert by_id["dead-vm"].status == "error" and "stopped answering" in by_id["dead-vm"].reason
    assert by_id["dead-vm"].host == {"attempt": 2}  # retried once, on a fresh bridge
    assert starts == ["check", "0", "0", "0"]  # dead-vm twice, then noted (its VM failed to start, a fresh bridge)
    assert by_id["needs-ocr"].status == "unsupported" and "needs easyocr" in by_id["needs-ocr"].reason
    assert by_id["broken"].status == "invalid"
    assert by_id["noted"].status == "error" and "OSWorld server" in by_id["noted"].reason  # ran: reset, then
    # OSWorldVMEnv found this test's VM URL answering only /platform
    assert read_result(out / "dead-vm").status == "error"  # type: ignore[union-attr]
    assert (out / "dead-vm" / "result.txt").read_text() == "error\n"
    assert json.loads((out / "results.json").read_text())["errored"] == 2


def test_a_vm_that_dies_during_the_episode_is_retried_once(stand_in_venv: Path, tmp_path: Path, xvfb: object) -> None:
    """The VM's server answers the bridge's reset and the first screenshot, then dies while the
    model thinks: the episode's error is traced to the VM (one probe gets no answer), so the task
    is retried once on a fresh bridge, where the reset finds the VM gone."""
    from support.osworld_server import StandInServer

    from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
    from kimi_agent.tasks.loader import load_tasks
    from kimi_agent.tasks.runner import RunSettings
    from kimi_agent.tasks.suites.solutions import reply
    from kimi_agent.tasks.vm_runner import run_vm_tasks

    (tmp_path / "home").mkdir()
    server = StandInServer(xvfb.display, tmp_path / "home").start()  # type: ignore[attr-defined]
    calls: list[int] = []

    def dies_while_thinking(call: object) -> str:
        calls.append(1)
        server.stop()  # the VM dies; the reply's click then finds no server
        return reply("Click the middle.", "Click the middle of the screen.", "pyautogui.click(x=0.5, y=0.5)")

    folder = tmp_path / "tasks" / "chrome"
    folder.mkdir(parents=True)
    (folder / "dies.json").write_text(json.dumps({**task(config=[]), "id": "dies"}))
    starts: list[str] = []

    def start(target: BridgeTarget, cache: Path) -> Bridge:
        starts.append(cache.name)
        return Bridge.start(target, cache_dir=cache, venv=stand_in_venv)

    out = tmp_path / "out"
    summary = run_vm_tasks(load_tasks([folder]), lambda spec, host, url: ScriptedBackend(dies_while_thinking),
                           RunSettings(out_dir=out, max_steps=3), [BridgeTarget(vm=server.url)], start_bridge=start)
    [result] = summary.results
    assert calls == [1]  # one episode ran; the retry's reset found no VM
    assert result.status == "error" and "stopped answering" in result.reason, result.reason
    assert result.host == {"attempt": 2}
    assert starts[-2:] == ["0", "0"]  # a fresh bridge for the retry


def test_a_vm_run_shows_progress_and_ctrl_c_keeps_what_finished(stand_in_venv: Path, tmp_path: Path, xvfb: Any,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """With `progress` (stderr is not a terminal here: one line per finished task, then the
    headline) and a Ctrl-C (the test double's model interrupts the main thread during the second
    task's first step, then takes 2 s to answer): the first task's score stays, the others are
    `error` "interrupted", the outputs say so, and the interrupted task's late result is dropped."""
    import _thread
    import time

    from support.osworld_server import StandInServer

    from kimi_agent.model_runtime.backends.scripted import ScriptedBackend
    from kimi_agent.tasks.loader import load_tasks
    from kimi_agent.tasks.runner import RunSettings, read_result
    from kimi_agent.tasks.suites.solutions import terminate
    from kimi_agent.tasks.vm_runner import run_vm_tasks

    folder = tmp_path / "tasks" / "chrome"
    folder.mkdir(parents=True)
    for name in ("a-first", "b-interrupted", "c-queued"):
        (folder / f"{name}.json").write_text(json.dumps({**task(config=[]), "id": name}))

    def factory(spec: Any, host: Any, url: str) -> ScriptedBackend:
        def step(call: object) -> str:
            if spec.id == "b-interrupted":
                _thread.interrupt_main()
                time.sleep(2)
            return terminate("success")
        return ScriptedBackend(step)

    (tmp_path / "home").mkdir()
    server = StandInServer(xvfb.display, tmp_path / "home").start()
    out = tmp_path / "out"
    try:
        summary = run_vm_tasks(load_tasks([folder]), factory, RunSettings(out_dir=out, max_steps=2),
                               [BridgeTarget(vm=server.url)], start_bridge=lambda target, cache: Bridge.start(
                                   target, cache_dir=cache, venv=stand_in_venv), progress=True)
        time.sleep(3)  # the interrupted episode ends meanwhile: its result must not land
    finally:
        server.stop()
    by_id = {r.task_id: r for r in summary.results}
    assert summary.interrupted
    assert by_id["a-first"].status == "success", by_id["a-first"].reason
    assert by_id["b-interrupted"].reason == by_id["c-queued"].reason == "interrupted (Ctrl-C) before it finished"
    assert json.loads((out / "results.json").read_text())["interrupted"] is True
    assert read_result(out / "b-interrupted") is None  # no late result.json
    err = capsys.readouterr().err
    assert "a-first" in err and "tasks 1/3 done" in err, err  # the headline when Ctrl-C came
