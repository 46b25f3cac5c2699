"""`compare_pdfs` on real PDF files, and the profile-file parts of the page getters
(`find_unpacked_extension_path`, the Preferences fallback of `chrome_appearance_mode_ui`), on the
inputs OSWorld's functions of the same names take. The browser-driven halves are in
test_page_getters.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.pdf import text_pdf

from kimi_agent.errors import EvaluationError
from kimi_agent.tasks.context import EpisodeEnd, EvalContext, HostPaths
from kimi_agent.tasks.getters import cache_path, get_find_unpacked_extension_path, get_vm_file
from kimi_agent.tasks.getters_page import color_scheme_name, mode_from_preferences
from kimi_agent.tasks.metrics_pdf import compare_pdfs, pdf_text, text_similarity
from kimi_agent.tasks.spec import GetterConfig

ARTICLE = [["LLM Powered Autonomous Agents", "Building agents with LLM as its core controller."],
           ["Component One: Planning", "Task decomposition and self-reflection."]]


class FilesOnlyHost:
    """Test double of a TaskHost for getters that only read the worker's files."""

    def __init__(self, home: Path) -> None:
        self.paths = HostPaths(home)


def _ctx(tmp_path: Path) -> EvalContext:
    home = tmp_path / "home"
    (home / ".config/google-chrome/Default").mkdir(parents=True)
    return EvalContext(host=FilesOnlyHost(home), episode=EpisodeEnd("success"), cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def _pdf(path: Path, pages: list[list[str]]) -> str:
    path.write_bytes(text_pdf(pages))
    return str(path)


# ---------------------------------------------------------------- compare_pdfs

def test_pdf_text_is_every_page_in_order(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "a.pdf", ARTICLE)
    assert pdf_text(path) == ("LLM Powered Autonomous Agents\nBuilding agents with LLM as its core controller.\n"
                              "Component One: Planning\nTask decomposition and self-reflection.")


def test_text_similarity_is_rapidfuzz_ratio() -> None:
    assert text_similarity("abcd", "abce") == 0.75  # Indel distance 2 over 8 characters
    assert text_similarity("", "") == 1.0
    assert text_similarity("abc", "") == 0.0


def test_compare_pdfs_same_text_scores_1_and_other_text_less(tmp_path: Path) -> None:
    gold = _pdf(tmp_path / "gold.pdf", ARTICLE)
    assert compare_pdfs(_pdf(tmp_path / "same.pdf", ARTICLE), gold) == 1.0
    one_page = compare_pdfs(_pdf(tmp_path / "half.pdf", ARTICLE[:1]), gold)
    other = compare_pdfs(_pdf(tmp_path / "other.pdf", [["Prompt Engineering", "Few-shot examples."]]), gold)
    assert 0.5 < one_page < 1.0
    assert other < 0.4


def test_compare_pdfs_lists_score_the_mean_and_bad_files_score_0(tmp_path: Path) -> None:
    gold = _pdf(tmp_path / "gold.pdf", ARTICLE)
    good = _pdf(tmp_path / "good.pdf", ARTICLE)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really a pdf")
    assert compare_pdfs([good, str(broken)], [gold, gold]) == 0.5
    assert compare_pdfs([good, None], [gold, gold]) == 0.5  # a vm_file that found no file (multi)
    assert compare_pdfs(str(tmp_path / "missing.pdf"), gold) == 0.0
    assert compare_pdfs(str(broken), gold) == 0.0


# ---------------------------------------------------------------- appearance mode from Preferences

@pytest.mark.parametrize(("prefs", "mode"), [
    ({}, "system"),
    ({"browser": {"theme": {"color_scheme": 2}}}, "dark"),
    ({"browser": {"theme": {"color_scheme": 2, "color_scheme2": 1}}}, "light"),
    ({"browser": {"theme": {"color_scheme2": 0}}}, "system"),
    ({"browser": {"theme": {"color_scheme2": "dark"}}}, "dark"),
    # OSWorld answers "light" whenever extensions.theme.system_theme is 0 (the classic, non-GTK
    # theme, which Chromium writes by default): a dark browser would pass. Not here.
    ({"browser": {"theme": {"color_scheme2": 2}}, "extensions": {"theme": {"system_theme": 0}}}, "dark"),
])
def test_mode_from_preferences(prefs: dict, mode: str) -> None:
    assert mode_from_preferences(prefs) == mode


def test_color_scheme_names() -> None:
    assert [color_scheme_name(v) for v in (0, 1, 2, "1", "Default", 7, True, None)] == \
        ["system", "light", "dark", "light", "system", None, None, None]


# ---------------------------------------------------------------- find_unpacked_extension_path

def test_unpacked_extension_paths_from_both_preference_files(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    home = ctx.host.paths.home
    profile = ctx.host.paths.default_profile
    assert get_find_unpacked_extension_path(ctx, GetterConfig(type="find_unpacked_extension_path")) == []
    (profile / "Preferences").write_text(json.dumps({"extensions": {"settings": {
        "a" * 32: {"path": f"{home}/Desktop/helloExtension", "location": 4},
        "b" * 32: {"location": 5},  # no path: OSWorld's getter fails on it and the task scores 0
        "c" * 32: {"path": "/usr/lib/chromium/resources/pdf", "location": 5}}}}))
    (profile / "Secure Preferences").write_text(json.dumps({"extensions": {"settings": {
        "d" * 32: {"path": "/home/user/Desktop/other"}}}}))
    paths = get_find_unpacked_extension_path(ctx, GetterConfig(type="find_unpacked_extension_path"))
    assert paths == ["/home/user/Desktop/helloExtension", "/usr/lib/chromium/resources/pdf", "/home/user/Desktop/other"]


def test_vm_path_inverts_map_path(tmp_path: Path) -> None:
    paths = HostPaths(tmp_path / "home")
    assert paths.vm_path(str(paths.map_path("/home/user/Desktop/x"))) == "/home/user/Desktop/x"
    assert paths.vm_path(str(tmp_path / "homeless")) == str(tmp_path / "homeless")


# ---------------------------------------------------------------- dest stays in the cache

@pytest.mark.parametrize("dest", ["../escape.pdf", "a/b.pdf", "..", ".", "", "/tmp/abs.pdf"])
def test_dest_must_be_a_plain_file_name(tmp_path: Path, dest: str) -> None:
    ctx = _ctx(tmp_path)
    with pytest.raises(EvaluationError, match="not a plain file name"):
        cache_path(ctx, dest)
    (ctx.host.paths.home / "f.txt").write_text("x")
    with pytest.raises(EvaluationError):
        get_vm_file(ctx, GetterConfig(type="vm_file", path="/home/user/f.txt", dest=dest))
    assert not (tmp_path / "escape.pdf").exists()
