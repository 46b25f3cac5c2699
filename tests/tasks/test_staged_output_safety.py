"""What a sandboxed task leaves in its staged folder cannot reach this machine through the runner.

The runner (root, outside the sandbox) moves each staged task folder into `<out>` and writes
result.json, result.txt and report.html there. A task's setup step can plant symbolic links
(`.report.html.part -> ~/.bashrc`), FIFOs (a `run.json` that hangs any reader) and sockets in that
folder, and a set-user-id copy of the shell (the sandbox's files are root's on this machine).
Here they are planted for real: by a setup step inside real bwrap (the key test), and
directly on disk for each layer of the defence: the staged folder is stripped of links and special
files as it moves (`adopt_staged`), every host write goes through a fresh temporary file that
replaces its name, every host read of a sandbox-written file opens regular files only with a
size cap, and the pages escape and check every value a worker sends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.errors import ArtifactError
from kimi_agent.tasks.channel import Channel
from kimi_agent.tasks.disk_use import disk_use
from kimi_agent.tasks.report import write_outputs
from kimi_agent.tasks.run_pages import index_html, run_metadata, task_page_html
from kimi_agent.tasks.runner import (
    RunSettings,
    RunSummary,
    TaskResult,
    adopt_staged,
    keep_interrupted,
    read_result,
    trajectory_problem,
    write_json_atomic,
    write_result,
)
from kimi_agent.tasks.sandbox import probe
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.tree_walk import copy_tree, remove_tree
from kimi_agent.trajectory import read_steps, read_text

PID = os.getpid()


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the body blocks, e.g. opening a FIFO."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _unsafe(folder: Path) -> list[str]:
    """Every entry under `folder` that is a link or neither a regular file nor a folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            mode = os.lstat(Path(dirpath) / name).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                found.append(str((Path(dirpath) / name).relative_to(folder)))
    return found


def _plant(task_dir: Path, outside: Path) -> None:
    """What a malicious setup step leaves: links at every name the runner writes (its fixed temp
    names of old and the final names), a link to a folder outside, a FIFO, a socket, nested too."""
    task_dir.mkdir(parents=True, exist_ok=True)
    for name in (".report.html.part", f".result.json.{PID}.part", f".result.txt.{PID}.part", "report.html"):
        (task_dir / name).symlink_to(outside / f"via{name}")
    (task_dir / "escape").symlink_to(outside, target_is_directory=True)
    os.mkfifo(task_dir / "pipe")
    run_dir = task_dir / "20260101-000000_run"
    (run_dir / "frames").mkdir(parents=True)
    os.mkfifo(run_dir / "run.json")
    os.mkfifo(run_dir / "steps.jsonl")
    (run_dir / "frames" / "up").symlink_to("../../..")
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a socket path has at most 107 bytes
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(f"{short}/s")
        sock.close()
        os.rename(f"{short}/s", run_dir / "sock")
    (run_dir / "frames" / "step_0001.png").write_bytes(b"png")


# ---------------------------------------------------------------- the key test: real bwrap, real runner

