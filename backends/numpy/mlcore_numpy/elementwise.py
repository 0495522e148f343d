"""Activation kernels for the NumPy backend: the core's formulas, op for op, with ``out=``.

Each function runs the same NumPy operations in the same order as the plain Array API
formula in :mod:`mlcore.activations` (so the results are bitwise equal: the tests compare),
but writes every intermediate into one array allocated per call instead of a fresh
temporary per operation: a (256, 512) float32 sigmoid forward allocates one array, not
five. Names and signatures are those of ``mlcore.hookspecs.KERNELS``. A kernel returns None
when its arrays are not plain ndarrays of one dtype and shape (broadcasting, mixed dtypes):
the caller then runs the plain formula, which handles them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ACTIVATION_KERNELS"]


def _plain(*arrays: Any) -> bool:
    """Whether every array is an ndarray of the first one's floating dtype and shape."""
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype.kind != "f":
        return False
    return all(type(a) is np.ndarray and a.dtype == first.dtype and a.shape == first.shape
               for a in arrays[1:])


def relu_backward(x: Any, dy: Any) -> Any:
    """``dy * astype(x > 0, dy.dtype)``: the mask written as 0/1 straight into the result."""
    if not _plain(x, dy):
        return None
    dx = np.empty_like(dy)
    np.greater(x, 0.0, out=dx)
    return np.multiply(dy, dx, out=dx)


def leaky_relu_forward(x: Any, alpha: float) -> Any:
    """``maximum(x, alpha x)`` (``minimum`` for ``alpha > 1``)."""
    if not _plain(x):
        return None
    y = np.multiply(x, alpha, out=np.empty_like(x))
    pick = np.maximum if alpha <= 1.0 else np.minimum
    return pick(x, y, out=y)


def leaky_relu_backward(x: Any, dy: Any, alpha: float) -> Any:
    """``dy * (astype(x > 0) * (1 - alpha) + alpha)``."""
    if not _plain(x, dy):
        return None
    dx = np.empty_like(dy)
    np.greater(x, 0.0, out=dx)
    dx *= 1.0 - alpha
    dx += alpha
    return np.multiply(dy, dx, out=dx)


def sigmoid_forward(x: Any, floor: float) -> Any:
    """``1 / (1 + exp(-maximum(x, floor)))`` in one array."""
    if not _plain(x):
        return None
    y = np.maximum(x, floor, out=np.empty_like(x))
    np.negative(y, out=y)
    np.exp(y, out=y)
    np.add(1.0, y, out=y)
    return np.divide(1.0, y, out=y)


def sigmoid_backward(y: Any, dy: Any) -> Any:
    """``dy * (y * (1 - y))``."""
    if not _plain(y, dy):
        return None
    dx = np.subtract(1.0, y, out=np.empty_like(y))
    np.multiply(y, dx, out=dx)
    return np.multiply(dy, dx, out=dx)


def tanh_backward(y: Any, dy: Any) -> Any:
    """``dy * (1 - y y)``."""
    if not _plain(y, dy):
        return None
    dx = np.multiply(y, y, out=np.empty_like(y))
    np.subtract(1.0, dx, out=dx)
    return np.multiply(dy, dx, out=dx)


def softmax_forward(x: Any, axis: int) -> Any:
    """``e / sum(e, axis)`` with ``e = exp(x - max(x, axis))``."""
    if not _plain(x) or x.ndim == 0:
        return None
    y = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=np.empty_like(x))
    np.exp(y, out=y)
    return np.divide(y, np.sum(y, axis=axis, keepdims=True), out=y)


def softmax_backward(y: Any, dy: Any, axis: int) -> Any:
    """``y * (dy - sum(dy y, axis))``."""
    if not _plain(y, dy) or y.ndim == 0:
        return None
    dx = np.multiply(dy, y, out=np.empty_like(y))
    total = np.sum(dx, axis=axis, keepdims=True)
    np.subtract(dy, total, out=dx)
    return np.multiply(y, dx, out=dx)


def log_softmax_forward(x: Any, axis: int) -> Any:
    """``z - log(sum(exp(z), axis))`` with ``z = x - max(x, axis)``."""
    if not _plain(x) or x.ndim == 0:
        return None
    z = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=np.empty_like(x))
    total = np.sum(np.exp(z), axis=axis, keepdims=True)
    return np.subtract(z, np.log(total, out=total), out=z)


def log_softmax_backward(y: Any, dy: Any, axis: int) -> Any:
    """``dy - exp(y) * sum(dy, axis)``."""
    if not _plain(y, dy) or y.ndim == 0:
        return None
    dx = np.exp(y, out=np.empty_like(y))
    np.multiply(dx, np.sum(dy, axis=axis, keepdims=True), out=dx)
    return np.subtract(dy, dx, out=dx)


ACTIVATION_KERNELS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (relu_backward, leaky_relu_forward, leaky_relu_backward,
                            sigmoid_forward, sigmoid_backward, tanh_backward, softmax_forward,
                            softmax_backward, log_softmax_forward, log_softmax_backward)}
"""Kernel name (``mlcore.hookspecs.KERNELS``) -> function."""
