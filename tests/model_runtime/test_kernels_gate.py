"""When Triton kernels run, and what happens when a family cannot be built on this GPU."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from kimi_agent.model_runtime import kernels
from kimi_agent.model_runtime.kernels import TRITON_ENV, run_kernels, triton_enabled, unbuildable


def test_triton_runs_only_on_cuda_in_half_precision_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "triton_installed", lambda: True)
    assert triton_enabled("cuda", torch.bfloat16) and triton_enabled("cuda", torch.float16)
    assert not triton_enabled("cuda", torch.float32) and not triton_enabled("cpu", torch.bfloat16)
    monkeypatch.setenv(TRITON_ENV, "0")
    assert not triton_enabled("cuda", torch.bfloat16)
    monkeypatch.delenv(TRITON_ENV)
    monkeypatch.setattr(kernels, "triton_installed", lambda: False)
    assert not triton_enabled("cuda", torch.bfloat16)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_a_family_that_cannot_be_built_runs_eagerly_from_then_on(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from triton.runtime.errors import OutOfResources

    monkeypatch.setattr(kernels, "_UNBUILDABLE", {})
    launches = []

    def too_big() -> str:
        launches.append(1)
        raise OutOfResources(262144, 232448, "shared memory")

    with caplog.at_level(logging.WARNING, logger="kimi_agent.model_runtime.kernels"):
        assert run_kernels("MLA decode", too_big, lambda: "eager") == "eager"
        assert run_kernels("MLA decode", too_big, lambda: "eager again") == "eager again"
    assert launches == [1]  # not tried a second time
    assert "OutOfResources" in unbuildable()["MLA decode"] and "shared memory" in unbuildable()["MLA decode"]
    assert "Triton MLA decode kernels cannot be built" in caplog.text
    assert run_kernels("MoE", lambda: "kernels", lambda: "eager") == "kernels"  # other families unaffected

    def broken() -> str:
        raise RuntimeError("an illegal memory access")

    with pytest.raises(RuntimeError, match="illegal memory access"):  # only build failures fall back
        run_kernels("MoE", broken, lambda: "eager")
    assert "MoE" not in unbuildable()


def test_launch_overrides_replace_only_what_they_name() -> None:
    from kimi_agent.model_runtime.kernels import with_overrides

    shipped = {"a": ({"BLOCK": 16, "N": 4}, 4), "b": ({"BLOCK": 8}, 8)}
    assert with_overrides(shipped, None) is shipped
    tuned = with_overrides(shipped, {"a": ({"BLOCK": 32}, None), "b": ({}, 2)})
    assert tuned == {"a": ({"BLOCK": 32, "N": 4}, 4), "b": ({"BLOCK": 8}, 2)}
    assert shipped == {"a": ({"BLOCK": 16, "N": 4}, 4), "b": ({"BLOCK": 8}, 8)}  # not changed in place
    with pytest.raises(KeyError, match="no kernel 'c'"):
        with_overrides(shipped, {"c": ({}, 4)})
    with pytest.raises(KeyError, match=r"a has no constant.* WIDTH"):
        with_overrides(shipped, {"a": ({"WIDTH": 1}, None)})
