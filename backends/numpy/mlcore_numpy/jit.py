"""Numba-compiled fused loops for the NumPy backend (optional: ``mlcore-numpy[jit]``).

NumPy runs Adam as ten array operations, each a pass over memory (blocked in L2 by
:func:`mlcore_numpy.passes.adam_blocked`, still ten passes of instructions). One compiled
loop reads ``p, g, m, v`` once, updates them in registers and writes ``p, m, v`` once, with
the same operations in the same order and float type, so the results are bitwise those of
the NumPy passes (no fast-math, no contraction into fused multiply-adds: the tests compare).

The loop runs on one thread: NumPy's OpenBLAS keeps its threads spinning between matrix
products, and a second thread pool (Numba's ``parallel=True``, Python threads) fighting them
made a 784-512-512-10 training step four times slower when tried.

Importing Numba and loading the cached loop costs ~0.5 s per process (compiling it the first
time, ~1.5 s; ``cache=True`` keeps the machine code in ``__pycache__``). That pays off only
for large models, so by default it happens on the first update of a parameter of at least
``kernels.JIT_LOAD_MIN`` elements (131072: a 784-512 layer; the digits demo never loads it);
``MLCORE_NUMPY_JIT=1`` loads it with the first Adam optimiser, ``MLCORE_NUMPY_JIT=0`` never.
Without Numba, or when compiling or the self-test fails, :attr:`Jit.available` is False with
the reason, and the NumPy passes run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ._switch import Optional, switch
from .passes import adam_passes

__all__ = ["Jit", "jit", "loaded", "eager", "switch"]


def _adam_loop(p: Any, g: Any, m: Any, v: Any, b1: Any, b2: Any, eps: Any,
               scale: Any) -> None:  # pragma: no cover - run compiled by Numba
    """``m = b1 m + g; v = b2 v + g*g; p -= m / ((sqrt(v) + eps) * scale)`` per element,
    in the NumPy passes' order (1-D contiguous arrays, scalars of the arrays' dtype)."""
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + gi
        vi = v[i] * b2 + gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= mi / ((np.sqrt(vi) + eps) * scale)


class Jit(Optional):
    """The compiled loops of this process, or the reason there are none."""

    SWITCH = "MLCORE_NUMPY_JIT"

    def __init__(self) -> None:
        self.version = ""
        self.adam: Callable[..., None] | None = None
        super().__init__()
        if not self.available:
            self.adam = None

    def _load(self) -> None:
        try:
            import numba
        except ImportError:
            self.reason = "Numba is not installed (pip install 'mlcore-numpy[jit]')"
            return
        sigs = [f"void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, {t})"
                for t in ("float32", "float64")]
        try:
            self.adam = numba.njit(sigs, cache=True, nogil=True,
                                   error_model="numpy")(_adam_loop)
        except Exception:  # noqa: BLE001 - no writable cache directory: compile each process
            self.adam = numba.njit(sigs, cache=False, nogil=True,
                                   error_model="numpy")(_adam_loop)
        self.version = str(numba.__version__)
        for dtype in (np.float32, np.float64):  # self-test against the NumPy passes
            rng = np.random.default_rng(0)
            p, g = rng.normal(size=(2, 257)).astype(dtype)
            m, v = rng.normal(size=257).astype(dtype), rng.random(257).astype(dtype)
            wp, wm, wv = p.copy(), m.copy(), v.copy()
            b1, b2, eps, scale = 0.9, 0.999, 1e-8, 3.0
            adam_passes(wp, g, wm, wv, b1, b2, eps, scale)
            t = np.dtype(dtype).type
            self.adam(p, g, m, v, t(b1), t(b2), t(eps), t(scale))
            if not all(np.array_equal(a, b) for a, b in zip((p, m, v), (wp, wm, wv), strict=True)):
                raise ArithmeticError(f"self-test: the compiled Adam loop differs from the "
                                      f"NumPy passes in {np.dtype(dtype).name}")
        self.available, self.reason = True, ""


def loaded() -> Jit | None:
    """The process's :class:`Jit` if :func:`jit` has run, else None (loads nothing)."""
    return jit() if jit.cache_info().currsize else None


def eager() -> bool:
    """Whether ``MLCORE_NUMPY_JIT=1`` asks to load the loops with the first optimiser."""
    return switch("MLCORE_NUMPY_JIT") == "on"


@functools.cache
def jit() -> Jit:
    """The process's :class:`Jit` (Numba imported and loops compiled on first call)."""
    return Jit()
