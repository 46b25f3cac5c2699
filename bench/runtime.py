"""Runtime benchmark: prefill, time to first token, decode throughput, memory and KV bytes per token,
optimized path (latent MLA cache + absorbed decode + grouped MoE) vs our naive path (full per-head
K/V cache + a Python loop over every expert), plus prefix reuse across agent steps.

    python bench/runtime.py                                  # tiny config, CPU, fp32
    python bench/runtime.py --device cuda --config full      # Kimi-VL-A3B sizes, random bf16 weights
    python bench/runtime.py --device cuda --config full --graphs graph   # or: compile, compile+graph, static

The prompt is one 1920x1080 screenshot (grid 48x86 -> 1032 image tokens) + 300 text tokens.
Weights are random (built directly on the device; no checkpoint needed), so only speed is measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kimi_agent.model_runtime.config import KimiVLConfig
from kimi_agent.model_runtime.engine import Engine
from kimi_agent.model_runtime.generate import decode_step, prefill, sample
from kimi_agent.model_runtime.kimi_vl import KimiVL
from kimi_agent.model_runtime.static_decode import StaticDecoder
from kimi_agent.model_runtime.weights import _assign, build_on_meta

REAL_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kimi_vl_a3b_instruct" / "config.json"
PAD, GRID, TEXT_TOKENS = 163605, (48, 86), 300


def make_config(name: str, text_layers: int | None = None) -> KimiVLConfig:
    """The real config ("full") or a tiny one of the same structure; `text_layers`: fewer LM layers."""
    cfg = json.loads(REAL_CONFIG.read_text())
    if name == "tiny":
        cfg["vision_config"].update(num_attention_heads=2, num_hidden_layers=2, hidden_size=32,
                                    intermediate_size=48, init_pos_emb_height=8, init_pos_emb_width=8)
        cfg["text_config"].update(hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                                  num_hidden_layers=4, num_attention_heads=4, n_shared_experts=1,
                                  n_routed_experts=16, num_experts_per_tok=4, kv_lora_rank=32,
                                  qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32)
    if text_layers is not None:
        cfg["text_config"]["num_hidden_layers"] = text_layers
    return KimiVLConfig.from_dict(cfg, str(REAL_CONFIG))


@torch.no_grad()
def resolve_device_args(args: argparse.Namespace) -> torch.dtype:
    """Check `args.device` (cuda on a build that sees no GPU: a one-line error, exit 2), fill in the
    device's defaults in place (`config`: tiny on cpu, full on cuda; `reply_tokens`, where the script
    has it: 16 on cpu, 200 on cuda) and return the dtype (`args.dtype` if given; fp32 cpu, bf16 cuda)."""
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(f"{Path(sys.argv[0]).name}: --device cuda needs a CUDA GPU and a CUDA build of torch, and this "
              f"torch ({torch.__version__}) sees none (see the README's GPU install).", file=sys.stderr)
        raise SystemExit(2)
    args.config = args.config or ("full" if cuda else "tiny")
    if hasattr(args, "reply_tokens"):
        args.reply_tokens = args.reply_tokens or (200 if cuda else 16)
    return getattr(torch, getattr(args, "dtype", None) or ("bfloat16" if cuda else "float32"))  # type: ignore[no-any-return]


def random_model(cfg: KimiVLConfig, device: str, dtype: torch.dtype, seed: int = 0) -> KimiVL:
    """Random weights allocated directly on `device` in `dtype` (no fp32 copy of the full model)."""
    torch.manual_seed(seed)
    model = build_on_meta(cfg)
    for name, p in list(model.named_parameters()):
        t = torch.empty(p.shape, device=device, dtype=dtype)
        if name.endswith("bias") or name.endswith("e_score_correction_bias"):
            t.normal_(0, 0.02)
        elif p.dim() == 1:
            t.fill_(1.0)
        else:
            t.normal_(0, 0.02 if "embed" not in name and "pos_emb" not in name else 1.0)
        _assign(model, name, t)
    assert isinstance(model, KimiVL)
    model.eval().requires_grad_(False)
    model.stack_experts()
    return model


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def screenshot_prompt(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids [1, 1032 + 300 + 2], pixel_values [4128, 3, 14, 14], grid [[48, 86]]."""
    g = torch.Generator().manual_seed(0)
    h, w = GRID
    ids = torch.cat((torch.randint(0, 160000, (TEXT_TOKENS - 20,), generator=g), torch.tensor([163602]),
                     torch.full((h * w // 4,), PAD), torch.tensor([163604]),
                     torch.randint(0, 160000, (20,), generator=g)))[None]
    return ids.to(device), torch.randn(h * w, 3, 14, 14, generator=g).to(device), torch.tensor([GRID], device=device)


def decode_rate(model: KimiVL, batch: int, context: int, steps: int, naive: bool, graphs: str,
                device: str) -> float:
    """Decode tokens/s (all rows) after a `context`-token text prefill."""
    ids = torch.randint(0, 160000, (batch, context), device=device)
    cache = model.new_cache(batch, context + steps + 8, naive=naive)
    with torch.inference_mode():
        logits = prefill(model, ids, cache)
        tok = sample(logits)
        step = make_decoder(model, cache, graphs if not naive else "none")
        for _ in range(3):  # warm-up (capture/compile happen in the first call)
            tok = sample(step(tok))
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tok = sample(step(tok))
        sync(device)
    return batch * steps / (time.perf_counter() - t0)


def make_decoder(model: KimiVL, cache: Any, graphs: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A decode step: eager `decode_step` ("none") or a `StaticDecoder` in mode `graphs`."""
    if graphs == "none":
        return lambda tokens: decode_step(model, tokens, cache)
    return StaticDecoder(model, cache, mode=graphs)  # type: ignore[arg-type]


def measure(model: KimiVL, naive: bool, args: argparse.Namespace) -> dict[str, float]:
    device = args.device
    model.set_moe_impl("loop" if naive else "auto")
    ids, pv, hws = screenshot_prompt(device)
    cache = model.new_cache(1, ids.shape[1] + args.steps + 8, naive=naive)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        prefill(model, ids, cache, pv, hws)  # warm-up
        cache.reset()
        _, ttft = timed(lambda: sample(prefill(model, ids, cache, pv, hws)), device)
    row = {"prefill": ids.shape[1] / ttft, "ttft_ms": ttft * 1000, "kv_bytes": cache.bytes_per_token}
    for b in (1, 4, 16):
        row[f"decode_b{b}"] = decode_rate(model, b, args.context, args.steps, naive, args.graphs, device)
    row["peak_mb"] = (torch.cuda.max_memory_allocated() if device == "cuda"
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    model.set_moe_impl("auto")
    return row


def prefix_reuse(model: KimiVL, args: argparse.Namespace) -> list[tuple[int, int, int, float, float]]:
    """Agent-like steps: history + reply + new screenshot each step. Rows: step, prompt tokens,
    prefilled tokens, reuse-engine ms, fresh-engine ms."""
    ids, pv, hws = screenshot_prompt(args.device)
    engine, rows = Engine(model), []
    g = torch.Generator().manual_seed(1)
    for k in range(1, 4):
        inputs = (ids, pv, hws)
        res, t_reuse = timed(lambda e=engine, x=inputs: e.generate_ids(*x, max_new_tokens=8), args.device)
        _, t_fresh = timed(lambda x=inputs: Engine(model).generate_ids(*x, max_new_tokens=8), args.device)
        rows.append((k, ids.shape[1], engine.last_prefill_tokens, t_reuse * 1000, t_fresh * 1000))
        new_pv = torch.randn(GRID[0] * GRID[1], 3, 14, 14, generator=g).to(args.device)
        reply = torch.tensor(res.token_ids, device=args.device)[None]
        obs = screenshot_prompt(args.device)[0][:, TEXT_TOKENS - 20:]  # a new screenshot + 20 tokens
        ids = torch.cat((ids, reply, obs), 1)
        pv, hws = torch.cat((pv, new_pv)), torch.cat((hws, hws[:1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default=None, choices=["tiny", "full"], help="default: tiny on cpu, full on cuda")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: fp32 cpu, bf16 cuda")
    ap.add_argument("--graphs", default="none", choices=["none", "static", "compile", "graph", "compile+graph"],
                    help="decode through a StaticDecoder: fixed shapes eagerly, torch.compile, captured CUDA "
                         "graphs, or captured compiled steps")
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed per batch size")
    ap.add_argument("--context", type=int, default=512, help="text tokens before batched decode")
    args = ap.parse_args()
    dtype = resolve_device_args(args)
    model = random_model(make_config(args.config), args.device, dtype)
    rows = {"optimized": measure(model, False, args), "naive": measure(model, True, args)}
    header = (f"{'config':6} {'device':6} {'dtype':9} {'path':9} {'prefill tok/s':>13} {'TTFT ms':>9} "
              f"{'dec b1 tok/s':>12} {'dec b4':>9} {'dec b16':>9} {'peak MB':>9} {'KV B/tok':>9} {'opt/naive':>9}")
    print(header)
    print("-" * len(header))
    for path, r in rows.items():
        ratio = r["decode_b1"] / rows["naive"]["decode_b1"] if path == "optimized" else 1.0
        print(f"{args.config:6} {args.device:6} {str(dtype)[6:]:9} {path:9} {r['prefill']:13.0f} "
              f"{r['ttft_ms']:9.1f} {r['decode_b1']:12.1f} {r['decode_b4']:9.1f} {r['decode_b16']:9.1f} "
              f"{r['peak_mb']:9.0f} {r['kv_bytes']:9d} {ratio:8.2f}x")
    print(f"\nopt/naive = decode b1 ratio; TTFT = vision + prefill of 1 screenshot ({GRID[0]}x{GRID[1]} -> "
          f"{GRID[0] * GRID[1] // 4} tokens) + {TEXT_TOKENS} text tokens; decode batches after {args.context} "
          f"tokens; graphs={args.graphs}" + ("; peak MB on CPU = process max RSS" if args.device == "cpu" else ""))
    print("\nprefix reuse (Engine, 8 new tokens per step)")
    print(f"{'step':>4} {'prompt tok':>10} {'prefilled':>9} {'reuse ms':>9} {'fresh ms':>9}")
    for k, n, pre, t_r, t_f in prefix_reuse(model, args):
        print(f"{k:4d} {n:10d} {pre:9d} {t_r:9.1f} {t_f:9.1f}")


if __name__ == "__main__":
    main()
