"""A checkpoint's chat template renders in a child process under OS limits (template_worker.py): the
red-team probes N1/N2 of notes/redteam-checkpoint.md (GIL-holding comparisons, GB-scale format and capture
blow-ups) end as `ChatTemplateError` within seconds, with the child killed and the parent's memory flat;
benign templates render the same text as in process; the official template never starts a child."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kimi_agent.model_runtime.chat_template import (
    ChatTemplate,
    ChatTemplateError,
    compile_sandboxed,
    render_kimi_vl,
    render_sandboxed,
)
from kimi_agent.model_runtime.template_worker import RENDER_DEADLINE_S, WORKER_MEMORY_BYTES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
          "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<image>"
          "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ bos_token }}")
ONE = [{"role": "user", "content": "hi"}]
THREE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2? {{ x }} %s"},
         {"role": "assistant", "content": "4"}]
CONVERSATIONS: list[list[dict[str, Any]]] = [
    [], ONE, THREE,
    [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "what? é 漢 \U0001f600"}]}],
    [{"role": "user", "content": "line\nbreak\x00\ud800 <|im_end|>"}, {"role": "tool", "content": "r"}],
]
# N1/N2 probes, armed only past the one-message conversation ChatTemplate renders at load.
PROBES = {
    "huge list comparison (N1)": '{% set a = "a" * 30000000 %}{% set b = "a" * 29999999 ~ "a" %}'
                                 "{{ ([a] * 1000000 == [b] * 1000000) }}",
    "%-format blow-up (N2)": '{% set a = "a" * 1000000 %}{{ (("%(a)s" * 2500) % {"a": a})|length }}',
    "str.format blow-up (N2)": '{% set a = "a" * 1000000 %}{{ ("{0}" * 2500).format(a)|length }}',
    "{% set %} capture blow-up (N2)": '{% set a = "a" * 30000000 %}{% set t %}{% for i in range(60) %}{{ a }}'
                                      "{% endfor %}{% endset %}{{ t|length }}",
}


def _armed(body: str) -> str:
    return "{% if messages|length > 1 %}" + body + "{% endif %}{{ messages[0].role }}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("case", list(PROBES))
def test_redteam_probes_end_as_a_typed_error_within_seconds(case: str) -> None:
    tpl = ChatTemplate(_armed(PROBES[case]), where="probe.jinja")
    pid = tpl.renderer_pid
    assert pid is not None and tpl.render(ONE) == "user"
    rss = _rss_bytes()
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=r"chat template probe\.jinja (failed to render|went past a bound)"):
        tpl.render(THREE)
    assert time.monotonic() - start < RENDER_DEADLINE_S + 3
    assert _rss_bytes() - rss < 100 << 20  # the GBs were the child's, under its RLIMIT_AS
    if not _alive(pid):  # killed at the deadline: the next render starts a fresh child
        assert tpl.render(ONE) == "user" and tpl.renderer_pid not in (None, pid)
    tpl.close()


def test_a_child_past_the_deadline_is_killed_and_replaced() -> None:
    tpl = ChatTemplate(_armed(PROBES["huge list comparison (N1)"]), where="probe.jinja")
    pid = tpl.renderer_pid
    assert pid is not None
    with pytest.raises(ChatTemplateError, match=r"ran longer than 6 s \(the renderer process was killed\)"):
        tpl.render(THREE)
    assert not _alive(pid)
    assert tpl.render(ONE) == "user"
    assert tpl.renderer_pid not in (None, pid)
    tpl.close()


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [True, False])
def test_a_benign_template_renders_the_same_out_of_process(messages: list[dict[str, Any]], gen: bool) -> None:
    specials = {"bos_token": "[BOS]"}
    tpl = ChatTemplate(CHATML, special_tokens=specials, where="chatml.jinja")
    assert tpl.renderer_pid is not None
    local = render_sandboxed(compile_sandboxed(CHATML), "chatml.jinja", messages, add_generation_prompt=gen,
                             special_tokens=specials)
    assert tpl.render(messages, add_generation_prompt=gen) == local
    tpl.close()


def test_a_child_killed_mid_render_is_an_error_and_is_replaced() -> None:
    slow = _armed("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    tpl = ChatTemplate(slow, where="slow.jinja")
    pid = tpl.renderer_pid
    assert pid is not None
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=r"slow\.jinja failed to render: the renderer process died "
                                                r"\(signal SIGKILL"):
        tpl.render(THREE)
    assert time.monotonic() - start < 3
    assert tpl.render(ONE) == "user" and tpl.renderer_pid not in (None, pid)
    os.kill(tpl.renderer_pid or 0, signal.SIGKILL)  # killed while idle: the next render replaces it too
    time.sleep(0.1)
    assert tpl.render(ONE) == "user"
    tpl.close()


def test_threads_share_one_child_and_none_hangs() -> None:
    tpl = ChatTemplate(_armed(PROBES["huge list comparison (N1)"]), where="probe.jinja")
    results: list[str] = []

    def work(messages: list[dict[str, Any]]) -> None:
        try:
            results.append(tpl.render(messages))
        except ChatTemplateError:
            results.append("error")

    threads = [threading.Thread(target=work, args=(THREE if i == 0 else ONE,)) for i in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert sorted(results) == ["error", "user", "user", "user"]
    assert time.monotonic() - start < 2 * RENDER_DEADLINE_S
    tpl.close()


def test_the_child_is_limited_and_inherits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_TEST_SECRET", "hf_x")
    with open(FIXTURE / "tiktoken.model", "rb") as held:  # an open model file of the parent
        tpl = ChatTemplate(CHATML, where="chatml.jinja")
        pid = tpl.renderer_pid
        assert pid is not None
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
        assert fds == [0, 1, 2], targets
        assert not any("tiktoken" in t for t in targets) and held.fileno() > 2
    limits = {line[:26].strip(): line[26:].split() for line in Path(f"/proc/{pid}/limits").read_text().splitlines()}
    assert limits["Max address space"][:2] == [str(WORKER_MEMORY_BYTES)] * 2
    assert limits["Max cpu time"][0] != "unlimited"
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(var.startswith(b"KIMI_TEST_SECRET=") for var in environ)
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "torch" not in maps
    tpl.close()


def test_a_module_in_the_working_directory_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "jinja2.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)  # e.g. serve started inside a downloaded model folder
    tpl = ChatTemplate(CHATML, where="chatml.jinja")
    assert tpl.render(ONE) == "<|im_start|>user\nhi<|im_end|>\n"
    assert not marker.exists()
    tpl.close()


def test_pipes_past_fd_setsize_work() -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1500:
        pytest.skip("needs 1,500 open files")
    held = [os.dup(0) for _ in range(1100)]  # a busy server: the child's pipes get descriptors past 1024
    try:
        tpl = ChatTemplate(CHATML, where="chatml.jinja")
        assert tpl.render(ONE) == "<|im_start|>user\nhi<|im_end|>\n"
        tpl.close()
    finally:
        for fd in held:
            os.close(fd)


def test_the_child_is_reaped_on_close_and_on_garbage_collection() -> None:
    tpl = ChatTemplate(CHATML, where="chatml.jinja")
    pid = tpl.renderer_pid
    assert pid is not None and _alive(pid)
    tpl.close()
    assert not _alive(pid)
    with pytest.raises(ChatTemplateError, match=r"chatml\.jinja failed to render: the template was closed"):
        tpl.render(ONE)
    tpl = ChatTemplate(CHATML, where="chatml.jinja")
    pid = tpl.renderer_pid
    assert pid is not None
    del tpl
    gc.collect()
    assert not _alive(pid)


def test_the_child_exits_with_its_parent() -> None:
    script = ("import os, sys\nfrom kimi_agent.model_runtime.chat_template import ChatTemplate\n"
              f"t = ChatTemplate({CHATML!r})\nprint(t.renderer_pid, flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


@pytest.mark.parametrize("source", ["jinja", "tokenizer_config"])
def test_the_official_template_takes_the_fast_path(tmp_path: Path, source: str) -> None:
    if source == "jinja":
        tpl = ChatTemplate.from_dir(FIXTURE)
    else:
        (tmp_path / "tokenizer_config.json").write_bytes((FIXTURE / "tokenizer_config.json").read_bytes())
        tpl = ChatTemplate.from_dir(tmp_path)
    assert tpl.source is not None and tpl.is_official
    for messages in CONVERSATIONS:
        assert tpl.render(messages, add_generation_prompt=True) == render_kimi_vl(messages, add_generation_prompt=True)
    assert tpl.renderer_pid is None and tpl._worker is None


def test_a_changed_official_template_is_not_the_fast_path() -> None:
    tpl = ChatTemplate((FIXTURE / "chat_template.jinja").read_text() + "!")
    assert not tpl.is_official and tpl.renderer_pid is not None
    assert tpl.render(THREE) == render_kimi_vl(THREE) + "!"
    tpl.close()
