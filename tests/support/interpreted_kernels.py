"""Runs the fused-MoE Triton kernels on CPU tensors under Triton's interpreter, in a process of its
own: `TRITON_INTERPRET=1` must be set before `triton` is first imported (its own library is jit code
too), and a test process has usually imported it already through `torch._dynamo`.

    python tests/support/interpreted_kernels.py CASES.pt OUT.pt

CASES.pt: a list of dicts, each with the positional tensors `args` (x, gate_weight, bias, w13, w2) and
the keyword arguments `kw` of `kernels.moe_decode_triton.moe_decode`; OUT.pt: the list of outputs."""

from __future__ import annotations

import os
import sys


def main(cases_path: str, out_path: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from kimi_agent.model_runtime.kernels.moe_decode_triton import moe_decode

    cases = torch.load(cases_path)
    torch.save([moe_decode(*case["args"], **case["kw"]) for case in cases], out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
