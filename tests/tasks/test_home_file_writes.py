"""Setup steps that write at a task file's path stay inside the worker's home and never write
through a symlink, also outside the sandbox (red-team finding L2): `download`'s `files[i].path`
and `execute`'s `stdout`/`stderr`. Real files, real symlinks, a real `LocalHost` and its commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kimi_agent.errors import SetupStepError
from kimi_agent.tasks.evaluate import run_steps
from kimi_agent.tasks.home_files import home_relative
from kimi_agent.tasks.host import LocalHost
from kimi_agent.tasks.loader import load_task
from kimi_agent.tasks.spec import SetupStep


@pytest.fixture
def world(tmp_path: Path) -> tuple[LocalHost, Path, Path]:
    """(host, its home, a folder outside the home holding `source.txt` and `keep.txt`)."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (outside / "source.txt").write_text("from the task")
    (outside / "keep.txt").write_text("the host's own file")
    return LocalHost(SimpleNamespace(display=":99"), home), home.resolve(), outside  # type: ignore[arg-type]


def _download(host: LocalHost, source: Path, *paths: str) -> None:
    files = [{"url": source.as_uri(), "path": p} for p in paths]
    run_steps(host, [SetupStep(type="sleep", parameters={"seconds": 0}),
                     SetupStep(type="download", parameters={"files": files})])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("path", ["/home/user/../dl-escape.txt", "/home/user/a/../../dl-escape.txt", "../dl-escape.txt",
                                  "~/../dl-escape.txt", "/tmp/dl-abs.txt", "/home/user", "/home/user/.."])
def test_a_download_outside_the_home_is_refused_naming_the_step_and_path(
        world: tuple[LocalHost, Path, Path], path: str) -> None:
    host, home, outside = world
    with pytest.raises(SetupStepError) as err:
        _download(host, outside / "source.txt", "/home/user/ok.txt", path)
    assert str(err.value) == f"config[1] download: files[1].path {path!r} is outside the home folder"
    assert not (home.parent / "dl-escape.txt").exists() and not Path("/tmp/dl-abs.txt").exists()
    assert _files(home) == ["ok.txt"]  # the file before it was written


def test_a_download_does_not_write_through_a_symlink(world: tuple[LocalHost, Path, Path]) -> None:
    host, home, outside = world
    (home / "link.txt").symlink_to(outside / "keep.txt")
    (home / "new-link.txt").symlink_to(outside / "created.txt")  # dangling: open() would create its target
    for name in ("link.txt", "new-link.txt"):
        with pytest.raises(SetupStepError, match=rf"^config\[1\] download: files\[0\]\.path "
                                                 rf"'/home/user/{name}' is a symlink$"):
            _download(host, outside / "source.txt", f"/home/user/{name}")
    assert (outside / "keep.txt").read_text() == "the host's own file"
    assert _files(outside) == ["keep.txt", "source.txt"]


def test_a_download_does_not_make_or_enter_folders_through_a_symlink(world: tuple[LocalHost, Path, Path]) -> None:
    host, home, outside = world
    (home / "Desktop").symlink_to(outside, target_is_directory=True)
    (home / "file").write_text("x")
    for path, on_the_way in (("/home/user/Desktop/x.txt", "Desktop"), ("~/Desktop/new/deeper/x.txt", "Desktop"),
                             ("/home/user/file/x.txt", "file")):
        with pytest.raises(SetupStepError, match=rf"^config\[1\] download: files\[0\]\.path '{path}': "
                                                 rf"'{on_the_way}' on the way is a symlink or not a folder$"):
            _download(host, outside / "source.txt", path)
    assert _files(outside) == ["keep.txt", "source.txt"]  # no x.txt, no new/deeper made outside


def test_a_hard_link_at_the_target_is_replaced_not_written_into(world: tuple[LocalHost, Path, Path]) -> None:
    host, home, outside = world
    os.link(outside / "keep.txt", home / "linked.txt")
    _download(host, outside / "source.txt", "/home/user/linked.txt")
    assert (home / "linked.txt").read_text() == "from the task"
    assert (outside / "keep.txt").read_text() == "the host's own file"


def test_downloads_inside_the_home_make_folders_and_replace_files(world: tuple[LocalHost, Path, Path]) -> None:
    host, home, outside = world
    (home / "old.txt").write_text("old")
    _download(host, outside / "source.txt", "/home/user/Desktop/a/b.txt", "~/old.txt", "setup.sh",
              "/home/user/x/../y.txt")
    assert {p: (home / p).read_text() for p in ("Desktop/a/b.txt", "old.txt", "setup.sh", "y.txt")} == dict.fromkeys(
        ("Desktop/a/b.txt", "old.txt", "setup.sh", "y.txt"), "from the task")
    assert not any(p.name.startswith(".kimi-write-") for p in home.rglob("*"))  # no temporary file left


def test_execute_output_files_stay_in_the_home_and_off_symlinks(world: tuple[LocalHost, Path, Path]) -> None:
    host, home, outside = world
    (home / "out.txt").symlink_to(outside / "keep.txt")
    for stdout, why in (("/home/user/out.txt", "'/home/user/out.txt' is a symlink"),
                        ("../escape.txt", "'../escape.txt' is outside the home folder")):
        with pytest.raises(SetupStepError, match=rf"^config\[0\] execute: stdout file {why}$"):
            run_steps(host, [SetupStep(type="execute", parameters={"command": ["echo", "hi"], "stdout": stdout})])
    assert _files(outside) == ["keep.txt", "source.txt"]
    assert (outside / "keep.txt").read_text() == "the host's own file"
    run_steps(host, [SetupStep(type="execute", parameters={"command": ["echo", "hi"], "stdout": "~/logs/o.txt"})])
    assert (home / "logs" / "o.txt").read_text() == "hi\n"


def _task_with_downloads(*paths: str) -> dict[str, Any]:
    files = [{"url": "http://127.0.0.1:8000/a", "path": p} for p in paths]
    return {"id": "t", "instruction": "x", "config": [{"type": "download", "parameters": {"files": files}}],
            "evaluator": {"func": "exact_match", "result": {"type": "rule", "rules": {"expected": 1}},
                          "expected": {"type": "rule", "rules": {"expected": 1}}}}


def test_a_download_path_outside_the_home_makes_the_file_invalid_at_load(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_task_with_downloads("/home/user/ok.txt", "/home/user/../x")))
    t = load_task(path)
    assert (t.status, t.error) == ("invalid", f"{path}: config[0].parameters.files[1].path (download): "
                                              "'/home/user/../x' is outside the home folder (/home/user)")
    path.write_text(json.dumps(_task_with_downloads("/home/user/ok.txt", "eval.sh", "~/Desktop/a.pdf")))
    assert load_task(path).status == "runnable"


def test_home_relative_paths() -> None:
    assert [str(home_relative(p)) for p in ("/home/user/a/b", "~/a", "a/./b", "/home/user/a/../b", "~user/x")] == [
        "a/b", "a", "a/b", "b", "~user/x"]
    assert [home_relative(p) for p in ("/home/userx/a", "/etc/passwd", "~", "/home/user/", "a/../..")] == [None] * 5
