"""Every Triton kernel compiles for a Hopper GPU (sm_90) at Kimi-VL-A3B's shapes, through Triton's
real compiler down to a cubin (its bundled ptxas), with the launch settings the runtime uses and
no register spills. No GPU is needed: this is the check the interpreter tests cannot make
(constexpr use, loop types, tl.dot shapes, register and shared-memory budgets)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

BF16_MOE = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "w2_ptr": "*bf16", "idx_ptr": "*i32", "act_ptr": "*bf16",
            "wt_ptr": "*fp32", "out_ptr": "*bf16", "gate_ptr": "*bf16", "bias_ptr": "*fp32", "scale": "fp32"}
BF16_MLA = {"q_ptr": "*bf16", "kva_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "pos_ptr": "*i64",
            "cache_ptr": "*bf16", "norm_w_ptr": "*bf16", "kvb_ptr": "*bf16", "qf_ptr": "*bf16", "eps": "fp32",
            "acc_ptr": "*fp32", "ml_ptr": "*fp32", "out_ptr": "*bf16", "scale": "fp32"}
KIMI = {"D": 2048, "E": 64, "K": 6, "SLOTS": 7, "INTER": 1408, "INTER_S": 2816, "H": 16, "DN": 128, "DR": 64,
        "R": 512, "DV": 128}

# (module, kernel, its compile-time constants beyond KIMI's, num_warps): as the launchers call them
KERNELS: list[tuple[str, str, dict[str, Any], int]] = [
    ("moe_decode_triton", "route_kernel", {"HAS_SHARED": True, "RENORM": True, "BLOCK_E": 64, "BLOCK_D": 256}, 8),
    ("moe_decode_triton", "gate_up_kernel", {"BLOCK_I": 16, "BLOCK_D": 256}, 4),
    ("moe_decode_triton", "down_combine_kernel", {"HAS_SHARED": True, "BLOCK_D": 8, "BLOCK_C": 1024}, 4),
    ("mla_decode_triton", "prep_kernel", {"BLOCK_DN": 16, "BLOCK_R": 128}, 4),
    ("mla_decode_triton", "attend_kernel", {"BLOCK_H": 16, "CHUNK_S": 64, "BLOCK_S": 32}, 8),
    ("mla_decode_triton", "combine_kernel", {"CHUNK_S": 64, "BLOCK_SP": 8, "BLOCK_V": 32}, 4),
    ("norm_triton", "rms_norm_kernel", {"D": 2048, "HAS_RESIDUAL": True, "BLOCK": 2048}, 4),
    ("vision_rope_triton", "vision_rope_kernel", {"H": 16, "D": 72, "BLOCK_H": 16, "BLOCK_P": 64}, 4),
]


@pytest.mark.parametrize(("module", "name", "consts", "warps"), KERNELS, ids=[k[1] for k in KERNELS])
def test_kernel_compiles_for_hopper_without_spills(module: str, name: str, consts: dict[str, Any], warps: int,
                                                   tmp_path: Path) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(f"kimi_agent.model_runtime.kernels.{module}"), name)
    types = {**BF16_MOE, **BF16_MLA, "qkv_ptr": "*bf16", "res_ptr": "*bf16", "w_ptr": "*bf16", "sum_ptr": "*bf16",
             "k_ptr": "*bf16"}
    constants = {a: v for a, v in {**KIMI, **consts}.items() if a in kernel.arg_names}
    if name in ("rms_norm_kernel", "vision_rope_kernel"):  # their D is their own
        constants["D"] = consts["D"]
    if name == "vision_rope_kernel":
        types.update(cos_ptr="*fp32", sin_ptr="*fp32")
    signature = {a: "constexpr" if a in constants else types.get(a, "i32") for a in kernel.arg_names}
    source = ASTSource(kernel, signature, constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    cubin = tmp_path / f"{name}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    assert re.search(r"\bEXIT\b", sass), f"{name}: no machine code in the cubin"
    local = re.findall(r"\b(?:LDL|STL)\b", sass)  # local-memory loads/stores: registers spilled
    assert not local, f"{name} spills registers at {warps} warps ({len(local)} local loads/stores)"
    assert compiled.metadata.shared <= 227 * 1024, f"{name} needs {compiled.metadata.shared} B of shared memory"
