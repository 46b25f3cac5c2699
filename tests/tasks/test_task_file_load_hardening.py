"""Hostile task files become one `invalid` task naming the file and the field, quickly, and never
stop the other files from loading (red-team findings H1, H4, H5, H6, M2, M3, L3)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.tasks import setup_steps
from kimi_agent.tasks.loader import load_task, load_tasks
from kimi_agent.tasks.setup_steps import MAX_APT_PACKAGES, _split_shell

RULE = {"type": "rule", "rules": {"expected": 1}}


def _task(task_id: str = "t1", *, config: list[dict[str, Any]] | None = None,
          **evaluator: Any) -> dict[str, Any]:
    ev = {"func": "exact_match", "result": RULE, "expected": RULE, **evaluator}
    return {"id": task_id, "instruction": "do it", "config": config or [], "evaluator": ev}


def _step(kind: str, **parameters: Any) -> dict[str, Any]:
    return {"type": kind, "parameters": parameters}


def _write(tmp_path: Path, data: dict[str, Any], name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _invalid(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, str]:
    """Load one file that must be invalid: (its path, its error)."""
    path = _write(tmp_path, data)
    t = load_task(path)
    assert t.status == "invalid", t
    assert t.error is not None and t.error.startswith(f"{path}: ")
    return path, t.error


# ---------------------------------------------------------------- H1: options and vm_command_line types

@pytest.mark.parametrize("options", [5, True, "ab", 1.5])
def test_options_of_the_wrong_type_make_the_file_invalid(tmp_path: Path, options: object) -> None:
    path, error = _invalid(tmp_path, _task(options=options))
    assert error == f"{path}: evaluator.options: Input should be a valid list"


def test_an_options_entry_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(options=[5]))
    assert error == f"{path}: evaluator.options.0: Input should be a valid dictionary"


@pytest.mark.parametrize(("command", "kind"), [(5, "int"), (None, "null"), ({"a": 1}, "dict"),
                                               (["echo", {"a": 1}], "a list holding dict")])
def test_a_vm_command_line_command_of_the_wrong_type_is_named(tmp_path: Path, command: object, kind: str) -> None:
    path, error = _invalid(tmp_path, _task(result={"type": "vm_command_line", "command": command}))
    assert error == (f"{path}: evaluator.result[0].command (vm_command_line): "
                     f"must be a string or a list of strings, not {kind}")


def test_a_bad_getter_in_expected_is_named_by_its_place(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(func=["exact_match", "exact_match"], result=[RULE, RULE],
                                           expected=[RULE, {"type": "vm_command_line", "command": " "}]))
    assert error == f"{path}: evaluator.expected[1].command (vm_command_line): is empty"


def test_a_list_directory_path_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(result={"type": "list_directory", "path": 5}))
    assert error == f"{path}: evaluator.result[0].path (list_directory): must be a non-empty string, not int"


def test_one_bad_file_among_three_leaves_two_runnable(tmp_path: Path) -> None:
    _write(tmp_path, _task("good-a"), "a.json")
    bad = _write(tmp_path, _task("bad", options=5), "b.json")
    _write(tmp_path, _task("good-c"), "c.json")
    tasks = load_tasks(tmp_path)
    assert [t.status for t in tasks] == ["runnable", "invalid", "runnable"]
    assert [t.id for t in tasks.runnable] == ["good-a", "good-c"]
    assert tasks.invalid[0].error == f"{bad}: evaluator.options: Input should be a valid list"


# ---------------------------------------------------------------- H4: linear command splitting

def test_a_long_run_of_blanks_in_a_command_loads_quickly(tmp_path: Path) -> None:
    """The regex split took 83 s on this file; splitting on `&&` is linear."""
    commands = ["echo hi" + " " * 200_000 + "x", "echo hi" + " " * 200_000 + "&& x",
                "apt " + "x" * 200_000 + "\nz"]  # a long word then a newline: the apt pattern backtracked
    for i, command in enumerate(commands):
        path = _write(tmp_path, _task(config=[_step("execute", command=command, shell=True)]), f"{i}.json")
        start = time.monotonic()
        t = load_task(path)
        assert t.status == "runnable", t
        assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("command", [
    "echo {CLIENT_PASSWORD} | sudo -S apt update -y && echo {CLIENT_PASSWORD} | sudo -S apt install jq -y",
    "  cd /home/user  &&  ls -la&&pwd  ", "a &&&& b", "&& a &&", "x\t&&\ny", "no separator", "", "  "])
def test_splitting_matches_the_regex_split_on_normal_commands(command: str) -> None:
    assert _split_shell(command) == [s for s in re.split(r"\s*&&\s*", command) if s.strip()]


# ---------------------------------------------------------------- H5: apt package lists

def _count_dpkg_queries(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: Any) -> Any:
        calls.append(list(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(setup_steps.subprocess, "run", run)
    return calls


def test_apt_packages_are_deduplicated_and_queried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"kimi-no-such-package-{i}" for i in range(50)]
    command = "sudo apt install -y " + " ".join(names * 3) + " && apt-get install " + " ".join(names)
    calls = _count_dpkg_queries(monkeypatch)
    t = load_task(_write(tmp_path, _task(config=[_step("execute", command=command, shell=True)])))
    assert t.status == "unsupported"
    assert t.reasons == tuple(f"apt package {n!r} not installed" for n in names)
    assert len(calls) <= 1 and all(c[0] == "dpkg-query" for c in calls)  # none when already listed


def test_installed_programs_and_packages_still_satisfy_apt(tmp_path: Path) -> None:
    command = "echo {CLIENT_PASSWORD} | sudo -S apt install bash -y && sudo apt-get install -y kimi-no-such-package"
    t = load_task(_write(tmp_path, _task(config=[_step("execute", command=command, shell=True)])))
    assert (t.status, t.reasons) == ("unsupported", ("apt package 'kimi-no-such-package' not installed",))


def test_too_many_apt_packages_make_the_file_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    command = "apt install " + " ".join(f"p{i}" for i in range(MAX_APT_PACKAGES + 1))
    calls = _count_dpkg_queries(monkeypatch)
    path, error = _invalid(tmp_path, _task(config=[_step("execute", command=command, shell=True)]))
    assert error == (f"{path}: config[0].parameters.command (execute): "
                     f"names more than {MAX_APT_PACKAGES} apt packages")
    assert calls == []


def _glob_apt_command(step: int) -> str:
    """An `apt install` of MAX_APT_PACKAGES names: half dpkg patterns, half packages that do not exist."""
    half = MAX_APT_PACKAGES // 2
    return ("sudo apt install -y " + " ".join(f"zz{step}q{i}*" for i in range(half)) + " "
            + " ".join(f"kimi-no-such-package-{step}-{i}" for i in range(half)))


def test_a_file_at_the_step_and_package_caps_lists_the_packages_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # N4: each step ran its own dpkg-query and matched every name against every installed package
    # (25 s for this 1.2 MB file); now one listing serves every step and each name is a set lookup
    steps = [_step("execute", command=_glob_apt_command(i), shell=True) for i in range(100)]
    data = _task(config=steps, postconfig=[_step("execute", command=_glob_apt_command(100 + i), shell=True)
                                           for i in range(100)])
    monkeypatch.setattr(setup_steps, "_dpkg_listing", None)
    calls = _count_dpkg_queries(monkeypatch)
    t = load_task(_write(tmp_path, data))
    assert t.status == "unsupported" and len(t.reasons) == 200 * MAX_APT_PACKAGES
    assert t.reasons[0] == "apt package 'zz0q0*' not installed (a pattern: only exact package names are checked)"
    assert t.reasons[-1] == "apt package 'kimi-no-such-package-199-99' not installed"
    assert len(calls) == 1 and calls[0][0] == "dpkg-query"


def test_an_apt_pattern_is_not_expanded(tmp_path: Path) -> None:
    # apt(8) has read names literally since 1.9.6: `bas*` is no package even where bash is installed
    t = load_task(_write(tmp_path, _task(config=[_step("execute", command="sudo apt install 'bas*' bash", shell=True)])))
    assert (t.status, t.reasons) == ("unsupported", (
        "apt package 'bas*' not installed (a pattern: only exact package names are checked)",))


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v dpkg-query"], capture_output=True).returncode != 0,
                    reason="no dpkg here")
def test_packages_without_a_program_are_found_by_exact_name_and_arch(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    status = tmp_path / "status"
    status.write_text("a")
    monkeypatch.setattr(setup_steps, "DPKG_STATUS", status)  # stands in for dpkg's own, to see a change
    monkeypatch.setattr(setup_steps, "_dpkg_listing", None)
    calls = _count_dpkg_queries(monkeypatch)
    command = f"apt-get install -y libc6 libc6:{arch} && apt install base-files"
    for name in ("a.json", "b.json"):
        t = load_task(_write(tmp_path, _task(config=[_step("execute", command=command, shell=True)]), name))
        assert (t.status, t.reasons) == ("runnable", ()), t
    assert len(calls) == 1
    status.write_text("ab")  # dpkg installed or removed something: listed again
    assert load_task(_write(tmp_path, _task(config=[_step("execute", command=command, shell=True)]))).status == "runnable"
    assert len(calls) == 2


def test_too_many_setup_steps_make_the_file_invalid(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(config=[_step("sleep", seconds=0)] * 101))
    assert error == f"{path}: config: List should have at most 100 items after validation, not 101"


# ---------------------------------------------------------------- H6 and L3: waits and numbers

@pytest.mark.parametrize(("step", "message"), [
    (_step("sleep", seconds=1e9), "seconds: Input should be less than or equal to 600"),
    (_step("sleep", seconds=1e308), "seconds: Input should be less than or equal to 600"),
    (_step("sleep", seconds=-1), "seconds: Input should be greater than or equal to 0"),
    (_step("sleep", seconds="1e9"), "seconds: Input should be a valid number"),
    (_step("sleep", seconds=True), "seconds: Input should be a valid number"),
    (_step("execute", command="true", timeout=1e308), "timeout: Input should be less than or equal to 600"),
    (_step("execute", command="true", timeout=0), "timeout: Input should be greater than 0"),
    (_step("command", command="true", timeout=601), "timeout: Input should be less than or equal to 600"),
    (_step("execute_with_verification", command="true", max_wait_time=1e9),
     "max_wait_time: Input should be less than or equal to 600"),
    (_step("execute_with_verification", command="true", check_interval=-1),
     "check_interval: Input should be greater than 0"),
    (_step("execute_with_verification", command="true", check_interval=1e308),
     "check_interval: Input should be less than or equal to 60"),
    (_step("update_browse_history", history=[{"url": "a", "visit_time_from_now_in_seconds": 1e12}]),
     "history.0.visit_time_from_now_in_seconds: Input should be less than or equal to 3153600000"),
    (_step("update_browse_history", history=[{"url": "a", "visit_time_from_now_in_seconds": -5}]),
     "history.0.visit_time_from_now_in_seconds: Input should be greater than or equal to 0"),
])
def test_waits_out_of_bounds_make_the_file_invalid(tmp_path: Path, step: dict[str, Any], message: str) -> None:
    path, error = _invalid(tmp_path, _task(config=[step]))
    assert error == f"{path}: config[0].parameters ({step['type']}): {message}"


def test_waits_in_bounds_load(tmp_path: Path) -> None:
    steps = [_step("sleep", seconds=600), _step("sleep", seconds=0), _step("sleep", seconds=15),
             _step("execute", command="true", timeout=600),
             _step("execute_with_verification", command="true", max_wait_time=600, check_interval=60),
             _step("update_browse_history", history=[{"url": "a", "visit_time_from_now_in_seconds": 12400}]),
             _step("execute", command="true", shell="true")]  # 10 real files write "shell": "true"
    t = load_task(_write(tmp_path, _task(config=steps)))
    assert (t.status, t.error) == ("runnable", None)


def test_a_bad_wait_in_postconfig_is_named_by_its_place(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(postconfig=[_step("sleep", seconds=1), _step("sleep", seconds=1e9)]))
    assert error == f"{path}: evaluator.postconfig[1].parameters (sleep): seconds: Input should be less than or equal to 600"


def test_proxy_must_be_a_boolean(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, {**_task(), "proxy": "yes"})
    assert error == f"{path}: proxy: Input should be a valid boolean"


# ---------------------------------------------------------------- M2 and L3: NUL bytes and empty commands

@pytest.mark.parametrize(("step", "message"), [
    (_step("launch", command=["echo", "a\0b"]), "command: Value error, word 1 contains a NUL byte"),
    (_step("execute", command="echo a\0b", shell=True), "command: Value error, contains a NUL byte"),
    (_step("execute", command="true", stdout="/home/user/a\0b"), "stdout: Value error, contains a NUL byte"),
    (_step("download", files=[{"url": "file:///x", "path": "/home/user/a\0b"}]),
     "files.0.path: Value error, contains a NUL byte"),
    (_step("open", path="/home/user/a\0b"), "path: Value error, contains a NUL byte"),
    (_step("activate_window", window_name="a\0b"), "window_name: Value error, contains a NUL byte"),
    (_step("launch", command=[]), "command: Value error, is empty"),
    (_step("execute", command="  ", shell=True), "command: Value error, is empty"),
])
def test_nul_bytes_and_empty_commands_make_the_file_invalid(tmp_path: Path, step: dict[str, Any],
                                                            message: str) -> None:
    path, error = _invalid(tmp_path, _task(config=[step]))
    assert error == f"{path}: config[0].parameters ({step['type']}): {message}"


def test_a_nul_byte_in_a_vm_command_line_command_is_named(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(result={"type": "vm_command_line", "command": ["echo", "a\0b"]}))
    assert error == f"{path}: evaluator.result[0].command (vm_command_line): contains a NUL byte"


# ---------------------------------------------------------------- M3: unsplittable commands name the step

def test_an_unsplittable_apt_command_names_the_step_and_field(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(config=[_step("sleep", seconds=1),
                                                   _step("execute", command="sudo apt install 'x", shell=True)]))
    assert error == (f"{path}: config[1].parameters.command (execute): apt segment \"sudo apt install 'x\" "
                     "cannot be split into words (No closing quotation)")


def test_an_unsplittable_command_names_the_step_and_field(tmp_path: Path) -> None:
    path, error = _invalid(tmp_path, _task(postconfig=[_step("launch", command="echo 'open")]))
    assert error == (f"{path}: evaluator.postconfig[0].parameters.command (launch): \"echo 'open\" "
                     "cannot be split into words (No closing quotation)")


def test_notes_in_the_evaluator_and_a_list_of_sources_load_as_osworld_reads_them(tmp_path: Path) -> None:
    # two real OSWorld files (7ae48c60: evaluator._config_note; ea98c5d7: source as a list), which OSWorld ignores
    data = {**_task(_config_note="the expected value was checked by hand"),
            "source": ["https://support.example.com/a", "https://forum.example.com/b"]}
    t = load_task(_write(tmp_path, data))
    assert t.status == "runnable", t
    assert t.spec is not None and t.spec.source == ["https://support.example.com/a", "https://forum.example.com/b"]


@pytest.mark.parametrize(("getter", "field"), [
    ({"type": "page_info", "url": 5}, "url (page_info): must be a URL (a non-empty string without NUL bytes), not int"),
    ({"type": "page_info"}, "url (page_info): must be a URL (a non-empty string without NUL bytes), not null"),
    ({"type": "pdf_from_url", "path": ""}, "path (pdf_from_url): must be a URL (a non-empty string without NUL "
                                            "bytes), not an empty string"),
    ({"type": "rule_relativeTime", "rules": None}, "rules (rule_relativeTime): must be an object with relativeTime "
                                                   "and expected"),
    ({"type": "rule_relativeTime", "rules": {"relativeTime": {"from": 3}, "expected": {}}},
     'rules.relativeTime (rule_relativeTime): must be an object with a "from" string such as "tomorrow"'),
    ({"type": "rule_relativeTime", "rules": {"relativeTime": {"from": "tomorrow"}, "expected": []}},
     "rules.expected (rule_relativeTime): must be an object"),
])
def test_page_and_relative_time_getters_of_the_wrong_shape_are_named(tmp_path: Path, getter: dict[str, Any],
                                                                     field: str) -> None:
    path, error = _invalid(tmp_path, _task(expected=getter))
    assert error == f"{path}: evaluator.expected[0].{field}", error


@pytest.mark.parametrize(("pattern", "said"), [
    ("(", "'(' is not a valid regex: missing ), unterminated subpattern at position 0"),
    ("a{4294967294}", "'a{4294967294}' "),  # re refuses it, or its unrolled size is over the bound
    (5, "must be a string"),
])
def test_a_url_pattern_that_is_no_usable_regex_makes_the_file_invalid(tmp_path: Path, pattern: object,
                                                                      said: str) -> None:
    path, error = _invalid(tmp_path, _task(func="is_expected_url_pattern_match",
                                           expected={"type": "rule", "rules": {"expected": ["ok", pattern]}}))
    prefix = f"{path}: evaluator.expected[0].rules.expected[1] (is_expected_url_pattern_match): "
    assert error.startswith(prefix) and said in error, error
