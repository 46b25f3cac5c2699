"""What a red-team's task files did to the sandbox, each now contained.

Real bwrap, real Xvfb and Chromium, the real runner with the do-nothing backend (every episode
reports success at once); the attacks are OSWorld setup steps and getters:

- code injection: a module written into `/home/user` (the worker's old working folder, so the
  first entry of its sys.path) under the name of one the evaluator imports lazily (pypdf);
- a process left running (`setsid` loop) by one task, still writing during the next one;
- files left in `/tmp`, `/var/tmp` and `/dev/shm` by one task, seen by the next;
- a process started for a task by the worker's window manager (a key binding it was told to reload);
- reading the run's `--out` (other tasks' results, other workers' homes) when it lies inside a
  folder bound read-only into the sandbox (the project, an import path);
- reading root-only files of `/etc` (their owner, the host's root, is the sandbox's uid mapped out);
- root inside: remounting the read-only bind of `/etc` writable and writing the host's `/etc`
  (the sandbox ran as uid 0 with every capability of its namespace), unmounting a mask, nesting a
  user namespace to get capabilities back;
- attaching to the worker (the same user): its environment, descriptors and memory;
- without bwrap, getters and steps that read this machine's files (`list_directory`, `file:` URLs).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.task_files import include_exclude_task, shell_step

from kimi_agent.tasks import RunSettings, TaskResult, load_tasks, run_tasks, sandbox_user
from kimi_agent.tasks.sandbox import SandboxPlan, bwrap_argv, host_acting, masked_secrets, probe
from kimi_agent.tasks.sandbox_user import sandbox_host_uid, sandbox_user_problem, shared_limits, taken_ids
from kimi_agent.tasks.suites.solutions import do_nothing_backend

needs_desktop = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                   reason="needs Xvfb and Chromium")
needs_bwrap = pytest.mark.skipif(probe() is not None, reason=f"bubblewrap cannot run here: {probe()}")


def needs_own_user(test: Callable[..., None]) -> Callable[..., None]:
    """A test of the run where each worker's tasks have an id of their own (a root runner)."""
    own = pytest.mark.skipif(sandbox_user_problem() is not None,
                             reason=f"tasks run as the runner's user: {sandbox_user_problem()}")
    return needs_desktop(needs_bwrap(own(test)))
SECRET = "kimi-hardening-secret-7d41"
LINGER = "kimi-linger-marker-93c2"
# Copy the worker's descriptors (its channel to the runner among them) with pidfd_getfd (syscall 438)
GRAB_FDS = """import ctypes, os, sys
pidfd = os.pidfd_open(int(sys.argv[1]))
print("pidfd_open ok")
libc = ctypes.CDLL(None, use_errno=True)
for fd in range(64):
    if libc.syscall(438, pidfd, fd, 0) >= 0:
        print("GOT-FD", fd)
"""
# A process started by the worker's window manager for a task (a key binding in ~/.config/openbox)
WM_MARKER = "kimi-wm-started-5be1"
WM_KEYBIND = ("mkdir -p /home/user/.config/openbox && cat > /home/user/.config/openbox/rc.xml <<'EOF'\n"
              '<?xml version="1.0"?><openbox_config xmlns="http://openbox.org/3.4/rc"><keyboard>'
              f'<keybind key="F12"><action name="Execute"><command>sh -c "sleep 600 # {WM_MARKER}"</command>'
              "</action></keybind></keyboard></openbox_config>\nEOF\n"
              "openbox --reconfigure; for i in $(seq 20); do sleep 1; xdotool key F12; "  # until it took the binding:
              # the binding's own process, not this step's command line (which holds the marker too)
              f"ps -eo args | grep -qx 'sh -c sleep 600 # {WM_MARKER}' && break; done")
ROOT_ONLY_SECRET = "kimi-root-only-secret-93c2"
# Opens inotify instances until the kernel refuses one (at most 1000): what the worker's namespace allows.
INOTIFY_HOG = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 1000 and libc.inotify_init1(0) >= 0:
    fds.append(1)
