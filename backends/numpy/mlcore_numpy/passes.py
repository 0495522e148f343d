"""The NumPy passes of the fused updates: whole arrays, or L2-sized blocks of flat views.

The plain Array API update of :mod:`mlcore.optimizers`, op for op, so the results are bitwise
those of the core's path; :mod:`.kernels` chooses between these and the faster routes.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["BLOCK", "adam_passes", "adam_blocked", "sgd_blocked", "flat_views"]

BLOCK = 32768
"""Elements per block: p, g, m, v and one scratch block (5 x 128 KiB in float32) stay in L2,
so Adam's ten passes read each array from memory once (670k parameters: 1.46 -> 1.0 ms)."""

_scratch = threading.local()


def _buffer(dtype: np.dtype[Any], n: int) -> np.ndarray:
    """A reusable scratch block of ``dtype`` for this thread (no allocation per step)."""
    cache: dict[Any, np.ndarray] = _scratch.__dict__.setdefault("buffers", {})
    buf = cache.get(dtype)
    if buf is None or buf.shape[0] < n:
        buf = cache[dtype] = np.empty(max(n, 1), dtype=dtype)
    return buf


def _adam_block(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float,
                b2: float, eps: float, scale: float, tmp: np.ndarray) -> None:
    """The plain Adam update (mlcore.optimizers.Adam.rule, run in place) on one block, op for op."""
    m *= b1
    m += g
    v *= b2
    np.multiply(g, g, out=tmp)
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps
    tmp *= scale
    np.divide(m, tmp, out=tmp)
    p -= tmp


def adam_passes(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float,
                b2: float, eps: float, scale: float) -> None:
    """The plain Adam update (mlcore.optimizers.Adam.rule, run in place) as whole-array NumPy
    operations: the reference the blocked passes and the compiled loop (:mod:`.jit`) must
    match bit for bit."""
    m *= b1
    m += g
    v *= b2
    v += g * g
    r = np.sqrt(v)
    r += eps
    r *= scale
    p -= m / r


def adam_blocked(pf: np.ndarray, gf: np.ndarray, mf: np.ndarray, vf: np.ndarray, b1: float,
                 b2: float, eps: float, scale: float) -> None:
    """:func:`adam_passes` over 1-D views, one L2-sized block at a time."""
    n = pf.shape[0]
    tmp = _buffer(pf.dtype, min(n, BLOCK))
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        _adam_block(pf[a:b], gf[a:b], mf[a:b], vf[a:b], b1, b2, eps, scale, tmp[: b - a])


def sgd_blocked(pf: np.ndarray, gf: np.ndarray, lr: float) -> None:
    """``p -= lr * g`` over 1-D views, the product formed one L2-sized block at a time."""
    n = pf.shape[0]
    tmp = _buffer(pf.dtype, BLOCK)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        t = tmp[: b - a]
        np.multiply(gf[a:b], lr, out=t)
        pf[a:b] -= t


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Checked:
    """``p`` and its state arrays, once found well-formed by :func:`flat_views`: held by
    weak references only (no views either, whose base would keep them alive: a dropped
    optimiser frees its arrays), valid while the same objects keep their shapes and stay
    writeable."""

    __slots__ = ("c", "refs", "shapes")

    def __init__(self, p: np.ndarray, state: tuple[np.ndarray, ...], c: bool) -> None:
        self.refs = [weakref.ref(a) for a in (p, *state)]
        self.shapes = [a.shape for a in (p, *state)]
        self.c = c

    def holds(self, p: np.ndarray, state: tuple[np.ndarray, ...]) -> bool:
        refs = self.refs
        if len(refs) != len(state) + 1 or refs[0]() is not p or p.shape != self.shapes[0] \
                or not p.flags.writeable:
            return False
        for ref, shape, a in zip(refs[1:], self.shapes[1:], state, strict=True):
            if ref() is not a or a.shape != shape or not a.flags.writeable:
                return False
        return True


_CHECKED: dict[int, _Checked] = {}
"""``id(p)`` -> the last well-formed ``(p, *state)`` checked for it."""


def _state_views(p: np.ndarray, state: tuple[np.ndarray, ...]) -> _Checked | None:
    """The checks of :func:`flat_views` that involve only ``p`` and ``state`` (the arrays an
    optimiser keeps from step to step), remembered when they pass."""
    if type(p) is not np.ndarray:
        return None
    dt, shape, fp = p.dtype, p.shape, p.flags
    if dt not in _FLOATS or not (fp.writeable and fp.aligned):
        return None
    c = fp.c_contiguous
    if not (c or fp.f_contiguous):
        return None
    for a in state:
        fa = a.flags
        if (type(a) is not np.ndarray or a.dtype != dt or a.shape != shape
                or not (fa.writeable and fa.aligned)
                or not (fa.c_contiguous if c else fa.f_contiguous)):
            return None
    for i, a in enumerate(state):  # the updated arrays must be distinct memory
        if np.may_share_memory(a, p) or any(np.may_share_memory(a, b) for b in state[i + 1:]):
            return None
    if len(_CHECKED) >= 4096:  # forget the parameters that are gone
        for key in [k for k, e in _CHECKED.items() if e.refs[0]() is None]:
            del _CHECKED[key]
    found = _CHECKED[id(p)] = _Checked(p, state, c)
    return found


def flat_views(p: np.ndarray, g: np.ndarray, *state: np.ndarray) -> list[np.ndarray] | None:
    """1-D views, in memory order, of ``p``, ``g`` and the optimiser ``state`` arrays.

    ``p`` and ``state`` (updated in place) must be plain, writeable, aligned float32/float64
    ndarrays of one dtype and shape, contiguous in one memory order (C, or Fortran as Dense
    weights are), and ``g`` must not overlap them (unless it is ``p`` itself); else None,
    and the caller runs NumPy's own operations, which handle (or refuse) such arrays. A
    ``g`` in another layout is first copied into ``p``'s (one pass). ``p`` and each state
    array must not overlap one another. Called on every update, so the checks of ``p`` and
    ``state`` (the same arrays step after step) are remembered per parameter
    (:class:`_Checked`: the same objects, shapes and writeable flags) and only ``g``, a new
    array each step, is checked each time (64-128-128-10's six parameters: 23 -> 15 µs).
    """
    checked = _CHECKED.get(id(p))
    if checked is None or not checked.holds(p, state):
        checked = _state_views(p, state)
        if checked is None:
            return None
    if type(g) is not np.ndarray or g.dtype != p.dtype or g.shape != p.shape:
        return None
    if g is not p and (np.may_share_memory(g, p)
                       or any(np.may_share_memory(g, a) for a in state)):
        return None
    c, fg = checked.c, g.flags
    if not (fg.c_contiguous if c else fg.f_contiguous):
        g = g.copy(order="C" if c else "F")  # p's layout
    if c:
        return [p.reshape(-1), g.reshape(-1), *(a.reshape(-1) for a in state)]
    return [p.T.reshape(-1), g.T.reshape(-1), *(a.T.reshape(-1) for a in state)]
