"""A real agent episode's model cost: 10 steps of a sliding-window history built by the agent's own
`history.build_messages` and tokenized by the real processor (1920x1080 screenshots, a fixed
reply per step), answered by one `Engine`. Per step: prompt tokens, prefilled tokens, screenshots
sent through MoonViT, wall ms. Compares the history policies side by side in one run:

- exact    : exactly K screenshots (the default); the fold after the system prompt changes every step
- chunked  : K..2K-1 screenshots, folded K at a time (the prompt mostly only grows)
- exact, no vision cache: what the Engine did before it kept image features (every screenshot still
  in the window is encoded again whenever the prefix breaks)

    python bench/agent_episode.py                                 # tiny random model, CPU, fp32
    python bench/agent_episode.py --device cuda --config full     # Kimi-VL-A3B sizes, random bf16

Weights are random (no checkpoint needed), so only costs are measured; the engine is told to ignore
stop tokens so every reply has exactly --reply-tokens tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from runtime import (  # bench/runtime.py (this folder is on sys.path)
    make_config,
    random_model,
    resolve_device_args,
)

from kimi_agent.history import PastStep, build_messages
from kimi_agent.model_runtime.engine import Engine
from kimi_agent.model_runtime.processor import KimiVLProcessor
from kimi_agent.prompts import build_prompt

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kimi_vl_a3b_instruct"
THOUGHT = "The settings page is open. I need the privacy section, which is in the left sidebar."
ACTION = "Click 'Privacy and security' in the left sidebar."


def screenshot(step: int, size: tuple[int, int] = (1920, 1080)) -> Image.Image:
    """A distinct 1920x1080 frame per step (blocky noise, so pixels and digests differ)."""
    rng = np.random.default_rng(step)
    small = rng.integers(0, 256, (27, 48, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.NEAREST)


def episode(engine: Engine, processor: KimiVLProcessor, policy: str, k: int, steps: int,
            reply_tokens: int, sync: Any, progress: bool = True, seed: int = 0) -> list[dict[str, float]]:
    """Run `steps` agent steps (screenshots seeded from `seed`); one row per step."""
    prompt, past, rows = build_prompt(), [], []
    engine.reset()
    for i in range(1, steps + 1):
        current = screenshot(seed + i)
        messages, images = build_messages(prompt, "enable Do Not Track", past, current, history_images=k,
                                          history_policy=policy)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        batch = processor(messages=messages, images=images)
        sync()
        t1 = time.perf_counter()
        res = engine.generate_ids(batch["input_ids"], batch.get("pixel_values"), batch.get("image_grid_hws"),
                                  max_new_tokens=reply_tokens)
        sync()
        t2 = time.perf_counter()
        rows.append({"step": i, "prompt": res.prompt_tokens, "prefilled": engine.last_prefill_tokens,
                     "images": len(images), "encodes": engine.last_vision_encodes,
                     "process_ms": (t1 - t0) * 1000, "model_ms": (t2 - t1) * 1000,
                     "new_tokens": len(res.token_ids)})
        past.append(PastStep(index=i, thought=THOUGHT, action_text=ACTION, image=current))
        if progress:
            print(f"  {policy} step {i}: {rows[-1]['prefilled']} prefilled, {rows[-1]['model_ms']:.0f} ms",
                  file=sys.stderr, flush=True)
    return rows


def run(model: Any, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """The three variants on one model; returns rows per variant name."""
    processor = KimiVLProcessor.from_pretrained(FIXTURE)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    variants = {"exact": ("exact", 16), "chunked": ("chunked", 16), "exact-nocache": ("exact", 0)}
    wanted = getattr(args, "variants", ",".join(variants)).split(",")
    out = {}
    for name, (policy, cached) in variants.items():
        if name not in wanted:
            continue
        engine = Engine(model, processor, decode=args.decode, max_cached_images=cached)
        engine.stop_token_ids = ()  # random weights: force exactly reply_tokens per step
        # warm-up on other screenshots (so the measured episode finds none of its images cached)
        episode(engine, processor, policy, args.history, 2, args.reply_tokens, sync, seed=10_000)
        out[name] = episode(engine, processor, policy, args.history, args.steps, args.reply_tokens, sync)
    return out


def report(results: dict[str, list[dict[str, float]]], first: int = 4) -> None:
    print(f"{'variant':14} {'step':>4} {'prompt':>7} {'prefilled':>9} {'images':>6} {'encodes':>7} "
          f"{'process ms':>10} {'model ms':>9}")
    for name, rows in results.items():
        for r in rows:
            print(f"{name:14} {r['step']:4d} {r['prompt']:7d} {r['prefilled']:9d} {r['images']:6d} "
                  f"{r['encodes']:7d} {r['process_ms']:10.1f} {r['model_ms']:9.1f}")
    steps = len(next(iter(results.values())))
    if steps < first:
        print(f"\n(the summary covers steps {first} on, where the window slides: run --steps {first} or more)")
        return
    print(f"\nsteps {first}-{steps} (the window slides), per step:")
    print(f"{'variant':14} {'prefilled':>9} {'of prompt':>9} {'encodes':>7} {'model ms':>9} {'vs exact':>8}")
    base = None
    for name, rows in results.items():
        tail = [r for r in rows if r["step"] >= first]
        pre = statistics.mean(r["prefilled"] for r in tail)
        share = pre / statistics.mean(r["prompt"] for r in tail)
        enc = statistics.mean(r["encodes"] for r in tail)
        ms = statistics.mean(r["model_ms"] for r in tail)
        base = base or ms
        print(f"{name:14} {pre:9.0f} {share:8.0%} {enc:7.2f} {ms:9.1f} {ms / base:7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default=None, choices=["tiny", "full"], help="default: tiny on cpu, full on cuda")
    ap.add_argument("--decode", default="auto", help="Engine decode mode (auto: graph on CUDA, eager on CPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--history", type=int, default=3, help="K screenshots")
    ap.add_argument("--reply-tokens", type=int, default=None, help="default: 16 on cpu, 200 on cuda")
    args = ap.parse_args()
    dtype = resolve_device_args(args)
    model = random_model(make_config(args.config), args.device, dtype)
    print(f"config={args.config} device={args.device} dtype={str(dtype)[6:]} K={args.history} "
          f"reply={args.reply_tokens} tokens decode={args.decode}\n")
    report(run(model, args))


if __name__ == "__main__":
    main()