print("INOTIFY", len(fds))
"""
# Leaves a POSIX message queue (it outlives its process, in the worker's ipc namespace).
MQUEUE_LEFT = """
import ctypes
assert ctypes.CDLL(None, use_errno=True).syscall(240, b"left-queue", 0o102, 0o600, None) >= 0
"""
# Makes POSIX message queues (10 messages of 8 KiB each, the default) until the kernel refuses one.
MQUEUE_HOG = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 100 and libc.syscall(240, ("kimi-hog-%d" % n).encode(), 0o102, 0o600, None) >= 0:
    n += 1
print("MQUEUES", n)
"""
ESCAPE = Path(f"/etc/kimi-escape-{os.getpid()}")  # what a task that could remount /etc would write
FAKE_PYPDF = ("open('/home/user/IMPORTED', 'w').write('pwned')\n"
              "class PdfReader:\n    def __init__(self, path):\n        self.pages = []\n")


def _write(folder: Path, tasks: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(tasks):
        (folder / f"t{i:02d}.json").write_text(json.dumps(t), encoding="utf-8")
    return folder


def _seen(out: Path, task_id: str) -> str:
    """What the task's getter returned (the command's stdout)."""
    record = json.loads((out / task_id / "result.json").read_text(encoding="utf-8"))["evaluation"]
    return str(record["metrics"][0]["result"])


def _contained(run: tuple[Path, dict[str, TaskResult]], *task_ids: str) -> None:
    """Each of these tasks scored 1 (its probe saw the attack contained), all on one worker."""
    out, by_id = run
    assert len({by_id[t].worker for t in task_ids}) == 1
    for t in task_ids:
        assert (by_id[t].status, by_id[t].score) == ("success", 1.0), f"{t} saw: {_seen(out, t)}"


def _counted(run: tuple[Path, dict[str, TaskResult]], task_id: str) -> int:
    """What a hog task (contained: it scored 1) printed after its label: how many it got."""
    _contained(run, task_id)
    return int(_seen(run[0], task_id).split()[1])


@pytest.fixture(scope="module")
def hardening_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, TaskResult]]]:
    """One run, one worker, the attacks in order. `--out` lies inside a folder on sys.path (bound
    read-only into the sandbox, as the project is for `--out runs/...`), next to an earlier run."""
    root = tmp_path_factory.mktemp("hardening")
    root.chmod(0o755)  # as a project folder is (pytest makes its folders 0700)
    key = root / "root-only.key"  # a secret of the runner's user (root) in a folder the sandbox sees
    key.write_text(ROOT_ONLY_SECRET, encoding="utf-8")
    key.chmod(0o600)
    out = root / "out"
    (out / "earlier-task").mkdir(parents=True)
    (out / "earlier-task" / "result.json").write_text(SECRET, encoding="utf-8")
    pypdf = "mkdir -p /home/user/pypdf && printf %b " + json.dumps(FAKE_PYPDF) + " > /home/user/pypdf/__init__.py" \
            " && echo 'class PyPdfError(Exception): pass' > /home/user/pypdf/errors.py" \
            " && echo not-a-pdf > /home/user/a.pdf && echo not-a-pdf-either > /home/user/b.pdf"
    linger = (f"setsid sh -c 'while true; do date +%s%N >> /tmp/linger.log; sleep 0.2; done # {LINGER}' "
              ">/dev/null 2>&1 < /dev/null &")
    check_linger = ("sleep 1; ps -eo args; a=$(wc -l < /tmp/linger.log); sleep 1; b=$(wc -l < /tmp/linger.log); "
                    "test -s /tmp/linger.log && echo LINGER-RAN-BEFORE; [ \"$a\" = \"$b\" ] && echo STOPPED-WRITING")
    own_user = sandbox_user_problem() is None  # a root runner: tasks run as an unprivileged id of their own
    tasks = [
        {"id": "inject-pypdf", "instruction": "Do nothing.", "config": [shell_step(pypdf)],
         "evaluator": {"func": "compare_pdfs",
                       "result": {"type": "vm_file", "path": "/home/user/a.pdf", "dest": "a.pdf"},
                       "expected": {"type": "vm_file", "path": "/home/user/b.pdf", "dest": "b.pdf"}}},
        include_exclude_task("worker-cwd", [shell_step("touch /pypdf.py 2>/home/user/err.txt; true")],
              "cat /home/user/err.txt", include=["Read-only file system"], exclude=[]),
        include_exclude_task("linger-start", [shell_step(linger)], "sleep 0.5; ps -eo args", include=[LINGER], exclude=[]),
        include_exclude_task("linger-gone", [], check_linger, include=["LINGER-RAN-BEFORE", "STOPPED-WRITING", "ps -eo args"],
              exclude=[LINGER]),
        include_exclude_task("wm-start", [shell_step(WM_KEYBIND)], "ps -eo args", include=[WM_MARKER], exclude=[]),
        include_exclude_task("wm-gone", [], "ps -eo args; echo END", include=["END"], exclude=[WM_MARKER]),
        include_exclude_task("scratch-leave", [shell_step("for d in /tmp /var/tmp /dev/shm; do echo 1 > $d/left-behind; "
                                                        "mkdir -p $d/left-dir/sub; done; /usr/bin/python3 -c "
                                                        + shlex.quote(MQUEUE_LEFT))],
              "ls -A /tmp /var/tmp /dev/shm /dev/mqueue", include=["left-behind", "left-dir", "left-queue"], exclude=[]),
        include_exclude_task("scratch-gone", [], "ls -A /tmp /var/tmp /dev/shm /dev/mqueue; echo END",
              include=["END", ".X11-unix"], exclude=["left-behind", "left-dir", "left-queue"]),
        include_exclude_task("read-out", [shell_step(f"find {out} > /home/user/seen.txt 2>&1; cat {out}/*/result.json "
                                  f"{out}/.workers/*/home/* >> /home/user/seen.txt 2>&1; true")],
              "cat /home/user/seen.txt", include=[], exclude=[SECRET, "earlier-task", "inject-pypdf", "linger"]),
        include_exclude_task("read-secrets", [shell_step("cut -d: -f1,2 /etc/shadow > /home/user/s.txt 2>&1; "
                                      "cat /etc/gshadow /etc/shadow- /etc/sudoers >> /home/user/s.txt 2>&1; "
                                      "ls -A /etc/ssh >> /home/user/s.txt 2>&1; true")],
              "cat /home/user/s.txt; echo END", include=["END"], exclude=["root:", "ssh_host", "ssh_config"]),
        include_exclude_task("root-inside", [shell_step(f"(mount -o remount,rw,bind /etc && touch {ESCAPE}; "
                                                      "umount /etc/shadow && echo UMOUNTED; "
                                                      "unshare -Urm true && echo NESTED-USERNS) > /home/user/m.txt 2>&1; true")],
              "id -u; grep CapEff /proc/self/status; cat /home/user/m.txt; echo END",
              include=["1000\n", "CapEff:\t0000000000000000", "END"], exclude=["UMOUNTED", "NESTED-USERNS"]),
        include_exclude_task("user-of-its-own", [],
              f"awk '{{print $1 \":\" $2}}' /proc/self/uid_map; cat {key} 2>&1; "
              "echo core > /proc/sys/kernel/core_pattern && echo SYSCTL-WRITTEN; echo END",
              include=["END", *([f"1000:{sandbox_host_uid()}"] if own_user else [])],
              exclude=["SYSCTL-WRITTEN", *([ROOT_ONLY_SECRET] if own_user else [])]),  # else: the key's owner
        include_exclude_task("inotify-hog", [], f"/usr/bin/python3 -c {shlex.quote(INOTIFY_HOG)}", ["INOTIFY"], []),
        include_exclude_task("mqueue-hog", [], f"/usr/bin/python3 -c {shlex.quote(MQUEUE_HOG)}", ["MQUEUES"], []),
        include_exclude_task("attach-worker", [],  # the worker: the child of the sandbox's init (pid 1)
              "w=$(ps -eo pid=,ppid=,args= | awk '$2 == 1 && /kimi_agent.tasks.worker/ {print $1}'); echo worker=$w.; "
              "cat /proc/$w/environ > /dev/null 2>&1 && echo ENVIRON-READ; ls /proc/$w/fd > /dev/null 2>&1 && "
              "readlink /proc/$w/fd/* 2>/dev/null | grep -q socket && echo FD-LINKS; "
              "head -c 1 /proc/$w/mem > /dev/null 2>&1 && echo MEM-READ; "
              f"/usr/bin/python3 -c {shlex.quote(GRAB_FDS)} $w; echo END",
              include=["pidfd_open ok", "END"], exclude=["worker=.", "ENVIRON-READ", "FD-LINKS", "MEM-READ", "GOT-FD"]),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", [str(root), *sys.path])  # python_paths() binds `root` read-only
        summary = run_tasks(_write(root / "tasks", tasks), do_nothing_backend,
                            RunSettings(workers=1, max_steps=2, out_dir=out), progress=False)
    yield out, {r.task_id: r for r in summary.results}


@needs_desktop
@needs_bwrap
def test_a_module_a_task_writes_in_its_home_is_never_imported(hardening_run: tuple[Path, dict[str, TaskResult]]
                                                              ) -> None:
    out, by_id = hardening_run
    inject = by_id["inject-pypdf"]
    # the fake pypdf would read both "PDFs" as empty: equal texts, score 1; the real one cannot read them
    assert (inject.status, inject.score) == ("fail", 0.0), inject
    cwd = by_id["worker-cwd"]
    assert (cwd.status, cwd.score) == ("success", 1.0), _seen(out, "worker-cwd")


@needs_desktop
@needs_bwrap
def test_a_process_a_task_leaves_is_killed_before_the_next_task(hardening_run: tuple[Path, dict[str, TaskResult]]
                                                                ) -> None:
    _contained(hardening_run, "linger-start", "linger-gone")  # it ran during its task, and not after


@needs_desktop
@needs_bwrap
@needs_desktop
@needs_bwrap
def test_a_process_the_window_manager_started_for_a_task_is_gone_before_the_next_task(
        hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    # a child of the desktop, not of the task: it outlived every reset, and forged later tasks' files
    _contained(hardening_run, "wm-start", "wm-gone")


@needs_desktop
@needs_bwrap
def test_what_a_task_leaves_in_tmp_is_gone_before_the_next_task(hardening_run: tuple[Path, dict[str, TaskResult]]
                                                                ) -> None:
    _contained(hardening_run, "scratch-leave", "scratch-gone")  # the display's socket stays


@needs_desktop
@needs_bwrap
def test_the_runs_out_folder_is_hidden_inside_a_bound_folder(hardening_run: tuple[Path, dict[str, TaskResult]]
                                                              ) -> None:
    out, by_id = hardening_run
    read = by_id["read-out"]
    seen = _seen(out, "read-out")
    assert (read.status, read.score) == ("success", 1.0), seen
    assert ".workers" in seen  # the worker's own staging folder is there, bound back on the tmpfs


@needs_desktop
@needs_bwrap
def test_root_only_files_of_etc_read_as_nothing(hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    _contained(hardening_run, "read-secrets")


@needs_desktop
@needs_bwrap
def test_a_task_is_an_unprivileged_user_that_cannot_remount_the_hosts_files(
        hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    try:
        assert not ESCAPE.exists()
    finally:
        ESCAPE.unlink(missing_ok=True)
    _contained(hardening_run, "root-inside")


@needs_desktop
@needs_bwrap
def test_a_tasks_commands_cannot_attach_to_their_worker(hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    # the same user as the worker: without PR_SET_DUMPABLE 0 they read its memory and its descriptors
    # (among them its channel to the runner, which pidfd_getfd would copy)
    _contained(hardening_run, "attach-worker")


@needs_bwrap
def test_the_sandbox_starts_in_its_read_only_root() -> None:
    argv = [*bwrap_argv(SandboxPlan(home=Path("/tmp"))), "/bin/sh", "-c", "pwd; touch x 2>&1; true"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.splitlines()[0] == "/" and "Read-only file system" in done.stdout


def test_every_root_only_path_of_etc_is_masked() -> None:
    masked = dict(masked_secrets())
    for path in ("/etc/shadow", "/etc/gshadow"):
        if os.path.exists(path):
            assert masked[path] is False
    if os.path.isdir("/etc/ssh"):
        assert masked["/etc/ssh"] is True
    for folder, dirs, files in os.walk("/etc"):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in masked]
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and not os.lstat(path).st_mode & 0o004:
                assert path in masked, path
    argv = bwrap_argv(SandboxPlan(home=Path("/tmp")))
    for path, is_dir in masked.items():  # after /etc is bound, so on top of it
        at = argv.index(path)
        assert at > argv.index("/etc") and argv[at - 1] == ("--tmpfs" if is_dir else "/dev/null"), path


@needs_desktop
def test_without_a_sandbox_reset_kills_no_process_of_this_machine(tmp_path: Path) -> None:
    decoy = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        tasks = [include_exclude_task("a", [], "true", [], []), include_exclude_task("b", [], "true", [], [])]
        summary = run_tasks(_write(tmp_path / "tasks", tasks), do_nothing_backend,
                            RunSettings(workers=1, max_steps=2, out_dir=tmp_path / "out", sandbox=False),
                            progress=False)
        assert [r.status for r in summary.results] == ["success", "success"]
        assert decoy.poll() is None, "a worker without a sandbox killed a process of this machine"
    finally:
        decoy.kill()
        decoy.wait(10)


READS_HOST = {
    "list-directory": ({"type": "list_directory", "path": "/"}, [], "evaluator.result[0] list_directory"),
    "shortcuts": ({"type": "shortcuts_on_desktop"}, [], "evaluator.result[0] shortcuts_on_desktop"),
    "page-info-file": ({"type": "page_info", "url": "file:///etc/passwd"}, [],
                       "evaluator.result[0] page_info (file:///etc/passwd)"),
    "pdf-from-file": ({"type": "pdf_from_url", "path": "file:///etc/hostname", "dest": "x.pdf"}, [],
                      "evaluator.result[0] pdf_from_url (file:///etc/hostname)"),
    "tabs-file": (None, [{"type": "chrome_open_tabs", "parameters": {"urls_to_open": [
        "about:blank", "file:///root/.ssh/id_rsa"]}}], "config[0] chrome_open_tabs (file:///root/.ssh/id_rsa)"),
    "tabs-bare-path": (None, [{"type": "chrome_open_tabs", "parameters": {"urls_to_open": ["/etc/passwd"]}}],
                       "config[0] chrome_open_tabs (/etc/passwd)"),
    "tabs-view-source": (None, [{"type": "chrome_open_tabs", "parameters": {"urls_to_open": [
        "view-source:file:///etc/passwd"]}}], "config[0] chrome_open_tabs (view-source:file:///etc/passwd)"),
    "tabs-loopback": (None, [{"type": "chrome_open_tabs", "parameters": {"urls_to_open": [
        "http://127.0.0.1:9/admin"]}}], "config[0] chrome_open_tabs (http://127.0.0.1:9/admin)"),
    "open-file": (None, [{"type": "open", "parameters": {"path": "file:///etc/passwd"}}], "config[0] open"),
}


def _reads_host_tasks() -> list[dict[str, Any]]:
    rule = {"type": "rule", "rules": {"expected": "x"}}
    out = []
    for task_id, (getter, config, _) in READS_HOST.items():
        out.append({"id": task_id, "instruction": "Do nothing.", "config": config,
                    "evaluator": {"func": "exact_match", "result": getter or rule, "expected": rule}})
    out.append({"id": "browser-only", "instruction": "Do nothing.", "config": [
        {"type": "chrome_open_tabs", "parameters": {"urls_to_open": ["{LOCAL_SERVER}/index.html", "about:blank",
                                                                     "chrome://settings/"]}}],
        "evaluator": {"func": "exact_match", "result": {"type": "rule", "rules": {"x": 1}},
                      "expected": {"type": "rule", "rules": {"expected": {"x": 1}}}}})
    return out


def test_getters_and_steps_that_read_this_machine_act_on_the_host(tmp_path: Path) -> None:
    specs = {t.spec.id: t.spec for t in load_tasks(_write(tmp_path / "tasks", _reads_host_tasks())) if t.spec}
    for task_id, (_, _, where) in READS_HOST.items():
        assert host_acting(specs[task_id]) == [where], task_id
    assert host_acting(specs["browser-only"]) == []


@needs_desktop
def test_without_bwrap_tasks_that_read_this_machine_are_unsupported(tmp_path: Path) -> None:
    tasks = _write(tmp_path / "tasks", _reads_host_tasks())
    env = {**os.environ, "KIMI_AGENT_BWRAP": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "kimi_agent.cli", "run", str(tasks), "--backend", "do-nothing",
                           "--no-progress", "--max-steps", "2", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["task_id"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]}
    for task_id, (_, _, where) in READS_HOST.items():
        r = results[task_id]
        assert r["status"] == "unsupported", r
        assert where in r["reason"] and "--no-sandbox" in r["reason"] and "bubblewrap" in r["reason"], r
    assert results["browser-only"]["status"] == "success", results["browser-only"]


@needs_desktop
@needs_bwrap
def test_a_task_runs_as_a_user_of_its_own_that_neither_reads_the_runners_files_nor_sets_the_kernel(
        hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    # as this machine's root (the runner's user, root here), a task read root's mode-600 files in every
    # folder it sees, and wrote /proc/sys (kernel.core_pattern: a program of its own, run as root)
    _contained(hardening_run, "user-of-its-own")
    r = hardening_run[1]["user-of-its-own"]
    assert r.host is not None
    if sandbox_user_problem() is None:
        assert r.host["user"] == f"uid {sandbox_host_uid()} of this machine, a user of its own", r.host
    else:
        assert r.host["user"].startswith("the runner's"), r.host


@needs_own_user
def test_a_task_cannot_take_the_inotify_instances_of_the_runner_and_the_other_workers(
        hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    # the kernel counts them against the namespace's creator, root: without the namespace's own limit
    # a task took all of root's (128 here), and the runner's next inotify_init1 failed (EMFILE)
    took = _counted(hardening_run, "inotify-hog")
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    assert took <= shared_limits(1).inotify_instances < limit, (took, limit)


@needs_own_user
def test_a_task_cannot_take_the_message_queue_bytes_of_the_runner_and_the_other_workers(
        hardening_run: tuple[Path, dict[str, TaskResult]]) -> None:
    # counted against root too: without the worker's own RLIMIT_MSGQUEUE a task made 9 queues of
    # 80 KiB, all of root's 800 KiB, and the runner's next mq_open failed
    made = _counted(hardening_run, "mqueue-hog")
    assert 1 <= made <= shared_limits(1).msgqueue_bytes // (10 * 8192), made


def test_the_sandbox_ids_are_no_accounts_no_groups_and_no_users_subordinate_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("ada:100000:65536\n# a comment\nbob:2000003:65536\nnot a range\n", encoding="utf-8")
    monkeypatch.setattr(sandbox_user, "SUBORDINATE_ID_FILES", (str(subuid), str(subgid)))  # subgid: absent
    assert taken_ids(2_000_000, 3) is None  # ends just below bob's range
    why = taken_ids(2_000_000, 4)  # a fourth worker's id is bob's first subordinate id
    assert why is not None and why.startswith(f"ids 2000003-2065538 are 'bob''s subordinate ids ({subuid})"), why
    assert "KIMI_AGENT_SANDBOX_UID" in why
    why = taken_ids(0, 1)
    assert why is not None and why.startswith("uid 0 is the account 'root'"), why
    lone = next((g for g in grp.getgrall() if g.gr_gid >= 1 and _no_account(g.gr_gid)), None)
    if lone is not None:  # a group whose id no account has: its gid is taken all the same
        why = taken_ids(lone.gr_gid, 1)
        assert why is not None and why.startswith(f"gid {lone.gr_gid} is the group {lone.gr_name!r}"), why


def _no_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


def test_a_worker_keeps_no_descriptor_it_inherited_but_its_channel() -> None:
    ours, theirs = socket.socketpair()
    stray_r, stray_w = os.pipe()  # as bwrap's report pipe and the read end of its user-namespace pipe
    worker = subprocess.Popen([sys.executable, "-P", "-m", "kimi_agent.tasks.worker", str(theirs.fileno())],
                              pass_fds=(theirs.fileno(), stray_r), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs.close()
    os.close(stray_r)
    try:
        stray = os.readlink(f"/proc/self/fd/{stray_w}").replace("pipe:", "")
        deadline = time.monotonic() + 30
        while True:  # until it is past its start (it waits on its channel): what it holds then
            held = {int(fd): os.readlink(f"/proc/{worker.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{worker.pid}/fd")}
            if not any(stray in link for link in held.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert worker.poll() is None, "the worker exited"
        assert not [fd for fd, link in held.items() if stray in link], held  # the pipe is gone from it
        assert any(link.startswith("socket:") for fd, link in held.items() if fd > 2), held  # its channel is not
    finally:
        ours.close()  # the runner is gone: the worker exits
        os.close(stray_w)
        assert worker.wait(30) == 3
