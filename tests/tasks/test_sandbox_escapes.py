"""A malicious task file tries every escape from its worker's sandbox; each attempt is contained.

Real bwrap, real Xvfb and Chromium, the real runner; the model is a test double (the do-nothing
backend: every episode reports success at once). The attempts are OSWorld setup steps and getters,
the way a downloaded task file would make them:

- write outside: shell commands and `execute`'s `stdout` aimed at this machine's folders;
- read the runner's environment and files: `env`, `/proc/*/environ`, a secret file of the host;
- leave a process: `setsid nohup sleep &` in a setup step;
- kill another worker's browser (and a host process named chrome) with `pkill`, and everything
  it can see with `kill -9 -1`;
- delete by id: an id that is a path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks.sandbox import SandboxPlan, bwrap_argv, probe, python_paths
from kimi_agent.tasks.suites.solutions import do_nothing_backend

pytestmark = [
    pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                       reason="needs Xvfb and Chromium"),
    pytest.mark.skipif(probe() is not None, reason=f"bubblewrap cannot run here: {probe()}"),
]
ROOT = Path(__file__).parents[2]
SECRET = "kimi-test-secret-5f2c9a"


def _task(task_id: str, config: list[dict[str, Any]], *, command: str = "true",
          rules: dict[str, list[str]] | None = None, postconfig: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A task whose score is `check_include_exclude(stdout of command, rules)`: 1 = contained."""
    return {"id": task_id, "instruction": "Do nothing.", "config": config,
            "evaluator": {"func": "check_include_exclude", "postconfig": postconfig or [],
                          "result": {"type": "vm_command_line", "command": command, "shell": True},
                          "expected": {"type": "rule", "rules": rules or {"include": [], "exclude": []}}}}


def _shell(command: str, **extra: Any) -> dict[str, Any]:
    return {"type": "execute", "parameters": {"command": command, "shell": True, **extra}}


