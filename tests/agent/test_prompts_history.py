"""Prompt identity and the history policy: K screenshots, older steps folded, no code/coords/think."""

from __future__ import annotations

from PIL import Image

from kimi_agent.history import PastStep, build_messages, scrub
from kimi_agent.prompts import PROMPT_VERSION, build_prompt


def _img(i: int) -> Image.Image:
    return Image.new("RGB", (32, 18), (i, i, i))


def _past(n: int) -> list[PastStep]:
    return [PastStep(i, f"thought {i} at (0.5, 0.25) ◁think▷secret plan◁/think▷",
                     f"Click button {i} with pyautogui.click(x=0.1, y=0.2)", _img(i)) for i in range(1, n + 1)]


def test_prompt_hash_is_stable_and_changes_with_the_text() -> None:
    a, b = build_prompt(), build_prompt()
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert build_prompt(thinking=True).sha256 != a.sha256
    assert build_prompt(password="pw").sha256 != a.sha256
    assert a.version == PROMPT_VERSION
    for needle in ("## Thought", "## Action", "## Code", "computer.wait", "computer.terminate", "between 0 and 1"):
        assert needle in a.system
    thinking = build_prompt(thinking=True).system
    assert "## Thought" not in thinking and "## Action" in thinking


def test_history_keeps_k_screenshots_and_folds_older_steps() -> None:
    prompt = build_prompt()
    current = _img(99)
    messages, images = build_messages(prompt, "enable Do Not Track", _past(5), current, history_images=3)
    assert len(images) == 3 and images[-1] is current
    assert [im.getpixel((0, 0))[0] for im in images] == [4, 5, 99]
    assert messages[0]["role"] == "system"
    folded = messages[1]
    assert folded["role"] == "assistant" and "# Step 1:" in folded["content"] and "# Step 3:" in folded["content"]
    assert "# Step 4:" not in folded["content"]
    roles = [m["role"] for m in messages]
    assert roles == ["system", "assistant", "user", "assistant", "user", "assistant", "user"]
    last = messages[-1]["content"]
    assert last[0] == {"type": "image"} and "# Task Instruction:\nenable Do Not Track" in last[1]["text"]
    n_parts = sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image")
    assert n_parts == len(images)
    history_text = "\n".join(m["content"] for m in messages[1:-1] if isinstance(m["content"], str))
    for banned in ("pyautogui", "0.5", "0.25", "x=0.1", "◁think▷", "secret plan", "```"):
        assert banned not in history_text


def test_history_with_k1_and_thinking_template() -> None:
    prompt = build_prompt(thinking=True)
    messages, images = build_messages(prompt, "t", _past(2), _img(9), history_images=1, note="\nfeedback here\n")
    assert len(images) == 1
    assert "## Thought" not in messages[1]["content"] and "## Action:" in messages[1]["content"]
    assert messages[-1]["content"][1]["text"].endswith("feedback here\n")


def test_scrub_removes_code_and_coordinates() -> None:
    text = "Click at (0.51, 0.33), then ```python\npyautogui.click(0.5, 0.5)\n``` x=0.3 done"
    out = scrub(text)
    assert out.startswith("Click at") and out.endswith("done")
    for banned in ("0.5", "0.33", "pyautogui", "```", "x="):
        assert banned not in out


def test_chunked_history_sees_k_to_2k_minus_1_screenshots_and_only_grows_between_folds() -> None:
    """With the real tokenizer and image processor: between folds each step's token ids start with
    the previous step's ids up to the end of its last screenshot (a prefix cache reuses all of it)."""
    from pathlib import Path

    from kimi_agent.history import folded_steps
    from kimi_agent.model_runtime.processor import KimiVLProcessor

    processor = KimiVLProcessor.from_pretrained(Path(__file__).resolve().parents[1] / "fixtures" / "kimi_vl_a3b_instruct")
    end = processor.tokenizer.token_id("<|media_end|>")
    prompt, k = build_prompt(), 3
    past = _past(11)
    seen, prev = [], None
    for n in range(len(past)):
        messages, images = build_messages(prompt, "enable Do Not Track", past[:n], _img(100 + n),
                                          history_images=k, history_policy="chunked")
        assert images[-1].getpixel((0, 0))[0] == 100 + n and len(images) == n - folded_steps(n, k, "chunked") + 1
        seen.append(len(images))
        ids = processor(messages=messages, images=images)["input_ids"][0].tolist()
        if prev is not None:
            last_image_end = len(prev) - prev[::-1].index(end)
            grows = ids[:last_image_end] == prev[:last_image_end]
            assert grows == (folded_steps(n, k, "chunked") == folded_steps(n - 1, k, "chunked")), n
        prev = ids
    assert seen == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5]
    exact = [len(build_messages(prompt, "x", past[:n], _img(1), history_images=k)[1]) for n in range(len(past))]
    assert exact == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3]
