"""The fused decode MoE: the eager reference equals the module's grouped path, the Triton kernels
(run on the CPU by Triton's interpreter) equal the reference, and the stacked weights stay the
module's parameters."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from support.interpreted_kernels import run_interpreted

from kimi_agent.model_runtime.config import DeepseekV3TextConfig
from kimi_agent.model_runtime.fused_moe import (
    fused_moe_available,
    fused_moe_forward,
    moe_decode_args,
    moe_decode_reference,
)
from kimi_agent.model_runtime.kimi_vl import KimiVL
from kimi_agent.model_runtime.moe import DeepseekV3MoE
from kimi_agent.model_runtime.static_decode import moe_impl


def make_moe(cfg: DeepseekV3TextConfig, dtype: torch.dtype, *, seed: int = 0, **changes: object) -> DeepseekV3MoE:
    """A stacked MoE layer of `cfg` (fields replaced by `changes`) with random weights whose routing
    is not a near-tie (the scores spread over [0, 1])."""
    import dataclasses

    torch.manual_seed(seed)
    moe = DeepseekV3MoE(dataclasses.replace(cfg, **changes))
    for name, p in moe.named_parameters():
        torch.nn.init.normal_(p, std=0.5 if name.startswith("gate.") else 0.2)
    moe = moe.to(dtype).requires_grad_(False)
    moe.stack_experts()
    return moe


def reference(moe: DeepseekV3MoE, x: torch.Tensor) -> torch.Tensor:
    return moe_decode_reference(x, *moe_decode_args(moe))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_equals_the_grouped_path(tiny_model: KimiVL, dtype: torch.dtype) -> None:
    moe = make_moe(tiny_model.config.text, dtype)
    x = torch.randn(5, 1, moe.gate.weight.shape[1]).to(dtype)
    with torch.inference_mode():
        moe.impl = "grouped"
        grouped = moe(x)[:, 0]
        fused = reference(moe, x[:, 0])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused, grouped, atol=tol, rtol=tol)


def test_stacked_weights_are_the_parameters(tiny_model: KimiVL) -> None:
    moe = make_moe(tiny_model.config.text, torch.float32)
    assert moe.w13_flat is not None and moe.w2_flat is not None
    flat13, flat2 = moe.w13_flat.untyped_storage().data_ptr(), moe.w2_flat.untyped_storage().data_ptr()
    for name, p in moe.named_parameters():
        if name.startswith("experts.") or name.startswith("shared_experts."):
            owner = flat2 if "down_proj" in name else flat13
            assert p.untyped_storage().data_ptr() == owner, name
    # the shared experts' block starts right after the last routed expert's
    e, i, d = moe.num_experts, moe.inter, moe.gate.weight.shape[1]
    assert torch.equal(moe.w13_flat[e * 2 * i * d :].view(-1, d)[: moe.shared_inter],
                       moe.shared_experts.gate_proj.weight)
    assert torch.equal(moe.w2_flat[e * d * i :].view(d, -1), moe.shared_experts.down_proj.weight)


def test_the_fused_impl_runs_the_layer_as_one_operation(tiny_model: KimiVL) -> None:
    x = torch.randn(2, 3, tiny_model.config.text.hidden_size)
    with torch.inference_mode():
        grouped = tiny_model.language_model(x)
        with moe_impl(tiny_model, "fused"):
            fused = tiny_model.language_model(x)
    torch.testing.assert_close(fused, grouped, atol=1e-5, rtol=1e-5)


def test_fused_kernels_need_cuda_a_half_dtype_and_triton() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not fused_moe_available(cpu, torch.bfloat16)
    assert not fused_moe_available(cuda, torch.float32)
    assert fused_moe_available(cuda, torch.bfloat16) == (importlib.util.find_spec("triton") is not None)


CASES: list[tuple[int, torch.dtype, dict[str, object]]] = [  # rows, dtype, config changes
    (1, torch.bfloat16, {}),
    (3, torch.float16, {"n_shared_experts": 2}),
    (2, torch.float16, {"norm_topk_prob": False}),
    (4, torch.float16, {"n_shared_experts": 0, "num_experts_per_tok": 1}),
    (2, torch.float32, {"hidden_size": 300, "moe_intermediate_size": 24, "n_routed_experts": 5}),
]


def kernel_args(moe: DeepseekV3MoE, x: torch.Tensor) -> dict[str, Any]:
    """A case for the Triton launcher, which takes the sizes as keywords."""
    tensors, sizes = moe_decode_args(moe)[:4], moe_decode_args(moe)[4:]
    names = ("experts", "top_k", "inter", "shared_inter", "scale", "renorm")
    return {"fn": "moe_decode_triton.moe_decode", "args": (x, *tensors), "kw": dict(zip(names, sizes, strict=True))}


@pytest.fixture(scope="module")
def interpreted(tiny_model: KimiVL, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[torch.Tensor, ...]]:
    """(kernel output, reference) per case of CASES: the Triton kernels run on the CPU by Triton's
    interpreter, in a process of its own (tests/support/interpreted_kernels.py)."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    cases, refs = [], []
    for rows, dtype, changes in CASES:
        moe = make_moe(tiny_model.config.text, dtype, seed=rows, **changes)
        x = torch.randn(rows, moe.gate.weight.shape[1]).to(dtype)
        cases.append(kernel_args(moe, x))
        refs.append(reference(moe, x))
    # the last case: the second one again, launched with other block sizes and warps (a sweep's)
    cases.append({**cases[1], "kw": {**cases[1]["kw"], "overrides": OTHER_LAUNCH}})
    refs.append(refs[1])
    return list(zip(run_interpreted(cases, tmp_path_factory.mktemp("interpreted")), refs, strict=True))


OTHER_LAUNCH = {"route_kernel": ({"BLOCK_D": 32}, 4), "gate_up_kernel": ({"BLOCK_I": 8, "BLOCK_D": 32}, 2),
                "down_combine_kernel": ({"BLOCK_D": 16, "BLOCK_C": 16}, None)}


def test_other_launch_settings_give_the_same_answer(interpreted: list[tuple[torch.Tensor, ...]]) -> None:
    out, ref = interpreted[-1]
    torch.testing.assert_close(out, ref, atol=1e-3 * ref.abs().max().item(), rtol=1e-3)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{r}rows-{str(d)[6:]}-{c}" for r, d, c in CASES])
def test_triton_kernels_equal_the_reference(interpreted: list[tuple[torch.Tensor, ...]], case: int) -> None:
    out, ref = interpreted[case]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    # fp16 and fp32 agree to their last bits. Triton's interpreter casts fp32 to bf16 by truncation
    # (the GPU rounds to nearest), so bf16 outputs are up to a few bf16 steps off on the CPU
    tol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 3e-2}[ref.dtype]
    torch.testing.assert_close(out, ref, atol=tol * ref.abs().max().item(), rtol=tol)


def test_fused_forward_needs_stacked_weights(tiny_model: KimiVL) -> None:
    moe = DeepseekV3MoE(tiny_model.config.text)
    with pytest.raises(AssertionError, match="stack_experts"):
        fused_moe_forward(moe, torch.zeros(1, tiny_model.config.text.hidden_size))
