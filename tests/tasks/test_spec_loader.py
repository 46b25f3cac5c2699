"""Task specs and the loader: the real OSWorld Chrome files, normalization, errors that name file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kimi_agent.errors import TaskUnsupportedError
from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.context import HostPaths
from kimi_agent.tasks.registry import GETTERS, METRICS, SETUP_STEPS
from kimi_agent.tasks.setup_steps import ExecuteParams, _check_command, _localize_shell
from kimi_agent.tasks.spec import EvaluatorSpec, TaskSpec
from kimi_agent.tasks.suites import CHROME_SUITE

CHROME = Path(__file__).parents[1] / "fixtures" / "osworld" / "chrome"
JQ_REASON = () if shutil.which("jq") else ("apt package 'jq' not installed",)

# The exact classification of every real OSWorld Chrome file we carry (offline).
EXPECTED = {
    "030eeff7-b492-4218-b312-701ec99ee0cc": ("runnable", ()),
    "06fe7178-4491-4589-810f-2e2bc9502122": ("unsupported", (
        "network: chrome_open_tabs needs https://www.lonelyplanet.com",
        "network: chrome_open_tabs needs https://www.airbnb.com",
        "network: chrome_open_tabs needs https://www.tripadvisor.com")),
    "2ae9ba84-3a0d-4d4c-8338-3a1478dc5fe3": ("runnable", ()),
    "3299584d-8f11-4457-bf4c-ce98f7600250": ("unsupported" if JQ_REASON else "runnable", JQ_REASON),
    "3720f614-37fd-4d04-8a6b-76f54f8c222d": ("runnable", ()),
    "480bcfea-d68f-4aaa-a0a9-2589ef319381": ("runnable", ()),
    "7a5a7856-f1b6-42a4-ade9-1ca81ca0f263": ("unsupported", (
        "network: chrome_open_tabs needs https://blog.eleuther.ai/rotary-embeddings/",
        "network: chrome_open_tabs needs https://jalammar.github.io/illustrated-transformer/")),
    "9656a811-9b5b-4ddf-99c7-5117bcef0626": ("unsupported" if JQ_REASON else "runnable", JQ_REASON),
    "af630914-714e-4a24-a7bb-f9af687d3b91": ("runnable", ()),
    "bb5e4c0d-f964-439c-97b6-bdb9747de3f4": ("runnable", ()),
}


def test_every_real_chrome_file_is_classified_exactly() -> None:
    tasks = load_tasks(CHROME)
    assert len(tasks) == len(EXPECTED) == len(list(CHROME.glob("*.json")))
    got = {t.id: (t.status, t.reasons) for t in tasks}
    assert got == EXPECTED
    assert all(t.spec is not None and t.error is None for t in tasks)


def test_network_tasks_become_runnable_when_allowed() -> None:
    tasks = load_tasks(CHROME, allow_network=True)
    assert tasks.by_id("06fe7178").status == "runnable"
    assert tasks.by_id("7a5a7856").status == "runnable"


def test_builtin_suite_is_all_runnable() -> None:
    tasks = load_tasks(CHROME_SUITE)
    assert len(tasks) == 10
    assert [t.id for t in tasks.runnable] == [t.id for t in tasks]


def test_taskset_is_a_sliceable_view() -> None:
    tasks = load_tasks([CHROME / "030eeff7-b492-4218-b312-701ec99ee0cc.json", CHROME])
    assert len(tasks) == 11
    head = tasks[1:3]
    assert type(head) is type(tasks) and [t.id[:8] for t in head] == ["030eeff7", "06fe7178"]
    assert tasks[0].spec is not None and tasks[0].spec.evaluator.func == ["exact_match"]
    assert len(tasks.unsupported) == (4 if JQ_REASON else 2)


def test_str_or_list_fields_normalize_in_one_place() -> None:
    single = EvaluatorSpec.model_validate({"func": "exact_match", "result": {"type": "profile_name"},
                                           "expected": {"type": "rule", "rules": {"expected": "x"}}})
    assert single.func == ["exact_match"] and len(single.result) == len(single.expected) == len(single.options) == 1
    assert single.options == [{}]
    multi = EvaluatorSpec.model_validate({
        "func": ["match_in_list", "is_expected_url_pattern_match"], "conj": "or",
        "result": [{"type": "default_search_engine"}, {"type": "active_url_from_accessTree", "goto_prefix": ""}],
        "expected": [{"type": "rule", "rules": {"expected": ["Bing"]}}, {"type": "rule", "rules": {"expected": ["x"]}}],
        "options": [None, {}]})
    assert multi.options == [{}, {}] and multi.conj == "or"
    assert multi.result[1] is not None and multi.result[1].params == {"goto_prefix": ""}
    no_expected = EvaluatorSpec.model_validate({"func": ["a", "b"], "result": [{"type": "x"}, {"type": "y"}]})
    assert no_expected.expected == [None, None]
    assert EvaluatorSpec.model_validate({"func": "infeasible"}).infeasible


def test_extra_top_level_keys_are_kept_and_listed() -> None:
    raw = json.loads((CHROME / "030eeff7-b492-4218-b312-701ec99ee0cc.json").read_text())
    spec = TaskSpec.model_validate({**raw, "new_field": 1, "another": "x"})
    assert spec.extra_keys == ["another", "new_field"]
    assert TaskSpec.model_validate(raw).extra_keys == []


def _write(tmp_path: Path, name: str, data: object) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def _task(**evaluator: object) -> dict[str, object]:
    return {"id": "t1", "instruction": "do it", "config": [], "evaluator": evaluator}


def test_malformed_files_name_the_file_and_field(tmp_path: Path) -> None:
    bad_json = _write(tmp_path, "a.json", "{not json")
    no_func = _write(tmp_path, "b.json", {"id": "t", "instruction": "x", "evaluator": {}})
    lengths = _write(tmp_path, "c.json", _task(func=["exact_match", "exact_match"], result=[{"type": "rule"}]))
    bad_params = _write(tmp_path, "d.json", {**_task(func="infeasible"),
                                             "config": [{"type": "sleep", "parameters": {"secs": 1}}]})
    tasks = load_tasks(tmp_path)
    assert [t.status for t in tasks] == ["invalid"] * 4
    errors = [t.error or "" for t in tasks]
    assert errors[0].startswith(f"{bad_json}: not valid JSON")
    assert errors[1].startswith(f"{no_func}: ") and "evaluator.func" in errors[1]
    assert str(lengths) in errors[2] and "evaluator.result has 1 entries but func has 2" in errors[2]
    assert str(bad_params) in errors[3] and "config[0].parameters (sleep)" in errors[3]
    assert "seconds: Field required" in errors[3] and "secs: Extra inputs are not permitted" in errors[3]
    assert load_tasks(tmp_path / "missing.json")[0].error.startswith(f"{tmp_path / 'missing.json'}: cannot read")


def test_unsupported_names_are_reported_exactly(tmp_path: Path) -> None:
    _write(tmp_path, "u.json", {
        "id": "u", "instruction": "x",
        "config": [{"type": "googledrive", "parameters": {}}, {"type": "launch", "parameters": {"command": "ls"}}],
        "evaluator": {"func": ["compare_pptx_files", "exact_match"], "result": [{"type": "vlc_playing_info"},
                                                                                {"type": "rule"}],
                      "expected": [{"type": "vm_file"}, {"type": "audio_in_slide"}],
                      "postconfig": [{"type": "tidy_desktop", "parameters": {}}]}})
    [t] = load_tasks(tmp_path)
    assert t.status == "unsupported"
    assert t.reasons == ("setup step 'googledrive'", "setup step 'tidy_desktop'", "metric 'compare_pptx_files'",
                         "getter 'vlc_playing_info'", "getter 'audio_in_slide'")


def test_registries_fail_on_unknown_names() -> None:
    with pytest.raises(TaskUnsupportedError, match="unsupported getter 'no_such_getter'"):
        GETTERS.get("no_such_getter")
    for name in ("rule", "enable_do_not_track", "enable_safe_browsing", "new_startup_page", "default_search_engine",
                 "profile_name", "chrome_font_size", "bookmarks", "open_tabs_info", "active_tab_info",
                 "active_url_from_accessTree", "history", "cookie_data", "vm_file"):
        assert name in GETTERS
    for name in ("exact_match", "match_in_list", "is_in_list", "check_font_size", "is_expected_bookmarks",
                 "is_expected_tabs", "is_expected_active_tab", "is_expected_active_tab_approximate",
                 "is_expected_url_pattern_match", "check_direct_json_object", "is_cookie_deleted",
                 "check_history_deleted", "infeasible"):
        assert name in METRICS
    for name in ("launch", "execute", "command", "sleep", "open", "activate_window", "close_window",
                 "chrome_open_tabs", "chrome_close_tabs", "download", "update_browse_history",
                 "execute_with_verification"):
        assert name in SETUP_STEPS


def test_apt_steps_are_satisfied_or_reported() -> None:
    cmd = "echo {CLIENT_PASSWORD} | sudo -S apt update -y && echo {CLIENT_PASSWORD} | sudo -S apt install bash -y"
    assert _check_command(ExecuteParams(command=cmd, shell=True)) == []
    assert _localize_shell(cmd) is None  # nothing left to run: bash is installed
    missing = "sudo apt-get install -y kimi-no-such-package && echo done"
    assert _check_command(ExecuteParams(command=missing, shell=True)) == ["apt package 'kimi-no-such-package' not installed"]
    assert _localize_shell("echo pw | sudo -S cp a b && sudo apt install jq -y") == "cp a b"


def test_vm_paths_map_into_the_worker_home(tmp_path: Path) -> None:
    paths = HostPaths(tmp_path / "home")
    assert paths.profile_dir == tmp_path / "home" / ".config" / "google-chrome"
    assert paths.map_path("/home/user/Desktop/a.txt") == tmp_path / "home" / "Desktop" / "a.txt"
    assert paths.map_path("~/.config/google-chrome/Default") == paths.default_profile
    assert paths.map_path("/etc/hosts") == Path("/etc/hosts")
    cmd = "cd /home/user/.config/google-chrome/Default && cp ~/x /home/userx/y"
    assert paths.map_text(cmd) == f"cd {paths.default_profile} && cp {paths.home}/x /home/userx/y"
    # the match operators of awk and bash are not paths
    for text in ("awk '$1 !~ /^Z/ { print }'", "[[ $a =~ ^x ]] && echo y", "echo ~user"):
        assert paths.map_text(text) == text
    assert paths.map_text("cd ~ && DIR=~/d") == f"cd {paths.home} && DIR={paths.home}/d"


def test_a_fifo_infinity_and_an_unsplittable_command_are_invalid_at_load_time(tmp_path: Path) -> None:
    """A FIFO named *.json would block the loader forever; Infinity seconds is no budget; a command
    shlex cannot split would fail mid-task: each is `invalid` naming the file, before anything runs."""
    import os

    os.mkfifo(tmp_path / "fifo.json")
    base = {"instruction": "x", "evaluator": {"func": "infeasible"}}
    (tmp_path / "inf.json").write_text(json.dumps(
        {**base, "id": "inf", "config": [{"type": "sleep", "parameters": {"seconds": float("inf")}}]}))
    (tmp_path / "unsplit.json").write_text(json.dumps(
        {**base, "id": "unsplit", "config": [{"type": "execute", "parameters": {"command": "echo 'open",
                                                                                "shell": False}}]}))
    errors = {t.path.name: t.error for t in load_tasks(tmp_path).invalid}
    assert errors == {
        "fifo.json": f"{tmp_path / 'fifo.json'}: not a regular file",
        "inf.json": f"{tmp_path / 'inf.json'}: not loadable JSON: Infinity is not a number a task may use",
        "unsplit.json": f"{tmp_path / 'unsplit.json'}: config[0].parameters.command (execute): \"echo 'open\" "
                        "cannot be split into words (No closing quotation)"}
