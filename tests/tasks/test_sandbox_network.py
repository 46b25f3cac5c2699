"""With `--allow-network`, each sandboxed worker gets a network of its own (tasks/uplink.py).

Real bwrap, real slirp4netns, real Xvfb and Chromium, the real runner with the do-nothing backend;
the probe is a task's getter command. The host side is real too: an HTTP server on this machine's
loopback and one on its outward address (local services no task may reach), an abstract unix
socket (how another worker's Xvfb is reached on a shared network), and another machine on this
one's network (tests/support/another_machine.py: what the uplink must reach).
"""

from __future__ import annotations

import http.server
import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.another_machine import another_machine, another_machine_problem
from support.task_files import include_exclude_task, shell_step

from kimi_agent.errors import EnvironmentStartError
from kimi_agent.tasks import RunSettings, TaskResult, run_tasks
from kimi_agent.tasks import uplink as uplink_module
from kimi_agent.tasks.cgroups import Limits, WorkerCgroup, place
from kimi_agent.tasks.cgroups import probe as cgroup_probe
from kimi_agent.tasks.sandbox import SandboxPlan, bwrap_argv, probe
from kimi_agent.tasks.sandbox_user import sandbox_host_uid, sandbox_user_problem
from kimi_agent.tasks.suites.solutions import do_nothing_backend
from kimi_agent.tasks.uplink import (
    FENCED_PREFIXES,
    UPLINK_DNS,
    Uplink,
    child_pid,
    fenced_prefixes,
    uplink_problem,
)
from kimi_agent.tasks.worker_pool import NETWORK_OWN

needs_desktop = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                   reason="needs Xvfb and Chromium")
needs_bwrap = pytest.mark.skipif(probe() is not None, reason=f"bubblewrap cannot run here: {probe()}")
needs_uplink = pytest.mark.skipif(uplink_problem() is not None, reason=f"no uplink here: {uplink_problem()}")
needs_another_machine = pytest.mark.skipif(another_machine_problem() is not None,
                                           reason=f"no other machine here: {another_machine_problem()}")


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") else addr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _www(folder: Path, name: str = "index.html", text: str = "another machine") -> Path:
    """`folder` made, holding one file `name` with `text`: what another machine serves."""
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


