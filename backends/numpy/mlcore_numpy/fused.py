"""Fused activation and loss kernels: one compiled pass per row where NumPy makes several.

Each is a fast path of a formula whose home is mlcore's core (``mlcore.activations``,
``mlcore.losses``); the core asks for it by its name in ``mlcore.hookspecs.KERNELS`` and
runs its own formula whenever the kernel answers None: Numba missing or switched off
(``MLCORE_NUMPY_JIT=0``), an input it does not take (another dtype than float32/float64,
not C-contiguous, a softmax over another axis than the last, operands of mixed dtypes or
shapes), or one too small to repay the call. The loops are in :mod:`._loops`; the tests
compare each kernel with the core's formula on float32 and float64, extremes included, to
a stated number of ulp of each row's scale (docs/backends.md); ReLU's and leaky ReLU's bit
for bit (no fast-math in their loops: a select and a multiply, as the formula's).

Measured at (256, 512) float32 on 2 shared cores (process time, µs; formula → kernel):
softmax 200 → 82, its backward 108 → 20, sigmoid 128 → 62. ReLU and leaky ReLU (wall µs,
median of 7 interleaved rounds, one call each): relu 25 → 12, its backward 34 → 18,
leaky_relu 28 → 13, its backward 88 → 18 (NumPy makes three passes and two temporaries for
``dy * ((x > 0)(1 - alpha) + alpha)``). ``tanh``'s forward is not here: NumPy's own
vectorised ``tanh`` (33 µs) beats the compiled one (85 µs).

Loading Numba costs ~0.5 s per process, so, as for the Adam loop (:mod:`.jit`), the loops
load with the first input of ``LOAD_MIN`` elements (or at once with ``MLCORE_NUMPY_JIT=1``);
once loaded they serve inputs of ``MIN`` elements or more.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ._switch import Optional, switch

__all__ = ["Fused", "fused", "loops", "KERNELS", "LOAD_MIN", "MIN"]

LOAD_MIN = 65536
"""The first input this large loads the compiled loops (a (256, 256) activation)."""

MIN = 2048
"""Smallest input the loops take once loaded: below it the formula's NumPy calls cost
about as much as the checks before a compiled call."""

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Fused(Optional):
    """The compiled loops of this process (:mod:`._loops`), or the reason there are none."""

    SWITCH = "MLCORE_NUMPY_JIT"

    def __init__(self) -> None:
        self.loops: ModuleType | None = None
        super().__init__()

    def _load(self) -> None:
        try:
            import numba  # noqa: F401 - only whether it is there
        except ImportError:
            self.reason = "Numba is not installed (pip install 'mlcore-numpy[jit]')"
            return
        from . import _loops

        x = np.zeros((1, 4), np.float32)
        out = np.empty_like(x)
        _loops.softmax_rows(x, out)  # compiles, or loads the cached machine code
        if not np.allclose(out, 0.25):
            raise ArithmeticError(f"self-test: softmax of zeros gave {out}, not 0.25")
        self.loops, self.available, self.reason = _loops, True, ""


@functools.cache
def fused() -> Fused:
    """The process's :class:`Fused` (Numba imported on first call)."""
    return Fused()


def loops(size: int) -> ModuleType | None:
    """The compiled loops for an input of ``size`` elements, or None (run the formula)."""
    if size < MIN:
        return None
    if size < LOAD_MIN and not fused.cache_info().currsize and switch(Fused.SWITCH) != "on":
        return None
    return fused().loops


def _big(a: Any) -> bool:
    """An ndarray of at least ``MIN`` elements: asked first, so that a small input (an XOR
    step) declines in one comparison instead of the full checks."""
    return type(a) is np.ndarray and a.size >= MIN


def _take(*arrays: Any) -> bool:
    """Plain C-contiguous float32/float64 ndarrays of one dtype and shape."""
    first = arrays[0]
    for a in arrays:
        if (type(a) is not np.ndarray or a.dtype != first.dtype or a.shape != first.shape
                or not a.flags.c_contiguous):
            return False
    return first.dtype in _FLOATS


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _last(a: np.ndarray, axis: int) -> bool:
    return a.ndim >= 1 and axis in (-1, a.ndim - 1)


def _row_kernel(loop: str) -> Callable[..., np.ndarray | None]:
    def kernel(x: np.ndarray, axis: int) -> np.ndarray | None:
        lib = loops(x.size) if _big(x) and _take(x) and _last(x, axis) else None
        if lib is None:
            return None
        out = np.empty_like(x)
        getattr(lib, loop)(_rows(x), _rows(out))
        return out
    kernel.__name__ = kernel.__qualname__ = loop.removesuffix("_rows")
    return kernel


def _row_backward(loop: str) -> Callable[..., np.ndarray | None]:
    def kernel(y: np.ndarray, dy: np.ndarray, axis: int) -> np.ndarray | None:
        lib = loops(y.size) if _big(y) and _take(y, dy) and _last(y, axis) else None
        if lib is None:
            return None
        out = np.empty_like(y)
        getattr(lib, loop)(_rows(y), _rows(dy), _rows(out))
        return out
    kernel.__name__ = kernel.__qualname__ = loop.removesuffix("_rows")
    return kernel


def _flat_kernel(loop: str) -> Callable[..., np.ndarray | None]:
    """``loop(x, out)`` over the flattened input, or None for inputs it does not take."""
    def kernel(x: np.ndarray) -> np.ndarray | None:
        lib = loops(x.size) if _big(x) and _take(x) else None
        if lib is None:
            return None
        out = np.empty_like(x)
        getattr(lib, loop)(x.reshape(-1), out.reshape(-1))
        return out
    kernel.__name__ = kernel.__qualname__ = loop.removesuffix("_flat")
    return kernel


