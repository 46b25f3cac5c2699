"""The Python chat template equals jinja2 rendering of the real `chat_template.jinja`, so the fast path
(`ChatTemplate` renders the official template text with `render_kimi_vl`, no jinja) can never drift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_agent.model_runtime.chat_template import (
    ChatTemplate,
    compile_sandboxed,
    is_official_template,
    render_kimi_vl,
    render_sandboxed,
)
from kimi_agent.model_runtime.template_worker import TemplateWorker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct"
PROMPT = ("<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|><|im_user|>user<|im_middle|>"
          "<|media_start|>image<|media_content|><|media_pad|><|media_end|>What is the dome building in the "
          "picture? Think step by step.<|im_end|><|im_assistant|>assistant<|im_middle|>")
IMG = "<|media_start|>image<|media_content|><|media_pad|><|media_end|>"


class JinjaReference:
    """The official template text rendered by jinja2 (the bounded sandbox, in this process), not the fast path."""

    def __init__(self, source: str) -> None:
        self.template = compile_sandboxed(source)

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
        return render_sandboxed(self.template, "chat_template.jinja", messages,
                                add_generation_prompt=add_generation_prompt, special_tokens={})


@pytest.fixture(scope="module")
def jinja() -> JinjaReference:
    source = (FIXTURE / "chat_template.jinja").read_text()
    assert is_official_template(source) and ChatTemplate.from_dir(FIXTURE).is_official
    return JinjaReference(source)


def _both(tpl: JinjaReference, messages: list[dict[str, Any]], gen: bool) -> str:
    out = tpl.render(messages, add_generation_prompt=gen)
    assert out == render_kimi_vl(messages, add_generation_prompt=gen)
    assert out == ChatTemplate.from_dir(FIXTURE).render(messages, add_generation_prompt=gen)  # the fast path
    return out


SHAPES: list[list[dict[str, Any]]] = [
    [],
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "◁think▷x◁/think▷b"},
     {"role": "user", "content": "c"}],
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "t"},
                                  {"image": None}, {"type": "text", "text": " and "}]}],
    [{"role": "system", "content": [{"type": "text", "text": "sys "}, {"type": "text", "text": "parts"}]}],
    [{"role": "tool", "content": "result"}, {"role": "user", "content": "go"}],
    [{"role": "user", "content": []}, {"role": "function", "content": [{"type": "text"}]}],
    [{"role": "user", "content": "line\nbreak {{ not jinja }} {% raw %}"}],
    [{"role": "assistant", "content": "first"}, {"role": "system", "content": "late system"}],
]


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize("messages", SHAPES)
def test_python_equals_jinja(jinja: JinjaReference, messages: list[dict[str, Any]], gen: bool) -> None:
    _both(jinja, messages, gen)


def test_reference_prompt(jinja: JinjaReference) -> None:
    msgs = [{"role": "user", "content": [
        {"type": "image", "image": "dome.jpg"},
        {"type": "text", "text": "What is the dome building in the picture? Think step by step."}]}]
    assert _both(jinja, msgs, True) == PROMPT


def test_shape_details(jinja: JinjaReference) -> None:
    assert _both(jinja, [], True) == "<|im_assistant|>assistant<|im_middle|>"
    assert _both(jinja, [], False) == ""
    assert _both(jinja, [{"role": "system", "content": "S"}], False) == "<|im_system|>system<|im_middle|>S<|im_end|>"
    out = _both(jinja, [{"role": "tool", "content": "r"}], False)
    assert out.endswith("tool<|im_middle|>r<|im_end|>")
    assert out.count(IMG) == 0


_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=20)),
    st.just({"type": "image"}),
    st.just({"type": "image_url", "image_url": {"url": "data:,"}}),
    st.just({"image": "x.png"}),
)
_message = st.fixed_dictionaries({
    "role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), st.text(max_size=8)),
    "content": st.one_of(st.text(max_size=30), st.lists(_part, max_size=4)),
})


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, max_size=5), st.booleans())
def test_random_messages_agree(jinja: JinjaReference, messages: list[dict[str, Any]], gen: bool) -> None:
    _both(jinja, messages, gen)


def test_template_from_tokenizer_config_or_builtin(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    tpl = ChatTemplate.from_dir(tmp_path)
    assert tpl.source == json.loads((FIXTURE / "tokenizer_config.json").read_text())["chat_template"]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}]
    assert tpl.render(msgs, add_generation_prompt=True) == render_kimi_vl(msgs, add_generation_prompt=True)
    (tmp_path / "tokenizer_config.json").unlink()
    builtin = ChatTemplate.from_dir(tmp_path)
    assert builtin.source is None
    assert builtin.render(msgs, add_generation_prompt=True) == render_kimi_vl(msgs, add_generation_prompt=True)


@pytest.mark.parametrize("name", ["chat_template.jinja", "tokenizer_config.json"])
def test_official_text_by_the_renderer_process_equals_the_fast_path(name: str) -> None:
    """Both official texts, through jinja in the renderer process, on every shape."""
    source = (FIXTURE / name).read_text()
    source = json.loads(source)["chat_template"] if name.endswith(".json") else source
    assert is_official_template(source)
    worker = TemplateWorker(source, where=name)
    try:
        for messages in SHAPES:
            for gen in (True, False):
                assert worker.render(messages, add_generation_prompt=gen) == \
                    render_kimi_vl(messages, add_generation_prompt=gen)
    finally:
        worker.close()