@pytest.fixture()
def host_services(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """HTTP servers on 127.0.0.1 and on the outward address, and an abstract unix socket, all in
    this machine's network namespace; and another machine's HTTP server."""
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no address besides loopback")
    if (why := another_machine_problem()) is not None:
        pytest.skip(f"no other machine here: {why}")
    servers = [http.server.ThreadingHTTPServer((host, 0), _Quiet) for host in ("127.0.0.1", outward)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    abstract = f"kimi-net-test-{os.getpid()}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract)
    unix.listen(8)
    hits: list[str] = []  # what reached this machine's loopback canaries (a TCP and a UDP one)
    canary_tcp = socket.create_server(("127.0.0.1", 0))
    canary_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    canary_udp.bind(("127.0.0.1", 0))

    def watch() -> None:
        while True:
            try:
                ready = select.select([canary_tcp, canary_udp], [], [], 0.2)[0]
            except (OSError, ValueError):
                return  # closed
            try:
                for s in ready:
                    if s is canary_tcp:
                        conn, peer = canary_tcp.accept()
                        hits.append(f"tcp from {peer}")
                        conn.close()
                    else:
                        hits.append(f"udp {s.recvfrom(256)}")
            except OSError:
                return  # closed meanwhile

    threading.Thread(target=watch, daemon=True).start()
    www = _www(tmp_path / "elsewhere")
    try:
        with another_machine(www) as elsewhere:
            yield {"loopback_port": servers[0].server_address[1], "outward": outward,
                   "outward_port": servers[1].server_address[1], "abstract": abstract, "elsewhere": elsewhere,
                   "canary_tcp": canary_tcp.getsockname()[1], "canary_udp": canary_udp.getsockname()[1],
                   "hits": hits}
    finally:
        unix.close()
        canary_tcp.close()
        canary_udp.close()
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def _probe_command(svc: dict[str, Any]) -> str:
    """A shell command that prints what the task's network namespace reaches, a line each."""
    script = f"""
import os, socket, time, urllib.request
print("NETNS", os.readlink("/proc/self/ns/net"))
print("HOSTUID", open("/proc/self/uid_map").read().split()[-2])
def tcp(host, port, device=None):
    s = socket.socket()
    s.settimeout(2)
    try:
        if device:  # past the routing table: the destination taken as on the link
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device)
        s.connect((host, port))
        return "open"
    except OSError:
        return "closed"
    finally:
        s.close()
print("LOOPBACK", tcp("127.0.0.1", {svc["loopback_port"]}))
print("GATEWAY-LOOPBACK", tcp("10.0.2.2", {svc["loopback_port"]}))
print("OUTWARD", tcp("{svc["outward"]}", {svc["outward_port"]}))
print("OUTWARD-ON-LINK", tcp("{svc["outward"]}", {svc["outward_port"]}, b"tap0"))
print("METADATA", tcp("169.254.169.254", 80))
print("CANARY-TCP", tcp("127.0.0.1", {svc["canary_tcp"]}, b"tap0"))
try:  # past the sandbox loopback, out through tap0: this machine 127.0.0.1 must not get it (no quotes here)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"tap0")
    u.sendto(b"kimi-canary", ("127.0.0.1", {svc["canary_udp"]}))
    print("CANARY-UDP sent")
except OSError as e:
    print("CANARY-UDP refused", e.errno)
u = socket.socket(socket.AF_UNIX)
try:
    u.connect("\\0{svc["abstract"]}")
    print("ABSTRACT open")
except OSError:
    print("ABSTRACT closed")
try:
    print("ELSEWHERE", urllib.request.urlopen("{svc["elsewhere"]}/", timeout=5).status)
except OSError as e:
    print("ELSEWHERE failed", e)
print("RESOLV", " ".join(open("/etc/resolv.conf").read().split()))
time.sleep(4)  # both workers are up while each probes
"""
    return f"python3 -c '{script}'"


def _write_probe_tasks(tmp_path: Path, svc: dict[str, Any], include: list[str], exclude: list[str]) -> Path:
    """Two tasks (a, b) scored 1 when the probe prints `include` and not `exclude`; their folder."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for task_id in ("a", "b"):
        task = include_exclude_task(task_id, [], _probe_command(svc), include, exclude)
        (folder / f"{task_id}.json").write_text(json.dumps(task), encoding="utf-8")
    return folder


def _run(tmp_path: Path, svc: dict[str, Any], include: list[str], exclude: list[str]) -> tuple[Path, list[TaskResult]]:
    folder = _write_probe_tasks(tmp_path, svc, include, exclude)
    out = tmp_path / "out"
    summary = run_tasks(folder, do_nothing_backend,
                        RunSettings(workers=2, max_steps=2, out_dir=out, allow_network=True), progress=False)
    return out, summary.results


@contextmanager
def _slirp4netns_double(folder: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Iterator[None]:
    """Within: `script` (a shell script's body) is slirp4netns, a test double written in `folder`; the
    runner's uplink probe is asked afresh on the way in and out."""
    double = folder / "slirp4netns"
    double.write_text("#!/bin/sh\n" + script)
    double.chmod(0o755)
    monkeypatch.setenv("KIMI_AGENT_SLIRP4NETNS", str(double))
    uplink_problem.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        uplink_problem.cache_clear()


@contextmanager
def _sandbox_up(home: Path, then: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A sandbox (network "uplink") that has set itself up, as a worker has when its uplink is
    attached, and runs `then` (a shell command) once a line comes on its stdin; yields it and its
    first process's pid. Killed on exit."""
    info_r, info_w = os.pipe()
    plan = SandboxPlan(home=home, network="uplink", resolv_conf=None, info_fd=info_w)
    sandbox = subprocess.Popen([*bwrap_argv(plan), "/bin/sh", "-c", f"echo up; read line; {then}"], pass_fds=(info_w,),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    os.close(info_w)
    try:
        pid = child_pid(info_r)
        assert sandbox.stdout is not None and sandbox.stdout.readline() == "up\n"
        yield sandbox, pid
    finally:
        sandbox.kill()
        sandbox.wait(10)


def _seen(out: Path, task_id: str) -> dict[str, str]:
    """The probe's lines, by their first word."""
    record = json.loads((out / task_id / "result.json").read_text(encoding="utf-8"))["evaluation"]
    lines = str(record["metrics"][0]["result"]).splitlines()
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines if " " in line}


@needs_desktop
@needs_bwrap
@needs_uplink
def test_each_worker_has_a_network_of_its_own_that_reaches_out_but_not_this_machine(
        tmp_path: Path, host_services: dict[str, Any]) -> None:
    out, results = _run(tmp_path, host_services,
                        include=["LOOPBACK closed", "GATEWAY-LOOPBACK closed", "ABSTRACT closed", "OUTWARD closed",
                                 "OUTWARD-ON-LINK closed", "METADATA closed", "ELSEWHERE 200", "CANARY-TCP closed",
                                 f"RESOLV nameserver {UPLINK_DNS}"], exclude=["failed"])
    time.sleep(0.5)  # a datagram slirp4netns carried would have arrived by now
    assert host_services["hits"] == [], host_services["hits"]  # nothing reached this machine's loopback
    assert [(r.status, r.score) for r in results] == [("success", 1.0)] * 2, results
    assert results[0].worker != results[1].worker
    assert all(r.host and r.host["network"] == NETWORK_OWN for r in results), results  # each result says so
    namespaces = {_seen(out, r.task_id)["NETNS"] for r in results}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/net") not in namespaces, namespaces
    if sandbox_user_problem() is None:  # and an id of its own: nothing the kernel counts per user is shared
        ids = {_seen(out, r.task_id)["HOSTUID"] for r in results}
        assert ids == {str(sandbox_host_uid()), str(sandbox_host_uid() + 1)}, ids
    left = subprocess.run(["pgrep", "-P", str(os.getpid()), "slirp4netns"], capture_output=True, text=True)
    assert left.stdout == "", "an uplink outlived its worker"


# A runner that is not root, as a test double: this process in a user namespace of its own, as uid
# 1000 with no capability on this machine, which is what the kernel checks when the runner enters
# its sandboxes' namespaces. (This machine's root owns that namespace, so its files, /dev/net/tun
# included, are the double's own: on a real account udev's mode 0666 for /dev/net/tun stands in.)
AS_A_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
RUN_AS_A_USER = """
import json, os, sys
from pathlib import Path
from kimi_agent.tasks import RunSettings, run_tasks
from kimi_agent.tasks.suites.solutions import do_nothing_backend
from kimi_agent.tasks.uplink import uplink_problem
print(json.dumps({"euid": os.geteuid(), "uplink_problem": uplink_problem()}))
summary = run_tasks(Path(sys.argv[1]), do_nothing_backend, RunSettings(workers=2, max_steps=2, out_dir=Path(sys.argv[2]),
                    allow_network=True), progress=False)
print(json.dumps([r.model_dump(mode="json") for r in summary.results]))
"""


@needs_desktop
@needs_bwrap
@needs_uplink
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_runner_that_is_not_root_gives_each_worker_a_network_of_its_own_too(
        tmp_path: Path, host_services: dict[str, Any]) -> None:
    include = ["LOOPBACK closed", "GATEWAY-LOOPBACK closed", "ABSTRACT closed", "OUTWARD closed", "OUTWARD-ON-LINK closed",
               "METADATA closed", "ELSEWHERE 200", "CANARY-TCP closed", f"RESOLV nameserver {UPLINK_DNS}"]
    folder = _write_probe_tasks(tmp_path, host_services, include, exclude=["failed"])
    done = subprocess.run([*AS_A_USER, sys.executable, "-c", RUN_AS_A_USER, str(folder), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said, results = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert said == {"euid": 1000, "uplink_problem": None}  # not root, and an uplink can be attached all the same
    time.sleep(0.5)  # a datagram slirp4netns carried would have arrived by now
    assert host_services["hits"] == [], host_services["hits"]  # nothing reached this machine's loopback
    assert [(r["status"], r["score"]) for r in results] == [("success", 1.0)] * 2, \
        [_seen(tmp_path / "out", r["task_id"]) for r in results]
    assert [r["host"]["network"] for r in results] == [NETWORK_OWN] * 2
    namespaces = {_seen(tmp_path / "out", r["task_id"])["NETNS"] for r in results}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/net") not in namespaces, namespaces


@needs_desktop
@needs_bwrap
def test_without_slirp4netns_the_workers_share_this_machines_network_and_the_run_says_so(
        tmp_path: Path, host_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("KIMI_AGENT_SLIRP4NETNS", "/nonexistent/slirp4netns")
    uplink_problem.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="kimi_agent"):
            out, results = _run(tmp_path, host_services, include=["LOOPBACK open", "ABSTRACT open", "OUTWARD open",
                                                                  "ELSEWHERE 200"], exclude=["failed"])
    finally:
        monkeypatch.undo()
        uplink_problem.cache_clear()
    # the probe sees what a shared network exposes (so it would see it with an uplink too)
    assert [(r.status, r.score) for r in results] == [("success", 1.0)] * 2, results
    assert {_seen(out, r.task_id)["NETNS"] for r in results} == {os.readlink("/proc/self/ns/net")}
    assert all(r.host and r.host["network"].startswith("this machine's, shared by the workers (slirp4netns is not")
               for r in results), results
    assert any("the 2 workers share this machine's network" in r.getMessage() and "slirp4netns is not installed"
               in r.getMessage() and "--workers 1" in r.getMessage() for r in caplog.records), caplog.text


@needs_desktop
@needs_bwrap
@needs_uplink
@needs_another_machine
def test_the_workers_browser_loads_pages_through_its_own_network(tmp_path: Path) -> None:
    www = _www(tmp_path / "www", "page.html", "<html><head><title>kimi uplink page</title></head><body>hi</body></html>")
    folder = tmp_path / "tasks"
    folder.mkdir()
    with another_machine(www) as elsewhere:
        url = f"{elsewhere}/page.html"
        task = {"id": "browse", "instruction": "Do nothing.", "config": [],
                "evaluator": {"func": "check_direct_json_object", "result": {"type": "page_info", "url": url},
                              "expected": {"type": "rule", "rules": {"expected": {"title": "kimi uplink page",
                                                                                  "url": url}}}}}
        (folder / "browse.json").write_text(json.dumps(task), encoding="utf-8")
        summary = run_tasks(folder, do_nothing_backend, RunSettings(workers=1, max_steps=2, out_dir=tmp_path / "out",
                                                                     allow_network=True), progress=False)
    (r,) = summary.results
    assert (r.status, r.score) == ("success", 1.0), r  # Chromium, over CDP in the sandbox, through the uplink
    assert r.host and r.host["network"] == NETWORK_OWN


@needs_desktop
@needs_bwrap
@needs_uplink
def test_a_worker_whose_uplink_fails_is_not_handed_a_task_and_the_run_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a test double of slirp4netns: the real one until the marker exists (the runner's probe passes),
    # then a failure, as when something on this machine changes between the probe and a worker's start
    marker = tmp_path / "fail-now"
    with _slirp4netns_double(tmp_path, monkeypatch, f"if [ -e {marker} ]; then echo 'test double: no tap device' >&2; "
                             f"exit 1; fi\nexec {shutil.which('slirp4netns')} \"$@\"\n"):
        assert uplink_problem() is None
        marker.touch()
        folder = tmp_path / "tasks"
        folder.mkdir()
        (folder / "t.json").write_text(json.dumps(include_exclude_task("t", [], "echo ran", ["ran"], [])))
        summary = run_tasks(folder, do_nothing_backend,
                            RunSettings(workers=1, max_steps=2, out_dir=tmp_path / "out", allow_network=True),
                            progress=False)
    (r,) = summary.results
    assert r.status == "error" and "slirp4netns did not attach a network" in r.reason, r
    assert "not run: every worker exited before it was ready" in r.reason, r


@needs_desktop
@needs_bwrap
@needs_uplink
@needs_another_machine
def test_a_worker_whose_uplink_ends_during_a_task_gets_a_new_one_for_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    www = _www(tmp_path / "www")
    fetch = "python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).status)' {}"
    folder = tmp_path / "tasks"
    folder.mkdir()
    # a test double of slirp4netns: the real one, killed after 8 s (as a crash would end it)
    kill_at_8s = f"exec timeout -s KILL 8 {shutil.which('slirp4netns')} \"$@\"\n"
    with _slirp4netns_double(tmp_path, monkeypatch, kill_at_8s), another_machine(www) as elsewhere:
        # a fetches in its getter, after the first frame's wait (8 s: its uplink has ended), b in its setup
        a_task = include_exclude_task("a", [], f"sleep 1; {fetch.format(elsewhere)} 2>&1", ["200"], [])
        b_task = include_exclude_task("b", [shell_step(f"{fetch.format(elsewhere)} > /home/user/got 2>&1")],
                                      "cat /home/user/got", ["200"], [])
        for task in (a_task, b_task):
            (folder / f"{task['id']}.json").write_text(json.dumps(task))
        summary = run_tasks(folder, do_nothing_backend,
                            RunSettings(workers=1, max_steps=2, out_dir=tmp_path / "out", allow_network=True),
                            progress=False)
    a, b = sorted(summary.results, key=lambda r: r.task_id)
    assert a.worker == b.worker and (a.status, a.score) == ("fail", 0.0), a
    assert a.host and any("slirp4netns ended during the task (exit " in n for n in a.host.get("notes", [])), a.host
    assert (b.status, b.score) == ("success", 1.0), b  # a new uplink, same worker (which this double ends too)


@needs_bwrap
@needs_uplink
def test_the_probe_says_why_no_uplink_can_be_attached_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a test double that fails as slirp4netns does without /dev/net/tun
    with _slirp4netns_double(tmp_path, monkeypatch, "echo 'open(\"/dev/net/tun\"): No such file or directory' >&2\nexit 1\n"):
        why = uplink_problem()
    assert why is not None and why.startswith("slirp4netns cannot attach a network here") and "/dev/net/tun" in why


@needs_bwrap
@needs_uplink
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_runner_that_is_not_root_is_told_when_it_may_not_open_dev_net_tun(tmp_path: Path) -> None:
    double = tmp_path / "slirp4netns"  # a test double that fails as slirp4netns does where the device is root's
    double.write_text("#!/bin/sh\necho 'open(\"/dev/net/tun\"): Permission denied' >&2\nexit 1\n")
    double.chmod(0o755)
    done = subprocess.run([*AS_A_USER, sys.executable, "-c", "from kimi_agent.tasks.uplink import uplink_problem; "
                           "print(uplink_problem())"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KIMI_AGENT_SLIRP4NETNS": str(double)})
    assert done.stdout.startswith("slirp4netns cannot open /dev/net/tun as uid 1000 ("), done
    assert "mode 0666" in done.stdout and "or to run as root" in done.stdout, done


@needs_bwrap
@needs_uplink
@pytest.mark.skipif(cgroup_probe() is not None, reason=f"no worker cgroups here: {cgroup_probe()}")
def test_uplink_attach_and_close_with_a_real_sandbox_and_cgroup(tmp_path: Path) -> None:
    group = place(f"kimi-agent-{os.getpid()}-uplink", Limits(256 * 2**20, 64, 1.0))
    assert isinstance(group, WorkerCgroup), group
    try:
        with _sandbox_up(tmp_path, "ip -4 route") as (sandbox, pid):
            uplink = Uplink.attach(pid, parent=sandbox.pid, wrap=group.enter_argv)
            # slirp4netns spends its memory and CPU in the worker's cgroup
            assert group.name in Path(f"/proc/{uplink.proc.pid}/cgroup").read_text(encoding="ascii")
            held = [os.readlink(f) for f in Path(f"/proc/{uplink.proc.pid}/fd").iterdir()]
            assert not [h for h in held if h.startswith("user:")], held  # it is in the namespace, holds no handle of it
            routes, _ = sandbox.communicate("go\n", timeout=30)
            assert "default via 10.0.2.2 dev tap0" in routes
            for prefix in fenced_prefixes():  # this machine and the metadata service are fenced off
                assert f"prohibit {prefix.removesuffix('/32')}" in routes, (prefix, routes)
            uplink.close()
            assert uplink.proc.returncode == 0  # it ended because its exit pipe closed
            uplink.close()  # idempotent
    finally:
        assert group.remove()


@needs_desktop
@needs_bwrap
@needs_uplink
@needs_another_machine
def test_a_task_that_uses_up_its_uplink_leaves_the_next_task_a_network_that_works(tmp_path: Path) -> None:
    www = _www(tmp_path / "www")
    with another_machine(www) as elsewhere:
        host = elsewhere.split("//", 1)[1].split(":", 1)[0]
        # a UDP flow from each of 1100 ports: slirp4netns holds a socket for each for about 4 minutes,
        # more than its 1024 descriptors
        flood = ("import socket\nfor i in range(1100):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 f"    s.sendto(b'x', ('{host}', 9))\n    s.close()\nprint('FLOODED')\n")
        fetch = (f"import urllib.request\nprint('ELSEWHERE', urllib.request.urlopen('{elsewhere}/', timeout=10).status)\n")
        folder = tmp_path / "tasks"
        folder.mkdir()
        for i, task in enumerate([include_exclude_task("flood", [], f"python3 -c {shlex.quote(flood)}", ["FLOODED"], []),
                                  include_exclude_task("next", [], f"python3 -c {shlex.quote(fetch)} 2>&1",
                                                       ["ELSEWHERE 200"], [])]):
            (folder / f"t{i}.json").write_text(json.dumps(task), encoding="utf-8")
        out = tmp_path / "out"
        summary = run_tasks(folder, do_nothing_backend,
                            RunSettings(workers=1, max_steps=2, out_dir=out, allow_network=True), progress=False)
    assert [(r.task_id, r.status, r.score) for r in summary.results] == [("flood", "success", 1.0),
                                                                        ("next", "success", 1.0)], \
        [_seen(out, t) for t in ("flood", "next")]


@needs_desktop
@needs_bwrap
@needs_uplink
def test_an_address_this_machine_gains_during_a_run_is_fenced_before_the_next_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gained = "192.0.2.77"  # a test double of the address list: this machine gains one once the first task is done
    out = tmp_path / "out"
    real = uplink_module.this_machines_addresses
    monkeypatch.setattr(uplink_module, "this_machines_addresses",
                        lambda: [*real(), *([gained] if (out / "before" / "result.json").exists() else [])])
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i, task in enumerate([include_exclude_task("before", [], "ip -4 route; echo END", ["END"], [gained]),
                              include_exclude_task("after", [], "ip -4 route", [f"prohibit {gained}"], [])]):
        (folder / f"t{i}.json").write_text(json.dumps(task), encoding="utf-8")
    summary = run_tasks(folder, do_nothing_backend,
                        RunSettings(workers=1, max_steps=2, out_dir=out, allow_network=True), progress=False)
    assert [(r.task_id, r.status, r.score) for r in summary.results] == [("before", "success", 1.0),
                                                                        ("after", "success", 1.0)], \
        [_seen(out, t) for t in ("before", "after")]
    assert summary.results[0].worker == summary.results[1].worker  # the same worker, whose fence followed


def test_child_pid_names_what_went_wrong() -> None:
    r, w = os.pipe()
    os.write(w, b'{"child-pid": 4321}')
    assert child_pid(r) == 4321
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(EnvironmentStartError, match="exited before it reported"):
        child_pid(r)
    r, w = os.pipe()
    try:
        with pytest.raises(EnvironmentStartError, match=r"within 0\.2 s"):
            child_pid(r, timeout_s=0.2)
    finally:
        os.close(w)


@needs_uplink
def test_attaching_to_a_process_that_is_gone_fails_in_bounded_time() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(EnvironmentStartError, match="is gone"):
        Uplink.attach(gone.pid, parent=os.getpid(), timeout_s=5)


@needs_uplink
def test_an_uplink_is_never_attached_to_this_machines_own_network() -> None:
    here = subprocess.Popen(["sleep", "30"])  # a child of ours, in our network namespace
    try:
        with pytest.raises(EnvironmentStartError, match="shares this machine's network"):
            Uplink.attach(here.pid, parent=os.getpid(), timeout_s=5)
        with pytest.raises(EnvironmentStartError, match="no longer bwrap's"):
            Uplink.attach(here.pid, parent=1, timeout_s=5)
    finally:
        here.kill()
        here.wait(10)


def test_resolv_conf_is_bound_only_for_an_uplink(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {UPLINK_DNS}\n")
    up = bwrap_argv(SandboxPlan(home=tmp_path, network="uplink", resolv_conf=resolv, info_fd=7))
    target = os.path.realpath("/etc/resolv.conf")
    if os.path.isfile(target):
        i = up.index(str(resolv))
        assert up[i - 1:i + 2] == ["--ro-bind", str(resolv), target]
    assert up[up.index("--info-fd") + 1] == "7" and "--share-net" not in up
    host = bwrap_argv(SandboxPlan(home=tmp_path, network="host", resolv_conf=resolv))
    assert "--share-net" in host and str(resolv) not in host and "--info-fd" not in host
    alone = bwrap_argv(SandboxPlan(home=tmp_path))
    assert "--share-net" not in alone and str(resolv) not in alone


def test_the_fence_is_this_machines_addresses_and_the_metadata_services() -> None:
    fence = fenced_prefixes(["127.0.0.1", "192.0.2.2", "10.0.2.15", "169.254.3.4", "198.18.0.1", "::1", "fe80::1",
                             "127.0.0.0/8", "192.168.77.0/24", "192.168.77.5", "10.0.2.0/28", "not-an-address"])
    # loopback is the sandbox's own; slirp4netns's network holds nothing to reach; link-local is fenced
    # as a whole; IPv6 has no uplink; a prefix this machine answers on (AnyIP) is fenced whole
    assert fence == [*FENCED_PREFIXES, "192.0.2.2/32", "198.18.0.1/32", "192.168.77.0/24"]
    here = fenced_prefixes()
    outward = _outward_address()
    assert outward is None or f"{outward}/32" in here, here


@pytest.mark.skipif(another_machine_problem() is not None, reason=f"no network namespace here: {another_machine_problem()}")
def test_this_machines_addresses_include_what_its_local_routes_answer_on() -> None:
    name = f"kimi-anyip-{os.getpid()}"  # a machine of its own, as the red team's (redteam-rootless.md F2)
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        for cmd in (["link", "set", "lo", "up"], ["route", "add", "local", "192.168.77.0/24", "dev", "lo"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, timeout=10)
        listed = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c",
                                 "from kimi_agent.tasks.uplink import fenced_prefixes; print(fenced_prefixes())"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)
    assert "'192.168.77.0/24'" in listed, listed  # no interface has these addresses, yet they are this machine's


@needs_uplink
def test_a_fence_that_cannot_be_set_fails_the_attach_and_names_the_route(tmp_path: Path) -> None:
    with _sandbox_up(tmp_path, "true") as (sandbox, pid):
        with pytest.raises(EnvironmentStartError, match=r"could not fence the sandbox's network .*not-a-prefix"):
            Uplink.attach(pid, parent=sandbox.pid, fence=["192.0.2.9/32", "not-a-prefix"])
        left = subprocess.run(["pgrep", "-P", str(os.getpid()), "slirp4netns"], capture_output=True, text=True)
        assert left.stdout == "", "slirp4netns started although the fence failed"