def _write(folder: Path, tasks: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(tasks):
        (folder / f"t{i}.json").write_text(json.dumps(t), encoding="utf-8")
    return folder


def _processes(needle: str) -> list[str]:
    """Command lines of this machine's processes that contain `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline:
                found.append(cmdline)
    return found


def test_writes_reads_env_and_lingering_processes_are_contained(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    monkeypatch.setenv("KIMI_TEST_SECRET", SECRET)
    tasks = [
        _task("escape-write", [
            _shell(f"echo pwned > {outside}/written.txt; echo pwned > {ROOT}/pwned.txt; echo pwned > /etc/pwned; "
                   f"rm -rf {outside}/secret.txt; true"),
            _shell("echo pwned", stdout=str(outside / "stdout.txt")),
        ]),
        _task("escape-write-home", [_shell("echo mine > /home/user/Desktop/mine.txt")],
              command="cat /home/user/Desktop/mine.txt", rules={"include": ["mine"], "exclude": []}),
        _task("escape-read", [], command=f"env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
                                         f"cat {outside}/secret.txt 2>&1",
              rules={"include": ["HOME=/home/user", "No such file"], "exclude": [SECRET]}),
        _task("escape-linger", [_shell("setsid nohup sleep 311 >/dev/null 2>&1 & (sleep 312 >/dev/null 2>&1 &) ; true")],
              command="ps -eo args", rules={"include": ["sleep 311"], "exclude": []}),
    ]
    out = tmp_path / "out"
    summary = run_tasks(_write(tmp_path / "tasks", tasks), do_nothing_backend,
                        RunSettings(workers=1, max_steps=2, out_dir=out), progress=False)
    by_id = {r.task_id: r for r in summary.results}
    # write outside: nothing landed on this machine, the host's file is intact; the one task whose
    # execute aimed stdout outside its home failed its setup with the reason
    assert not (outside / "written.txt").exists() and not (outside / "stdout.txt").exists()
    assert not (ROOT / "pwned.txt").exists() and not Path("/etc/pwned").exists()
    assert (outside / "secret.txt").read_text(encoding="utf-8") == SECRET
    write = by_id["escape-write"]
    assert write.status == "error" and "stdout file" in write.reason and "outside the home" in write.reason
    assert (by_id["escape-write-home"].status, by_id["escape-write-home"].score) == ("success", 1.0)
    # read: the sandbox sees neither the runner's environment nor this machine's files
    read = by_id["escape-read"]
    assert (read.status, read.score) == ("success", 1.0), read
    seen = json.loads((out / "escape-read" / "result.json").read_text(encoding="utf-8"))["evaluation"]
    assert "HOME=/home/user" in seen["metrics"][0]["result"] and SECRET not in seen["metrics"][0]["result"]
    # linger: the process was running inside during evaluation, and is gone with the worker
    assert (by_id["escape-linger"].status, by_id["escape-linger"].score) == ("success", 1.0)
    deadline = time.monotonic() + 10
    while (_processes("sleep 311") or _processes("sleep 312")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes("sleep 311") == [] and _processes("sleep 312") == []


# The decoy: waits for a catchable ending signal and writes who sent it (pid, uid, command line)
DECOY = """import signal, sys
ends = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2}
signal.pthread_sigmask(signal.SIG_BLOCK, ends)
info = signal.sigtimedwait(ends, 300)
if info is not None:
    try:
        cmd = open(f"/proc/{info.si_pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError as e:
        cmd = f"(no command line: {e})"
    open(sys.argv[1], "w").write(f"signal {info.si_signo} from pid {info.si_pid} (uid {info.si_uid}): {cmd}")
    sys.exit(100 + info.si_signo)
"""


def test_pkill_and_kill_all_stay_inside_their_own_worker(tmp_path: Path) -> None:
    decoy_exe = tmp_path / "chrome"  # a process of this machine named like the browser
    shutil.copy(os.path.realpath(sys.executable), decoy_exe)
    sender = tmp_path / "decoy-signalled-by.txt"  # who signalled it, if anyone did (a failure then says)
    decoy = subprocess.Popen([str(decoy_exe), "-I", "-c", DECOY, str(sender)], stderr=subprocess.DEVNULL)
    launch = {"type": "launch", "parameters": {"command": ["google-chrome", "--remote-debugging-port=1337"]}}
    running = "ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == \"chromium\"' | grep -q ."  # zombies are dead
    alive = f"for i in $(seq 40); do {running} || echo GONE; sleep 0.25; done; echo checked"
    kill = f"for i in $(seq 40); do pkill -9 chrome; pkill -9 chromium; sleep 0.25; done; {running} || echo NONE"
    tasks = [
        # both workers start at once; the victim watches its browser for 10 s while the killer kills
        # every chrome/chromium it can see for 10 s, then checks that its own browser is gone
        _task("victim", [launch], command=alive, rules={"include": ["checked"], "exclude": ["GONE"]}),
        _task("killer", [launch], command=kill, rules={"include": ["NONE"], "exclude": []}),
        _task("kill-all", [_shell("kill -9 -1")]),  # kills its own worker: an error, the run goes on
    ]
    out = tmp_path / "out"
    try:
        summary = run_tasks(_write(tmp_path / "tasks", tasks), do_nothing_backend,
                            RunSettings(workers=2, max_steps=2, out_dir=out), progress=False)
        assert decoy.poll() is None, ("a process of this machine was signalled: "
                                      f"{sender.read_text() if sender.exists() else 'by SIGKILL, or it did not start'}")
    finally:
        decoy.kill()
        decoy.wait(10)
    by_id = {r.task_id: r for r in summary.results}
    victim, killer, kill_all = by_id["victim"], by_id["killer"], by_id["kill-all"]
    assert (killer.status, killer.score) == ("success", 1.0), killer  # pkill works inside its own sandbox
    assert (victim.status, victim.score) == ("success", 1.0), victim  # ... and never reached the other worker
    assert victim.worker != killer.worker
    assert kill_all.status == "error" and "worker exited" in kill_all.reason


def test_an_id_that_is_a_path_deletes_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep", encoding="utf-8")
    tasks = [_task("../victim", []), _task(str(victim), []), _task("fine", [])]
    out = tmp_path / "out"
    summary = run_tasks(_write(tmp_path / "tasks", tasks), do_nothing_backend,
                        RunSettings(workers=1, max_steps=2, out_dir=out), progress=False)
    statuses = sorted((r.status, r.task_id) for r in summary.results)
    assert [s for s, _ in statuses].count("invalid") == 2
    assert (victim / "keep.txt").read_text(encoding="utf-8") == "keep"
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} >= {"fine"}


def test_without_bwrap_host_acting_tasks_need_no_sandbox(tmp_path: Path) -> None:
    tasks = _write(tmp_path / "tasks", [_task("acts-on-host", [_shell("echo hi > /home/user/x")]),
                                        {**_task("browser-only", []), "evaluator": {
                                            "func": "exact_match", "result": {"type": "rule", "rules": {"x": 1}},
                                            "expected": {"type": "rule", "rules": {"expected": {"x": 1}}}}}])
    env = {**os.environ, "KIMI_AGENT_BWRAP": str(tmp_path / "no-bwrap-here")}
    cmd = [sys.executable, "-m", "kimi_agent.cli", "run", str(tasks), "--backend", "do-nothing", "--no-progress",
           "--max-steps", "2"]
    first = subprocess.run([*cmd, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    results = {r["task_id"]: r for r in json.loads((tmp_path / "a" / "results.json").read_text())["results"]}
    refused = results["acts-on-host"]
    assert refused["status"] == "unsupported"
    assert "config[0] execute" in refused["reason"] and "--no-sandbox" in refused["reason"]
    assert "bubblewrap" in refused["reason"]
    assert results["browser-only"]["status"] == "success"
    second = subprocess.run([*cmd, "--out", str(tmp_path / "b"), "--no-sandbox"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    results = {r["task_id"]: r for r in json.loads((tmp_path / "b" / "results.json").read_text())["results"]}
    assert results["acts-on-host"]["status"] == "success"  # it ran, on this machine
    assert results["acts-on-host"]["host"]["sandbox"] == "none"
    assert results["acts-on-host"]["host"]["network"] == "this machine's (no sandbox)"


def test_a_runner_started_from_tmp_shows_the_sandbox_none_of_this_machines_tmp(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`python /tmp/script.py` puts /tmp on sys.path; binding that read-only into the sandbox would
    show it every file of this machine's /tmp and leave Xvfb no writable /tmp for its socket."""
    marker = Path("/tmp") / f"kimi-host-marker-{os.getpid()}"
    marker.write_text(SECRET, encoding="utf-8")
    try:
        monkeypatch.setattr(sys, "path", ["/tmp", str(tmp_path), *sys.path])
        paths = python_paths()
        assert Path("/tmp") not in paths and tmp_path.resolve() in paths  # the folder itself still imports
        plan = SandboxPlan(home=tmp_path, readable=paths)
        done = subprocess.run([*bwrap_argv(plan), "sh", "-c", "touch /tmp/mine && ls -a /tmp"], capture_output=True,
                              text=True, timeout=30, check=False)
    finally:
        marker.unlink()
    assert done.returncode == 0, done.stderr
    assert "mine" in done.stdout.split() and marker.name not in done.stdout
