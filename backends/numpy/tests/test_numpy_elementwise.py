"""mlcore-numpy's activation kernels: bitwise the plain formulas of mlcore.activations, on
every floating dtype, extremes included (the kernel is a fast path, never a second
definition)."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp
import numpy as np
import pytest
from mlcore_numpy.elementwise import ACTIVATION_KERNELS

import mlcore
from mlcore import activations
from mlcore.hookspecs import KERNELS

DTYPES = [np.float16, np.float32, np.float64]
ACTS = [("relu", {}), ("leaky_relu", {}), ("leaky_relu", {"alpha": 1.5}), ("sigmoid", {}),
        ("tanh", {}), ("softmax", {}), ("softmax", {"axis": 0}), ("log_softmax", {}),
        ("log_softmax", {"axis": 0})]


def _inputs(dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(8, 64) values: normal ones, then zeros of both signs, the dtype's extremes,
    infinities, NaN and subnormals on the last rows."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 4, (8, 64)).astype(dtype)
    dy = rng.normal(0, 1, (8, 64)).astype(dtype)
    fi = np.finfo(dtype)
    extremes = np.array([0.0, -0.0, fi.max, -fi.max, fi.tiny, -fi.tiny, fi.smallest_subnormal,
                         np.inf, -np.inf, np.nan, 1.0, -1.0, 88.8, -88.8, 710.0, -710.0],
                        dtype=dtype)
    x[-2, :16] = extremes
    x[-1, :16] = extremes[::-1]
    dy[-1, :16] = extremes  # infinite and NaN upstream gradients as well
    return x, dy


def _plain(act: Any, x: np.ndarray, dy: np.ndarray) -> tuple[Any, Any]:
    """The formula with every kernel switched off."""
    saved = activations._fused
    activations._fused = lambda name, xp: None  # type: ignore[assignment]
    try:
        y = act.forward_unchecked(xp, x)
        return y, act.backward_unchecked(xp, x, y, dy)
    finally:
        activations._fused = saved


def _same(a: Any, b: Any) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")), \
        "not bitwise equal"


def test_every_kernel_is_in_the_core_table() -> None:
    assert set(ACTIVATION_KERNELS) <= set(KERNELS)
    for name in ACTIVATION_KERNELS:
        assert activations._fused(name, xp) is ACTIVATION_KERNELS[name]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("name", "params"), ACTS, ids=lambda a: str(a))
def test_kernels_are_bitwise_the_formula(name: str, params: dict[str, Any], dtype: Any) -> None:
    act = mlcore.activation(name, **params)
    x, dy = _inputs(dtype)
    with np.errstate(all="ignore"):
        want_y, want_dx = _plain(act, x, dy)
        y = act.forward_unchecked(xp, x)
        dx = act.backward_unchecked(xp, x, y, dy)
        public_y = act.forward(x)
        public_dx = act.backward(x, public_y, dy)
    for got, want in ((y, want_y), (dx, want_dx), (public_y, want_y), (public_dx, want_dx)):
        _same(got, want)


def test_kernels_leave_their_inputs_alone() -> None:
    x, dy = _inputs(np.float32)
    x0, dy0 = x.copy(), dy.copy()
    with np.errstate(all="ignore"):
        for name, params in ACTS:
            act = mlcore.activation(name, **params)
            act.backward(x, act.forward(x), dy)
    _same(x, x0)
    _same(dy, dy0)


@pytest.mark.parametrize("name", sorted(ACTIVATION_KERNELS))
def test_other_arrays_fall_back_to_the_formula(name: str) -> None:
    """Mixed dtypes, broadcasting shapes, 0-d arrays: the kernel declines (None)."""
    kernel = ACTIVATION_KERNELS[name]
    a32, a64 = np.ones((2, 3), np.float32), np.ones((2, 3), np.float64)
    extra = (0.5,) if name.startswith(("leaky", "sigmoid_forward")) else ()
    extra = (-1,) if "softmax" in name else extra
    n_arrays = 1 if name.endswith("forward") else 2
    if n_arrays == 2:
        assert kernel(a32, a64, *extra) is None
        assert kernel(a32, np.ones((1, 3), np.float32), *extra) is None
    else:
        assert kernel(np.ones((2, 3), np.int64), *extra) is None
    assert kernel(*[[1.0, 2.0]] * n_arrays, *extra) is None


def test_mixed_dtypes_give_the_formulas_promotion() -> None:
    act = mlcore.activation("sigmoid")
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    y = act.forward(x)
    dx = act.backward(x, y, np.ones((3, 4), np.float64))
    assert dx.dtype == np.float64
