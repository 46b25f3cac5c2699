"""The fused MLA decode attention: the operation keeps the eager formulas (the decode tests of the
whole model run through it on the CPU), and the Triton kernels (run on the CPU by Triton's
interpreter) equal the operation's reference: the output and the latent written into the cache."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from support.interpreted_kernels import run_interpreted

from kimi_agent.model_runtime.fused_mla import mla_decode_reference, mla_kernel_shapes_ok
from kimi_agent.model_runtime.rope import paired_cos_sin, text_rope_cos_sin

HEADS, NOPE, ROPE, RANK, V_DIM = 3, 16, 16, 32, 16  # 3 heads: padded to 16 inside the kernels


def case(dtype: torch.dtype, positions: list[int], slots: int, per_row: bool, seed: int) -> dict[str, Any]:
    """Arguments of one mla_decode call: rows at `positions` over a cache of `slots` positions whose
    earlier latents (and the garbage past each position) are random. q and kva are views of one
    [B, H*qk + R+dr] output, as the stacked projection gives them."""
    g = torch.Generator().manual_seed(seed)
    b = len(positions)

    def rnd(*shape: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    pos = torch.tensor(positions)
    cos, sin = text_rope_cos_sin(pos if per_row else pos[:1], ROPE, 50000.0, dtype)
    cos2, sin2 = paired_cos_sin(cos, sin)  # [B or 1, dr]
    both = rnd(b, HEADS * (NOPE + ROPE) + RANK + ROPE)
    q, kva = both.split([HEADS * (NOPE + ROPE), RANK + ROPE], dim=-1)
    return {"fn": "mla_decode_triton.mla_decode",
            "args": (q, kva, cos2, sin2,
                     pos if per_row else pos[:1].expand(b), rnd(b, slots, RANK + ROPE), 1 + rnd(RANK, std=0.2),
                     rnd(HEADS * (NOPE + V_DIM), RANK, std=0.3)),
            "kw": {"eps": 1e-6, "scale": (NOPE + ROPE) ** -0.5, "heads": HEADS, "nope": NOPE, "rope": ROPE,
                   "v_dim": V_DIM}}


CASES = [  # dtype, positions, slots, per-row positions
    (torch.float32, [5, 260], 300, True),  # row 0: two splits past its position; row 1: the last split partly
    (torch.float16, [130, 7, 299], 300, True),
    (torch.float16, [64, 64], 200, False),  # one position for every row (stride 0), one cos/sin row
    (torch.float16, [40], 64, True),
    (torch.float16, [1050, 3], 1100, True),  # 17 splits of 64 positions: combine merges them 8 at a time
]  # no bf16: Triton's interpreter reads bf16 operands of tl.dot as raw bits (fp16 runs the same code)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[torch.Tensor, ...]]:
    """(kernel output, cache after the kernels, reference output, cache after the reference, cache
    before) per case of CASES."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    cases = [case(d, p, s, r, seed=i) for i, (d, p, s, r) in enumerate(CASES)]
    # the last case: the first one again, launched with other block sizes, chunks and warps (a sweep's)
    cases.append({**case(*CASES[0], seed=0), "kw": {**cases[0]["kw"], "overrides": OTHER_LAUNCH}})
    refs = []
    for c in cases:
        args = list(c["args"])
        before, args[5] = args[5], args[5].clone()
        kw = {k: v for k, v in c["kw"].items() if k != "overrides"}  # launch settings: the kernels' only
        refs.append((mla_decode_reference(*args, **kw), args[5], before))
    ran = run_interpreted(cases, tmp_path_factory.mktemp("mla"), with_args=True)
    return [(out, args[5], *ref) for (out, args), ref in zip(ran, refs, strict=True)]


OTHER_LAUNCH = {"prep_kernel": ({"BLOCK_R": 16, "BLOCK_DN": 8}, 2), "attend_kernel": ({"CHUNK_S": 128, "BLOCK_S": 16}, 4),
                "combine_kernel": ({"CHUNK_S": 128, "BLOCK_SP": 4, "BLOCK_V": 8}, 2)}


def test_other_launch_settings_give_the_same_answer(interpreted: list[tuple[torch.Tensor, ...]]) -> None:
    out, cache, ref, ref_cache, _ = interpreted[-1]
    torch.testing.assert_close(out, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(cache, ref_cache)


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{str(d)[6:]}-{p}-{'rows' if r else 'shared'}" for d, p, _, r in CASES])
def test_triton_kernels_equal_the_reference(interpreted: list[tuple[torch.Tensor, ...]], index: int) -> None:
    out, cache, ref, ref_cache, before = interpreted[index]
    dtype, positions = CASES[index][0], CASES[index][1]
    assert out.dtype == dtype and out.shape == ref.shape == (len(positions), HEADS * V_DIM)
    # to a few steps of their last bits (the softmax runs online, in another order)
    tol = {torch.float32: 1e-5, torch.float16: 4e-3}[dtype]
    torch.testing.assert_close(out, ref, atol=tol * ref.abs().max().item(), rtol=tol)
    written = torch.zeros(cache.shape[:2], dtype=torch.bool)
    written[torch.arange(len(positions)), torch.tensor(positions)] = True
    assert torch.equal(cache[~written], before[~written])  # nothing else in the cache changed
    assert not torch.equal(cache[written], before[written])
    torch.testing.assert_close(cache[written], ref_cache[written], atol=tol * 4, rtol=tol)


def test_kernel_shapes() -> None:
    assert mla_kernel_shapes_ok(16, 128, 64, 512, 128)  # Kimi-VL-A3B
    assert not mla_kernel_shapes_ok(2, 16, 8, 16, 12)  # the tiny test model: the reference runs
