"""N agent episodes on one model: continuous batching (`BatchScheduler`, one slot per episode) vs the
same episodes one after another (one `Engine` each), side by side in one run. Prompts are real agent
prompts (`history.build_messages`, real processor, 1920x1080 screenshots, exact-K history); every
reply has exactly --reply-tokens tokens (stop ids ignored; weights are random).

    python bench/batching.py                      # tiny random model, CPU: 1 and 4 episodes
    python bench/batching.py --device cuda --config full --episodes 1,4,16

Prints per variant: wall seconds, generated tokens/s, mean step latency, and whether the tokens of
every step equal the one-after-another run's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from agent_episode import ACTION, FIXTURE, THOUGHT, screenshot
from runtime import make_config, random_model, resolve_device_args

from kimi_agent.history import PastStep, build_messages
from kimi_agent.model_runtime.engine import Engine
from kimi_agent.model_runtime.processor import KimiVLProcessor
from kimi_agent.model_runtime.scheduler import BatchScheduler, GenerationRequest
from kimi_agent.prompts import build_prompt


def prompts(processor: KimiVLProcessor, episode: int, steps: int) -> list[dict[str, torch.Tensor]]:
    """The processed prompt of every step of one episode (screenshots distinct per episode and step)."""
    prompt, past, out = build_prompt(), [], []
    for i in range(1, steps + 1):
        shot = screenshot(1000 * episode + i)
        messages, images = build_messages(prompt, f"task {episode}", past, shot, history_images=3)
        out.append(processor(messages=messages, images=images))
        past.append(PastStep(i, THOUGHT, ACTION, shot))
    return out


def sequential(model, episodes, reply_tokens, sync):  # type: ignore[no-untyped-def]
    tokens, lat = [], []
    for steps in episodes:
        engine = Engine(model, decode="eager")
        engine.stop_token_ids = ()
        for b in steps:
            t = time.perf_counter()
            res = engine.generate_ids(b["input_ids"], b["pixel_values"], b["image_grid_hws"],
                                      max_new_tokens=reply_tokens)
            sync()
            lat.append(time.perf_counter() - t)
            tokens.append(res.token_ids)
    return tokens, lat


def batched(model, episodes, reply_tokens, sync, max_len):  # type: ignore[no-untyped-def]
    sched = BatchScheduler(model, slots=len(episodes), max_len=max_len, stop_token_ids=())
    by_episode: list[list[list[int]]] = [[] for _ in episodes]
    lat = []
    for k in range(len(episodes[0])):  # every episode submits its step k, then all wait (an agent acts)
        t = time.perf_counter()
        handles = [sched.submit(GenerationRequest(ep[k]["input_ids"], ep[k]["pixel_values"], ep[k]["image_grid_hws"],
                                                  max_new_tokens=reply_tokens, session=e))
                   for e, ep in enumerate(episodes)]
        sched.run_until_idle()
        sync()
        for e, h in enumerate(handles):
            by_episode[e].append(h.result(0).token_ids)
            lat.append(time.perf_counter() - t)
    return [t for ep in by_episode for t in ep], lat, sched.decoded_rows / max(sched.decode_steps, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default=None, choices=["tiny", "full"])
    ap.add_argument("--episodes", default="1,4", help="comma-separated episode counts")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--reply-tokens", type=int, default=None, help="default: 16 on cpu, 200 on cuda")
    args = ap.parse_args()
    dtype = resolve_device_args(args)
    config, reply = args.config, args.reply_tokens
    model = random_model(make_config(config), args.device, dtype)
    processor = KimiVLProcessor.from_pretrained(FIXTURE)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print(f"config={config} device={args.device} steps={args.steps} reply={reply} tokens\n")
    print(f"{'episodes':>8} {'variant':12} {'wall s':>8} {'tok/s':>8} {'step ms':>9} {'rows/step':>9} {'same tokens':>11}")
    for n in (int(x) for x in args.episodes.split(",")):
        episodes = [prompts(processor, e, args.steps) for e in range(n)]
        max_len = max(b["input_ids"].shape[1] for ep in episodes for b in ep) + reply + 8
        total = n * args.steps * reply
        t = time.perf_counter()
        ref, lat_s = sequential(model, episodes, reply, sync)
        wall_s = time.perf_counter() - t
        t = time.perf_counter()
        got, lat_b, rows = batched(model, episodes, reply, sync, max_len)
        wall_b = time.perf_counter() - t
        print(f"{n:8d} {'one by one':12} {wall_s:8.2f} {total / wall_s:8.1f} {1000 * statistics.mean(lat_s):9.1f} "
              f"{1.0:9.2f} {'-':>11}")
        print(f"{n:8d} {'batched':12} {wall_b:8.2f} {total / wall_b:8.1f} {1000 * statistics.mean(lat_b):9.1f} "
              f"{rows:9.2f} {got == ref!s:>11}   ({wall_s / wall_b:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
