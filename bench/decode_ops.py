"""Operations per decoded token: a CPU-side count of what a GPU decode step launches.

On a GPU the decode step of this model is bound by its number of small kernels, not by the bytes of
weights it reads (bench/results/h200-2026-11-27.md: about 2,500 kernels and 6.7 ms of kernel time
per token at batch 1, against a 1.2 ms bandwidth floor). Each aten operation below (views excluded)
is one or more kernels on CUDA, so fewer operations per layer is fewer launches. Counted with a
TorchDispatchMode on one static-shape decode step (the graph-decode path, run eagerly) of the tiny
config; the per-layer figure carries over to the full model's 27 layers. Counted twice, side by side:
with the sync-free "gathered" MoE (what the CPU runs; grouped_mm on CUDA has a similar count) and
with the fused decode MoE (`moe_decode`: one operation here, three Triton kernels on CUDA).

    .venv/bin/python bench/decode_ops.py [--top 20]
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import torch
from runtime import make_config, random_model  # bench/ is on sys.path
from torch.utils._python_dispatch import TorchDispatchMode

from kimi_agent.model_runtime.generate import prefill, sample
from kimi_agent.model_runtime.static_decode import StaticDecoder

VIEWS = frozenset({"view", "_unsafe_view", "expand", "t", "transpose", "permute", "unsqueeze", "squeeze", "slice",
                   "select", "as_strided", "alias", "detach", "_reshape_alias", "split", "split_with_sizes",
                   "unbind", "narrow", "reshape", "lift_fresh", "view_as", "unflatten"})


KERNELS_PER_OP = {"moe_decode": 3, "mla_decode": 3}  # Triton launches of a fused operation on CUDA


class OpCounter(TorchDispatchMode):
    """Counts every aten operation that is not a view, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_ops(moe: str) -> collections.Counter[str]:
    """Operations of one decode token of the tiny model with MoE path `moe`."""
    cfg = make_config("tiny")
    model = random_model(cfg, "cpu", torch.float32)
    cache = model.new_cache(1, 2048)
    decoder = StaticDecoder(model, cache, mode="static", moe=moe)
    with torch.inference_mode():
        token = sample(prefill(model, torch.randint(0, 1000, (1, 30)), cache))
        token = sample(decoder(token))  # the first step builds the decoder's buffers
        counter = OpCounter()
        with counter:
            decoder(token)
    return counter.counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=20, help="how many operation names to list")
    args = ap.parse_args()
    layers = make_config("tiny").text.num_hidden_layers
    counts = {moe: count_ops(moe) for moe in ("gathered", "fused")}
    for moe, c in counts.items():
        total = sum(c.values())
        kernels = total + sum((KERNELS_PER_OP[name] - 1) * n for name, n in c.items() if name in KERNELS_PER_OP)
        print(f"{moe:8} MoE: one decode token, {layers} layers: {total} operations, {total / layers:.1f} per layer "
              f"(x 27 layers of Kimi-VL-A3B: about {total / layers * 27:.0f}); as CUDA kernels, the fused "
              f"operations expanded: {kernels / layers:.1f} per layer")
    names = sorted(set().union(*counts.values()), key=lambda n: -counts["gathered"][n])[: args.top]
    print(f"{'gathered':>8} {'fused':>6}  operation")
    for name in names:
        print(f"{counts['gathered'][name]:8d} {counts['fused'][name]:6d}  {name}")


if __name__ == "__main__":
    main()
