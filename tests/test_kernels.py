"""Fused backend kernels (hook ``mlcore_kernel``): the same numbers as the plain path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import PluginWarning
from mlcore.hookspecs import hookimpl
from mlcore.layers import Parameter
from mlcore.plugins import kernel


def test_only_numpy_offers_the_fused_updates(backend: Any) -> None:
    for name in ("adam_update", "sgd_update"):
        found = kernel(name, backend.xp)
        assert (found is not None) == (backend.name == "numpy")
    assert kernel("no_such_kernel", backend.xp) is None


def _adam_run(values: list[np.ndarray], grads: list[np.ndarray], fused: bool,
              **kw: Any) -> list[Any]:
    params = [Parameter(v.copy()) for v in values]
    opt = mlcore.Adam(params, lr=0.01, **kw)
    if not fused:
        opt._fused = None
    assert (opt._fused is not None) == fused
    for step in range(3):
        for p, g in zip(params, grads, strict=True):
            p.grad = g * (step + 1)
        opt.step()
    return [p.value for p in params] + opt.m + opt.v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_numpy_adam_kernel_equals_plain_path_bitwise(dtype: Any, weight_decay: float) -> None:
    rng = np.random.default_rng(0)
    shapes = [(300, 257), (5,), (70000,), (3, 4)]  # blocked (> 32768), one block, tiny
    values = [rng.normal(size=s).astype(dtype) for s in shapes]
    values.append(rng.normal(size=(40, 30)).astype(dtype).T)  # not contiguous: unblocked
    grads = [rng.normal(size=v.shape).astype(dtype) for v in values]
    with mlcore.use_backend("numpy"):
        fused = _adam_run(values, grads, True, weight_decay=weight_decay)
        plain = _adam_run(values, grads, False, weight_decay=weight_decay)
    for a, b in zip(fused, plain, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_adamw_uses_the_kernel_and_matches() -> None:
    rng = np.random.default_rng(1)
    values = [rng.normal(size=(200, 300)).astype(np.float32)]
    grads = [rng.normal(size=(200, 300)).astype(np.float32)]
    with mlcore.use_backend("numpy"):
        params = [Parameter(values[0].copy())]
        opt = mlcore.AdamW(params, lr=0.01)
        assert opt._fused is not None
        params[0].grad = grads[0]
        opt.step()
        ref = [Parameter(values[0].copy())]
        plain = mlcore.AdamW(ref, lr=0.01)
        plain._fused = None
        ref[0].grad = grads[0]
        plain.step()
    np.testing.assert_array_equal(params[0].value, ref[0].value)


class _BrokenKernels:
    @hookimpl
    def mlcore_kernel(self, name: str, xp: Any) -> Any:
        raise RuntimeError("kernel plugin bug")


def test_a_failing_kernel_hook_warns_and_falls_back(fresh_registry: Any) -> None:
    pm = fresh_registry.registry().pm
    pm.register(_BrokenKernels(), name="broken-kernels")
    with pytest.warns(PluginWarning, match="plain Array API"):
        assert kernel("adam_update", mlcore.get_backend("numpy").xp) is None


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                {"weight_decay": 0.1}])
def test_numpy_sgd_kernel_equals_plain_path_bitwise(kw: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    shapes = [(300, 257), (7,), (70000,)]
    values = [rng.normal(size=s).astype(np.float32) for s in shapes]
    values.append(rng.normal(size=(40, 30)).astype(np.float32).T)
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in values]
    out = []
    with mlcore.use_backend("numpy"):
        for fused in (True, False):
            params = [Parameter(v.copy()) for v in values]
            opt = mlcore.SGD(params, lr=0.05, **kw)
            assert opt._fused is not None
            if not fused:
                opt._fused = None
            for step in range(3):
                for p, g in zip(params, grads, strict=True):
                    p.grad = g * (step + 1)
                opt.step()
            out.append([p.value for p in params])
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad", [True, False])
def test_numpy_sigmoid_bce_kernel_equals_plain_bitwise(dtype: Any, grad: bool) -> None:
    from mlcore._lossplan import fused_kernel, sigmoid_binary_cross_entropy

    xp = mlcore.get_backend("numpy").xp
    fused = fused_kernel("binary_cross_entropy", xp)
    assert fused is not sigmoid_binary_cross_entropy
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0, 5, 60), [-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4]])
    z = z.astype(dtype).reshape(-1, 1)
    t = rng.integers(0, 2, z.shape[0]).astype(dtype)  # (N,) reshaped to (N, 1) by both
    got, want = fused(xp, z, t, 0.0, grad), sigmoid_binary_cross_entropy(xp, z, t, 0.0, grad)
    assert got[0].dtype == dtype and got[0] == want[0]
    if grad:
        np.testing.assert_array_equal(got[1], want[1])
    else:
        assert got[1] is None and want[1] is None


def test_softmax_cross_entropy_has_no_numpy_kernel_and_runs_plain() -> None:
    from mlcore._lossplan import fused_kernel, softmax_cross_entropy

    assert fused_kernel("cross_entropy", mlcore.get_backend("numpy").xp) is softmax_cross_entropy
