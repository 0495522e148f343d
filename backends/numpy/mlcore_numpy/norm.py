"""Fused BatchNorm kernels (training mode): the statistics, normalisation and backward of a
(N, F) batch in a few compiled passes where NumPy makes seven each way.

Each is a fast path of ``mlcore.layers.normalization.BatchNorm``'s formula (its training
forward, not synced, and ``_Norm._affine``'s backprop), which asks for it by its name in
``mlcore.hookspecs.KERNELS`` and runs its own formula whenever the kernel answers None:
Numba missing or switched off (``MLCORE_NUMPY_JIT=0``), an input it does not take (not a
2-D C-contiguous float32/float64 ndarray, parameters of another dtype or shape), or one too
small to repay the call. The loops (:mod:`._norm_loops`) make the formula's operations in
its order and float type, so they give its numbers (bitwise with NumPy 2.x; the tests state
a few ulp of each feature's scale).

They load with the activation kernels (:func:`.fused.loops`: the first input of
``LOAD_MIN`` elements, or at once with ``MLCORE_NUMPY_JIT=1``) and then serve inputs of
``MIN`` elements or more. Measured at (256, 256) float32 on 2 shared cores (process time,
µs; formula → kernel): forward 102 → 26, backward 88 → 22; at (256, 128): 64 → 20, 60 → 13.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from . import fused as _fused
from ._switch import Optional
from .fused import _big, _take

__all__ = ["NormLoops", "norm_loops", "batch_norm_forward", "batch_norm_backward", "KERNELS"]


class NormLoops(Optional):
    """The compiled BatchNorm loops (:mod:`._norm_loops`), or the reason there are none."""

    SWITCH = "MLCORE_NUMPY_JIT"

    def __init__(self) -> None:
        self.loops: ModuleType | None = None
        super().__init__()

    def _load(self) -> None:
        from . import _norm_loops  # Numba is there: fused.loops() answered first

        x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
        one, zero = np.ones(2, np.float32), np.zeros(2, np.float32)
        out = np.empty((2, 2, 2), np.float32)
        stats = np.empty((3, 2), np.float32)
        _norm_loops.batch_norm_forward(x, one, zero, np.float32(0.0), out[0], out[1], *stats)
        if not np.array_equal(out[0], [[-1.0, -1.0], [1.0, 1.0]]):
            raise ArithmeticError(f"self-test: BatchNorm of {x.tolist()} gave {out[0]}")
        self.loops, self.available, self.reason = _norm_loops, True, ""


@functools.cache
def norm_loops() -> NormLoops:
    """The process's :class:`NormLoops` (compiled, or loaded from Numba's cache, on first
    call)."""
    return NormLoops()


def _loops(size: int) -> ModuleType | None:
    """The BatchNorm loops for an input of ``size`` elements, or None (run the formula):
    gated as the activation kernels are (:func:`.fused.loops`)."""
    if _fused.loops(size) is None:
        return None
    return norm_loops().loops


def _params(a: np.ndarray, *vectors: Any) -> bool:
    """``vectors`` are C-contiguous ndarrays of shape (F,) and ``a``'s dtype."""
    f = a.shape[1]
    return all(type(v) is np.ndarray and v.dtype == a.dtype and v.shape == (f,)
               and v.flags.c_contiguous for v in vectors)


def batch_norm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                       eps: float) -> tuple[np.ndarray, ...] | None:
    """``(y, xhat, mean, var, inv)`` of BatchNorm's training forward over the rows of
    ``x`` (``KERNELS``), or None."""
    if not (_big(x) and x.ndim == 2 and _take(x) and _params(x, gamma, beta)
            and isinstance(eps, float)):
        return None
    lib = _loops(x.size)
    if lib is None:
        return None
    y, xhat = np.empty_like(x), np.empty_like(x)
    mean, var, inv = np.empty((3, x.shape[1]), x.dtype)
    lib.batch_norm_forward(x, gamma, beta, x.dtype.type(eps), y, xhat, mean, var, inv)
    return y, xhat, mean, var, inv


def batch_norm_backward(dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray,
                        inv: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """``(dx, sum_dy_xhat, sum_dy)`` of BatchNorm's training backward (``KERNELS``), or
    None."""
    if not (_big(dy) and dy.ndim == 2 and _take(dy, xhat) and _params(dy, gamma, inv)):
        return None
    lib = _loops(dy.size)
    if lib is None:
        return None
    dx = np.empty_like(dy)
    sum_dy_xhat, sum_dy = np.empty((2, dy.shape[1]), dy.dtype)
    lib.batch_norm_backward(dy, xhat, gamma, inv, dx, sum_dy_xhat, sum_dy)
    return dx, sum_dy_xhat, sum_dy


KERNELS: dict[str, Callable[..., Any]] = {
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
}
"""The kernels by their ``mlcore.hookspecs.KERNELS`` name."""
