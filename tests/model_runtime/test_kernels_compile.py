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

TYPES = {  # the argument types of a bf16 model; unnamed arguments are int32 strides and sizes
    "x_ptr": "*bf16", "w13_ptr": "*bf16", "w2_ptr": "*bf16", "idx_ptr": "*i32", "act_ptr": "*bf16",
    "wt_ptr": "*fp32", "out_ptr": "*bf16", "gate_ptr": "*bf16", "bias_ptr": "*fp32", "scale": "fp32",
    "q_ptr": "*bf16", "kva_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "pos_ptr": "*i64",
    "cache_ptr": "*bf16", "norm_w_ptr": "*bf16", "kvb_ptr": "*bf16", "qf_ptr": "*bf16", "eps": "fp32",
    "acc_ptr": "*fp32", "ml_ptr": "*fp32", "qkv_ptr": "*bf16", "res_ptr": "*bf16", "w_ptr": "*bf16",
    "sum_ptr": "*bf16", "k_ptr": "*bf16",
}
# each module's launch_settings at Kimi-VL-A3B's sizes: exactly what its launcher runs on that model
SIZES: dict[str, dict[str, Any]] = {
    "moe_decode_triton": dict(d=2048, experts=64, top_k=6, inter=1408, shared_inter=2816, renorm=True),
    "mla_decode_triton": dict(heads=16, nope=128, rope=64, rank=512, v_dim=128),
    "norm_triton": dict(d=2048, residual=True),
    "vision_rope_triton": dict(heads=16, head_dim=72),
}
KERNELS = [(module, name) for module, names in {
    "moe_decode_triton": ("route_kernel", "gate_up_kernel", "down_combine_kernel"),
    "mla_decode_triton": ("prep_kernel", "attend_kernel", "combine_kernel"),
    "norm_triton": ("rms_norm_kernel",),
    "vision_rope_triton": ("vision_rope_kernel",),
}.items() for name in names]


@pytest.mark.parametrize(("module", "name"), KERNELS, ids=[k[1] for k in KERNELS])
def test_kernel_compiles_for_hopper_without_spills(module: str, name: str, tmp_path: Path) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod = importlib.import_module(f"kimi_agent.model_runtime.kernels.{module}")
    kernel = getattr(mod, name)
    constants, warps = mod.launch_settings(**SIZES[module])[name]
    types = dict(TYPES, **({"cos_ptr": "*fp32", "sin_ptr": "*fp32"} if name == "vision_rope_kernel" else {}))
    signature = {a: "constexpr" if a in constants else types.get(a, "i32") for a in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps})
    cubin = tmp_path / f"{name}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    assert re.search(r"\bEXIT\b", sass), f"{name}: no machine code in the cubin"
    local = re.findall(r"\b(?:LDL|STL)\b", sass)  # local-memory loads/stores: registers spilled
    assert not local, f"{name} spills registers at {warps} warps ({len(local)} local loads/stores)"
    assert compiled.metadata.shared <= 227 * 1024, f"{name} needs {compiled.metadata.shared} B of shared memory"