def _flat_backward(loop: str) -> Callable[..., np.ndarray | None]:
    def kernel(y: np.ndarray, dy: np.ndarray) -> np.ndarray | None:
        lib = loops(y.size) if _big(y) and _take(y, dy) else None
        if lib is None:
            return None
        out = np.empty_like(y)
        getattr(lib, loop)(y.reshape(-1), dy.reshape(-1), out.reshape(-1))
        return out
    kernel.__name__ = kernel.__qualname__ = loop.removesuffix("_flat")
    return kernel


def sigmoid(x: np.ndarray) -> np.ndarray | None:
    """``1 / (1 + e^(-max(x, floor)))``, ``floor = 1 - log(finfo.max)`` (the core's
    ``exp_floor``), or None."""
    lib = loops(x.size) if _big(x) and _take(x) else None
    if lib is None:
        return None
    out = np.empty_like(x)
    floor = x.dtype.type(1.0 - math.log(np.finfo(x.dtype).max))
    lib.sigmoid_flat(x.reshape(-1), floor, out.reshape(-1))
    return out


def relu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray | None:
    """``dy (x > 0)``, the product kept (``inf * 0`` is NaN, ``-1 * 0`` is -0), or None (as
    :func:`_flat_backward`'s kernels, but of the input ``x``, as its table entry names it)."""
    lib = loops(x.size) if _big(x) and _take(x, dy) else None
    if lib is None:
        return None
    out = np.empty_like(x)
    lib.relu_backward_flat(x.reshape(-1), dy.reshape(-1), out.reshape(-1))
    return out


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray | None:
    """``maximum(x, alpha x)`` for ``alpha <= 1``, else ``minimum``, or None; ``alpha x`` in
    the input's type, as NumPy rounds a Python float against a float32 array."""
    lib = loops(x.size) if _big(x) and _take(x) else None
    if lib is None:
        return None
    out = np.empty_like(x)
    lib.leaky_relu_flat(x.reshape(-1), x.dtype.type(alpha), alpha <= 1.0, out.reshape(-1))
    return out


@functools.lru_cache(maxsize=64)
def _slopes(dtype: np.dtype[Any], alpha: float) -> tuple[Any, Any]:
    """The formula's two slopes, ``(x > 0)(1 - alpha) + alpha`` for x > 0 and x <= 0,
    computed by that NumPy expression in ``dtype`` (once per dtype and alpha: ~3 µs)."""
    pos, neg = np.array([1.0, 0.0], dtype) * (1.0 - alpha) + alpha
    return pos, neg


def leaky_relu_backward(x: np.ndarray, dy: np.ndarray, alpha: float) -> np.ndarray | None:
    """``dy ((x > 0)(1 - alpha) + alpha)``, or None: the two slopes come from that very
    NumPy expression on ``[1, 0]`` in the input's type (:func:`_slopes`), so they round as
    the formula's do (``(1 - alpha) + alpha`` need not be 1: alpha = -0.67 gives
    0.99999994 in float32)."""
    lib = loops(x.size) if _big(x) and _take(x, dy) else None
    if lib is None:
        return None
    pos, neg = _slopes(x.dtype, alpha)
    out = np.empty_like(x)
    lib.leaky_relu_backward_flat(x.reshape(-1), dy.reshape(-1), pos, neg, out.reshape(-1))
    return out


def softmax_cross_entropy(xp: Any, z: np.ndarray, t: np.ndarray, smoothing: float = 0.0,
                          grad: bool = True) -> tuple[Any, np.ndarray | None] | None:
    """The mean cross-entropy of softmax(z) and its gradient (``KERNELS``), or None."""
    if not _big(z) or not _take(z) or z.ndim != 2 or type(t) is not np.ndarray:
        return None
    labels = t.ndim == 1 and t.dtype.kind in "iu" and t.shape[0] == z.shape[0]
    if not labels and not (smoothing == 0.0 and _take(z, t)):
        return None
    lib = loops(z.size)
    if lib is None:
        return None
    n, dtype = z.shape[0], z.dtype.type
    values = np.empty(n, z.dtype)
    g = np.empty_like(z) if grad else np.empty((1, z.shape[1]), z.dtype)
    if labels:
        if not lib.softmax_xent_labels(z, t, dtype(smoothing), g, grad, values):
            return None  # a label out of range: the formula raises
    else:
        lib.softmax_xent_rows(z, t, g, grad, values)
    return xp.sum(values) * (1.0 / n), (g if grad else None)


KERNELS: dict[str, Callable[..., Any]] = {
    "softmax": _row_kernel("softmax_rows"),
    "softmax_backward": _row_backward("softmax_backward_rows"),
    "log_softmax": _row_kernel("log_softmax_rows"),
    "log_softmax_backward": _row_backward("log_softmax_backward_rows"),
    "sigmoid": sigmoid,
    "sigmoid_backward": _flat_backward("sigmoid_backward_flat"),
    "tanh_backward": _flat_backward("tanh_backward_flat"),
    "relu": _flat_kernel("relu_flat"),  # maximum(x, 0): NaN stays NaN, -0 gives +0
    "step": _flat_kernel("step_flat"),  # astype(x > 0): one pass, no boolean temporary
    "relu_backward": relu_backward,
    "leaky_relu": leaky_relu,
    "leaky_relu_backward": leaky_relu_backward,
    "softmax_cross_entropy": softmax_cross_entropy,
}
"""The kernels by their ``mlcore.hookspecs.KERNELS`` name."""