@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None, reason="needs Xvfb and Chromium")
@pytest.mark.skipif(probe() is not None, reason=f"bubblewrap cannot run here: {probe()}")
def test_links_and_fifos_planted_by_a_setup_step_write_nothing_outside_out(tmp_path: Path) -> None:
    from kimi_agent.tasks import run_tasks
    from kimi_agent.tasks.suites.solutions import do_nothing_backend

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bashrc").write_text("keep\n", encoding="utf-8")
    out = (tmp_path / "out").resolve()
    # the task's staged folder, as the sandbox sees it (the only folder of this machine it may write)
    find = f"d=$(echo {out}/.workers/w*/tasks/planted)"
    links = "; ".join(f"ln -s {outside}/via{name} $d/{name}" for name in
                      (".report.html.part", f".result.json.{PID}.part", f".result.txt.{PID}.part",
                       f".results.json.{PID}.part", "report.html"))
    plant = (f"{find}; {links}; ln -s {outside}/bashrc $d/bashrc; ln -s {outside} $d/escape; mkfifo $d/pipe; "
             # a set-user-id copy of the shell: owned by the runner's user (root) on this machine
             "cp /bin/sh $d/rootsh; chmod 4755 $d/rootsh; mkdir $d/sg; chmod 2755 $d/sg")
    # after the episode: its run.json and steps.jsonl become FIFOs (a reader on the host would hang)
    fifos = f"{find}; for r in $d/*/; do rm -f $r/run.json $r/steps.jsonl; mkfifo $r/run.json $r/steps.jsonl; done"
    task = {"id": "planted", "instruction": "Do nothing.",
            "config": [{"type": "execute", "parameters": {"command": plant, "shell": True}}],
            "evaluator": {"func": "check_include_exclude",
                          "postconfig": [{"type": "execute", "parameters": {"command": fifos, "shell": True}}],
                          "result": {"type": "vm_command_line", "command": f"{find}; ls -la $d $d/*/",
                                     "shell": True},
                          "expected": {"type": "rule", "rules": {"include": ["pipe", "run.json", "-rwsr-xr-x",
                                                                          "drwxr-sr-x"], "exclude": []}}}}
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "planted.json").write_text(json.dumps(task), encoding="utf-8")
    with deadline(600):
        summary = run_tasks(tasks, do_nothing_backend, RunSettings(workers=1, max_steps=2, out_dir=out),
                            progress=False)
    r = summary.results[0]
    assert (r.status, r.score) == ("success", 1.0), r  # every plant was in place when the task was scored
    assert sorted(p.name for p in outside.iterdir()) == ["bashrc"]  # nothing written through a link
    assert (outside / "bashrc").read_text(encoding="utf-8") == "keep\n"
    task_dir = out / "planted"
    assert _unsafe(task_dir) == []
    for name in ("report.html", "result.json", "result.txt"):
        assert stat.S_ISREG(os.lstat(task_dir / name).st_mode)
    assert "planted: <span class='st'>success</span>" in (task_dir / "report.html").read_text(encoding="utf-8")
    notes = json.loads((task_dir / "result.json").read_text(encoding="utf-8"))["host"]["notes"]
    for removed in (".report.html.part (symbolic link)", "escape (symbolic link)", "pipe (FIFO)",
                    "run.json (FIFO)", "steps.jsonl (FIFO)", "the set-id bits of rootsh (", "the set-id bits of sg ("):
        assert any(removed in note for note in notes), (removed, notes)
    assert stat.S_IMODE(os.stat(task_dir / "rootsh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(task_dir / "sg").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / ".workers").st_mode) == 0o700  # staged files: no one else's to reach
    assert "index.html" in {p.name for p in out.iterdir()}


# ---------------------------------------------------------------- copying a staged folder out

def test_copy_tree_keeps_files_and_folders_only(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("host", encoding="utf-8")
    task_dir = tmp_path / "task"
    _plant(task_dir, outside)
    (task_dir / "dangling").symlink_to(tmp_path / "nowhere")
    (task_dir / "rootsh").write_bytes(b"#!/bin/sh\n")
    (task_dir / "rootsh").chmod(0o6755)
    (task_dir / "20260101-000000_run" / "frames").chmod(0o2750)
    copy = tmp_path / "copy"
    notes = copy_tree(task_dir, copy, max_depth=64, max_entries=1000, max_bytes=1 << 20)
    assert _unsafe(copy) == []
    assert sorted(notes) == sorted([
        f"left out .result.json.{PID}.part (symbolic link)", f"left out .result.txt.{PID}.part (symbolic link)",
        "left out .report.html.part (symbolic link)", "left out report.html (symbolic link)",
        "left out escape (symbolic link)", "left out dangling (symbolic link)", "left out pipe (FIFO)",
        "left out 20260101-000000_run/run.json (FIFO)", "left out 20260101-000000_run/steps.jsonl (FIFO)",
        "left out 20260101-000000_run/sock (socket)", "left out 20260101-000000_run/frames/up (symbolic link)",
        "dropped the set-id bits of rootsh", "dropped the set-id bits of 20260101-000000_run/frames"])
    assert (copy / "20260101-000000_run" / "frames" / "step_0001.png").read_bytes() == b"png"
    assert stat.S_IMODE(os.stat(copy / "rootsh").st_mode) == 0o755  # the rest of the mode is kept
    assert stat.S_IMODE(os.stat(copy / "20260101-000000_run" / "frames").st_mode) == 0o755
    assert (outside / "kept.txt").read_text(encoding="utf-8") == "host"  # a link's target is never touched


def test_copy_tree_stops_at_its_bounds(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "big").write_bytes(b"x" * 3000)
    (src / "b").write_bytes(b"y" * 3000)
    notes = copy_tree(src, tmp_path / "bytes", max_depth=8, max_entries=100, max_bytes=4000)
    sizes = sorted(p.stat().st_size for p in (tmp_path / "bytes").rglob("*") if p.is_file())
    assert sum(sizes) == 4000 and any(n.startswith("cut ") and "at 1000 of its 3000 bytes" in n for n in notes), notes
    deep = src / "d"
    deep.joinpath(*["n"] * 10).mkdir(parents=True)
    notes = copy_tree(src, tmp_path / "deep", max_depth=5, max_entries=100, max_bytes=1 << 20)
    assert notes[-1] == "stopped copying: folders nested more than 5 deep"
    notes = copy_tree(src, tmp_path / "many", max_depth=64, max_entries=3, max_bytes=1 << 20)
    assert notes[-1] == "stopped copying: more than 3 files and folders"
    for i in range(200):
        os.mkfifo(src / f"p{i:03d}")
    notes = copy_tree(src, tmp_path / "fifos", max_depth=64, max_entries=1000, max_bytes=1 << 20)
    assert len(notes) == 51 and notes[-2] == "... and 151 more like these", notes  # 200 notes, one per FIFO
    assert all(n.startswith("left out p") and n.endswith(" (FIFO)") for n in notes[:49] + notes[-1:]), notes


def test_a_tree_deeper_than_any_limit_is_removed_with_one_folder_open_at_a_time(tmp_path: Path) -> None:
    # deeper than PATH_MAX (4096) and than Python's recursion limit: shutil.rmtree raised RecursionError
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    name = "d" * 200
    for _ in range(1500):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    used = disk_use(top, max_entries=10_000, max_depth=64)
    assert used.problem == "folders nested more than 64 deep"  # measured by descriptors: no path is too long
    remove_tree(top)
    assert not top.exists()


def test_adopt_staged_copies_the_folder_and_never_follows_a_staged_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("host", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    staging = tmp_path / "staging"
    _plant(staging / "t1", outside)
    notes = adopt_staged(staging / "t1", out / "t1")
    assert not (staging / "t1").exists() and _unsafe(out / "t1") == []
    assert "left out pipe (FIFO) (staged task folder)" in notes
    # the staged "folder" is itself a link to a folder of this machine: removed, nothing moved or followed
    (staging / "t2").symlink_to(outside, target_is_directory=True)
    notes = adopt_staged(staging / "t2", out / "t2")
    assert not os.path.lexists(out / "t2") and notes == ["the staged task folder was a symbolic link, not a folder: removed"]
    assert sorted(p.name for p in outside.iterdir()) == ["kept.txt"]
    assert adopt_staged(staging / "t3", out / "t3") == []  # nothing staged: nothing to move


def test_a_task_process_left_in_its_staged_folder_cannot_write_into_out(tmp_path: Path) -> None:
    # a process whose working folder is the staged folder (a task's background shell): with a move,
    # what it wrote after the runner had checked the folder landed in <out> (forged scores, set-id files)
    staged = tmp_path / "staging" / "t1"
    staged.mkdir(parents=True)
    (staged / "result.txt").write_text("0\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    lingering = subprocess.Popen(["sh", "-c", "read line; echo 1 > result.txt; cp /bin/sh rootsh; chmod 4755 rootsh; "
                                  "echo done"], cwd=staged, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert adopt_staged(staged, out / "t1") == []
        lingering.communicate("go\n", timeout=30)
    finally:
        lingering.kill()
    assert sorted(p.name for p in (out / "t1").iterdir()) == ["result.txt"]
    assert (out / "t1" / "result.txt").read_text(encoding="utf-8") == "0\n"


def test_keep_interrupted_does_not_hang_on_planted_fifos(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    staged = tmp_path / "staging" / "t1"
    _plant(staged, outside)
    spec = TaskSpec.model_validate({"id": "t1", "instruction": "do it", "evaluator": {"func": "infeasible"}})
    with deadline(20):
        r = keep_interrupted(out, staged, spec, "chrome", worker=0, seconds=1.0)
    assert r.status == "interrupted" and r.path == str(out / "t1")
    assert sorted(p.name for p in outside.iterdir()) == []
    assert _unsafe(out / "t1") == [] and r.host is not None and any("FIFO" in n for n in r.host["notes"])
    on_disk = read_result(out / "t1")
    assert on_disk is not None and on_disk.status == "interrupted"


# ---------------------------------------------------------------- host writes: never through a link

def test_host_writes_replace_links_instead_of_following_them(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    task_dir = out / "t1"
    task_dir.mkdir(parents=True)
    # a link at every temp name the runner ever used and at every final name
    for name in (".report.html.part", f".result.json.{PID}.part", f".result.txt.{PID}.part", "report.html",
                 "result.json", "result.txt"):
        (task_dir / name).symlink_to(outside / name)
    for name in (f".results.json.{PID}.part", ".index.html.part", ".results.csv.part", "index.html"):
        (out / name).symlink_to(outside / name)
    r = TaskResult(task_id="t1", instruction="do it", status="success", score=1.0, path=str(task_dir))
    write_result(out, r)
    write_outputs(RunSummary(out, [r]))
    assert list(outside.iterdir()) == []
    for path in (task_dir / "report.html", task_dir / "result.json", task_dir / "result.txt", out / "index.html",
                 out / "results.json", out / "results.csv"):
        assert stat.S_ISREG(os.lstat(path).st_mode), path
    assert (task_dir / "result.txt").read_text(encoding="utf-8") == "1\n"
    assert oct(os.stat(task_dir / "result.json").st_mode & 0o777) == "0o644"
    assert not [p for p in task_dir.iterdir() if p.name.endswith(".part") and not p.is_symlink()]  # no temp left
    write_json_atomic(out / "x.json", {"a": 1})
    assert json.loads((out / "x.json").read_text(encoding="utf-8")) == {"a": 1}


def test_a_task_folder_that_is_a_link_is_replaced_not_written_into(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "t1").symlink_to(out / "t0")  # inside out, so _task_dir accepts the name; still a link
    (out / "t0").mkdir()
    write_result(out, TaskResult(task_id="t1", status="fail", score=0.0))
    assert stat.S_ISDIR(os.lstat(out / "t1").st_mode) and list((out / "t0").iterdir()) == []


def test_episode_files_placed_in_the_task_folder_replace_links(tmp_path: Path) -> None:
    from kimi_agent.artifacts import _place_task_files, place

    outside = tmp_path / "outside"
    outside.mkdir()
    task_dir = tmp_path / "t1"
    run_dir = task_dir / "20260101-000000_run"
    run_dir.mkdir(parents=True)
    (run_dir / "steps.jsonl").write_text('{"step": 1, "obs_before": {"file": "frames/a.png"}}\n', encoding="utf-8")
    (run_dir / "recording.mp4").write_bytes(b"mp4")
    for name in ("traj.jsonl", "recording.mp4", f".traj.jsonl.{PID}.part", f".recording.mp4.{PID}.part"):
        (task_dir / name).symlink_to(outside / name)
    _place_task_files(run_dir, task_dir, {"traj.jsonl": run_dir / "traj.jsonl",
                                          "recording.mp4": run_dir / "recording.mp4"})
    assert list(outside.iterdir()) == []
    assert (task_dir / "recording.mp4").read_bytes() == b"mp4" and not (task_dir / "recording.mp4").is_symlink()
    traj = [json.loads(x) for x in (task_dir / "traj.jsonl").read_text(encoding="utf-8").splitlines()]
    assert traj[0]["screenshot_file"] == "20260101-000000_run/frames/a.png"
    (run_dir / "link.mp4").symlink_to(outside / "secret")
    (outside / "secret").write_bytes(b"secret")
    with pytest.raises(OSError, match="not a regular file"):
        place(run_dir / "link.mp4", task_dir / "recording.mp4")
    assert (task_dir / "recording.mp4").read_bytes() == b"mp4"


# ---------------------------------------------------------------- host reads: regular files, bounded

def test_read_text_reads_regular_files_only_and_bounded(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "real.txt").write_text("a\r\nb\n", encoding="utf-8")
    (tmp_path / "link").symlink_to(tmp_path / "real.txt")
    with deadline(10), pytest.raises(ArtifactError, match="fifo: not a regular file"):
        read_text(tmp_path / "fifo")
    with pytest.raises(ArtifactError, match="a symbolic link, not a file"):
        read_text(tmp_path / "link")
    assert read_text(tmp_path / "real.txt") == "a\nb\n"  # newlines as Path.read_text gives them
    with pytest.raises(ArtifactError, match="larger than"):
        read_text(tmp_path / "real.txt", max_bytes=3)
    with pytest.raises(ArtifactError, match="missing: No such file"):
        read_text(tmp_path / "missing")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ArtifactError, match=r"not UTF-8 text \(byte 3\)"):
        read_text(tmp_path / "latin.txt")
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "steps.jsonl")
    with deadline(10), pytest.raises(ArtifactError, match="not a regular file"):
        read_steps(run)


def test_the_index_skips_a_fifo_run_json_and_a_trajectory_outside_the_task(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "run").mkdir(parents=True)
    (outside / "run" / "run.json").write_text(json.dumps({"backend": "LEAKED", "model": "LEAKED"}))
    out = tmp_path / "out"
    run_dir = out / "t1" / "20260101-000000_run"
    run_dir.mkdir(parents=True)
    os.mkfifo(run_dir / "run.json")
    (out / "t2" / "r").mkdir(parents=True)
    (out / "t2" / "r" / "run.json").write_text("[" * 100_000 + "]" * 100_000)  # deeper than json can go
    results = [TaskResult(task_id="t1", status="success", score=1.0, trajectory="t1/20260101-000000_run"),
               TaskResult(task_id="t2", status="success", score=1.0, trajectory="t2/r"),
               TaskResult(task_id="t3", status="success", score=1.0, trajectory="../outside/run")]
    with deadline(20):
        meta = run_metadata(RunSummary(out, results))
        page = index_html(RunSummary(out, results))
    assert meta["model"] == "no episode ran" and "LEAKED" not in page


# ---------------------------------------------------------------- the pages and the worker's result

@pytest.mark.parametrize("trajectory", ["javascript:alert(1)", "t1/javascript:alert(1)", "/etc", "t1/../..",
                                        "t1", "t2/run", "t1/a\\b", "t1/./x", "t1/<b>"])
def test_trajectory_problem_refuses_all_but_a_folder_inside_the_task(trajectory: str) -> None:
    assert trajectory_problem("t1", trajectory) is not None
    assert trajectory_problem("t1", "t1/20260101-000000_open-it-2") is None


def test_worker_values_are_escaped_and_bad_trajectories_not_linked(tmp_path: Path) -> None:
    xss = "<img src=x onerror=alert(1)>"
    out = tmp_path / "out"
    (out / "t1" / "run").mkdir(parents=True)
    (out / "t1" / "run" / "report.html").write_text("<html></html>")
    evaluation = {"score": xss, "note": xss, "metrics": [
        {"func": xss, "score": xss, "result": xss, "expected": xss, "note": xss},
        {"func": "exact_match", "score": 0.5, "result": "a", "expected": "a", "note": None}, "not a metric"]}
    r = TaskResult(task_id="t1", status="fail", score=0.0, evaluation=evaluation, trajectory="javascript:alert(1)",
                   refusals=[{"step": xss, "risk": xss, "reason": xss}], episode_status=xss, domain=xss)
    page = task_page_html(out, r)
    index = index_html(RunSummary(out, [r]))
    for html_text in (page, index):
        assert "<img" not in html_text and "javascript:" not in html_text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<td>0.5</td>" in page
    good = r.model_copy(update={"trajectory": "t1/run", "evaluation": {"score": 1, "metrics": []}})
    assert "<b>1</b>" in task_page_html(out, good)
    assert "href='run/report.html'" in task_page_html(out, good)
    assert 'href="t1/run/report.html"' in index_html(RunSummary(out, [good]))


def test_the_pool_drops_a_bad_trajectory_and_strips_the_staged_folder(tmp_path: Path) -> None:
    from kimi_agent.tasks.worker_pool import Worker, WorkerPool

    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    pool = WorkerPool(RunSettings(out_dir=out), lambda *a: None, sandbox=False, on_event=lambda *a: None)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ours, theirs = socket.socketpair()
    try:
        w = Worker(0, proc, Channel(ours), tmp_path / "w0", ready=True)
        spec = TaskSpec.model_validate({"id": "t1", "instruction": "do it", "evaluator": {"func": "infeasible"}})
        results: dict[str, TaskResult] = {}
        for trajectory, kept in (("javascript:alert(1)", None), ("t1/20260101-000000_run", "t1/20260101-000000_run")):
            _plant(w.staging / "t1", outside)
            w.task_id = "t1"
            sent = TaskResult(task_id="t1", status="success", score=1.0, trajectory=trajectory,
                              host={"notes": ["forged by the worker"]})
            pool._handle(w, {"type": "done", "result": sent.model_dump_json()}, deque(), results, {"t1": spec},
                         {"t1": "chrome"})
            r = results["t1"]
            assert r.trajectory == kept and r.host is not None
            assert "forged by the worker" not in r.host["notes"] and any("pipe (FIFO)" in n for n in r.host["notes"])
            assert any("trajectory was dropped" in n for n in r.host["notes"]) == (kept is None)
            assert _unsafe(out / "t1") == [] and list(outside.iterdir()) == []
            shutil.rmtree(w.staging, ignore_errors=True)
    finally:
        proc.kill()
        proc.wait(10)
        ours.close()
        theirs.close()
