"""Fused NumPy kernels offered to mlcore through the ``mlcore_kernel`` hook.

Each has a plain Array API twin in the core, which every other backend runs; these must
give the same numbers (the tests compare them bitwise).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .jit import eager, jit, loaded, switch

__all__ = ["adam_update", "sgd_update", "kernel"]

BLOCK = 32768
"""Elements per block: p, g, m, v and one scratch block (5 x 128 KiB in float32) stay in L2,
so Adam's ten passes read each array from memory once (670k parameters: 1.46 -> 1.0 ms)."""

JIT_LOAD_MIN = 131072
"""The first update of a parameter this large loads the compiled loop (:mod:`.jit`: ~0.5 s
once per process, repaid within a few hundred steps of a 784-512 layer, never by a small
model)."""

JIT_MIN = 1024
"""Smallest parameter the compiled Adam loop takes: below it the checks before the call cost
more than the ten NumPy operations (4 elements: 4.9 vs 3.6 µs; 5120: 6.9 vs 10 µs)."""

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
    """The plain Adam update (mlcore.optim.Adam._step) on one block, op for op."""
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
    """The plain Adam update (mlcore.optim.Adam._step) as whole-array NumPy operations: the
    reference the blocked passes and the compiled loop (:mod:`.jit`) must match bit for bit."""
    m *= b1
    m += g
    v *= b2
    v += g * g
    r = np.sqrt(v)
    r += eps
    r *= scale
    p -= m / r


def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float,
                b2: float, eps: float, scale: float) -> None:
    """In place: ``m = b1 m + g; v = b2 v + g*g; p -= m / ((sqrt(v) + eps) * scale)``.

    With Numba (:mod:`mlcore_numpy.jit`, loaded by the first parameter of ``JIT_LOAD_MIN``
    elements) one compiled loop does it in a single pass over memory for every parameter
    of ``JIT_MIN`` elements or more; else the NumPy passes run in L2-sized blocks. Both
    give the same bits. Arrays of one block, or not contiguous in one layout (see
    :func:`_flats`), run the same NumPy ops unblocked.
    """
    compiled = loaded() if p.size < JIT_LOAD_MIN else jit()
    loop = compiled.adam if compiled is not None and p.size >= JIT_MIN else None
    if loop is not None and not all(type(x) is float for x in (b1, b2, eps, scale)):
        loop = None  # NumPy scalars are strongly typed: float64 ones promote the passes
    flat = _flats(p, g, m, v) if loop is not None or p.size > BLOCK else None
    if loop is not None and flat is not None:
        t = p.dtype.type
        try:
            loop(*flat, t(b1), t(b2), t(eps), t(scale))
            return
        except TypeError:  # no compiled signature fits (a read-only g): nothing was written
            pass
    if flat is None:
        adam_passes(p, g, m, v, b1, b2, eps, scale)
        return
    pf, gf, mf, vf = flat
    n = pf.shape[0]
    tmp = _buffer(pf.dtype, min(n, BLOCK))
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        _adam_block(pf[a:b], gf[a:b], mf[a:b], vf[a:b], b1, b2, eps, scale, tmp[: b - a])


class _Cblas:
    """CBLAS ``?axpy`` of the OpenBLAS that NumPy itself loaded (``numpy.libs``).

    NumPy's wheels ship OpenBLAS built with 64-bit integers and symbols renamed
    ``scipy_cblas_<name>64_``. Calling that same library (ctypes, which releases the GIL)
    shares NumPy's BLAS thread pool: a second BLAS, such as SciPy's, would spin its own
    threads against NumPy's and slow every matmul (measured: a 784-512-512-10 SGD step went
    from 1.6 to 8 ms). Anything else (another BLAS, another platform, a failed self-test)
    leaves :attr:`available` False and the NumPy passes run.
    """

    def __init__(self) -> None:
        self.available = False
        self.reason = "not loaded"
        self.library = ""
        self._fns: dict[str, Any] = {}
        if switch("MLCORE_NUMPY_BLAS") == "off":
            self.reason = "disabled by MLCORE_NUMPY_BLAS"
            return
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - any failure means: no BLAS fast path
            self.reason = f"{type(exc).__name__}: {exc}"

    def _load(self) -> None:
        import ctypes
        import glob

        libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        paths = sorted(glob.glob(os.path.join(libdir, "libscipy_openblas64_*")))
        if len(paths) > 1:  # keep the one this process mapped (NumPy's), never a second pool
            paths = [p for p in paths if p in _mapped_libraries()]
        if len(paths) != 1:
            raise LookupError(f"cannot tell which scipy-openblas64 library NumPy uses in "
                              f"{libdir}: {paths or 'none'}")
        lib = ctypes.CDLL(paths[0])
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for t, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            axpy = getattr(lib, f"scipy_cblas_{t}axpy64_")
            axpy.restype, axpy.argtypes = None, [i64, real, ptr, i64, ptr, i64]
            self._fns[t] = axpy
        self.library = paths[0]
        self.available = True
        for dtype in (np.float32, np.float64):  # self-test: y = 1 - 2 x
            x, y = np.arange(1.0, 4.0, dtype=dtype), np.ones(3, dtype=dtype)
            self.axpy(-2.0, x, y)
            if not np.array_equal(y, np.array([-1.0, -3.0, -5.0], dtype=dtype)):
                self.available, self.reason = False, f"self-test failed: {y}"
                return
        self.reason = ""

    def axpy(self, a: float, x: np.ndarray, y: np.ndarray) -> None:
        """``y += a x`` on 1-D contiguous arrays of one dtype (float32 or float64)."""
        t = "s" if y.dtype == np.float32 else "d"
        self._fns[t](y.shape[0], a, x.ctypes.data, 1, y.ctypes.data, 1)


def _mapped_libraries() -> set[str]:
    """Paths of the shared libraries mapped into this process (Linux), else empty."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return {line.split(None, 5)[5].strip() for line in f if line.count(" ") >= 5
                    and "/" in line}
    except OSError:
        return set()


_CBLAS: _Cblas | None = None
_CBLAS_LOCK = threading.Lock()


def cblas() -> _Cblas:
    """The process's :class:`_Cblas` (loaded on first use; ``.available``, ``.reason``)."""
    global _CBLAS
    if _CBLAS is None:
        with _CBLAS_LOCK:
            if _CBLAS is None:
                _CBLAS = _Cblas()
    return _CBLAS


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _flats(p: np.ndarray, g: np.ndarray, *state: np.ndarray) -> list[np.ndarray] | None:
    """1-D views, in memory order, of ``p``, ``g`` and the optimiser ``state`` arrays.

    ``p`` and ``state`` (updated in place) must be plain, writeable, aligned float32/float64
    ndarrays of one dtype and shape, contiguous in one memory order (C, or Fortran as Dense
    weights are), and ``g`` must not overlap them (unless it is ``p`` itself); else None,
    and the caller runs NumPy's own operations, which handle (or refuse) such arrays. A
    ``g`` in another layout is first copied into ``p``'s (one pass). ``p`` and each state
    array must not overlap one another. Called on every update: kept cheap (~3 µs).
    """
    if type(p) is not np.ndarray or type(g) is not np.ndarray:
        return None
    dt, shape, fp = p.dtype, p.shape, p.flags
    if dt not in _FLOATS or g.dtype != dt or g.shape != shape:
        return None
    if not (fp.writeable and fp.aligned):
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
    if g is not p and (np.may_share_memory(g, p)
                       or any(np.may_share_memory(g, a) for a in state)):
        return None
    for i, a in enumerate(state):  # the updated arrays must be distinct memory
        if np.may_share_memory(a, p) or any(np.may_share_memory(a, b) for b in state[i + 1:]):
            return None
    fg = g.flags
    if not (fg.c_contiguous if c else fg.f_contiguous):
        g = g.copy(order="C" if c else "F")  # p's layout
    if c:
        return [p.reshape(-1), g.reshape(-1), *(a.reshape(-1) for a in state)]
    return [p.T.reshape(-1), g.T.reshape(-1), *(a.T.reshape(-1) for a in state)]


def sgd_update(p: np.ndarray, g: np.ndarray, lr: float) -> None:
    """In place: ``p -= lr * g``.

    Large parameters go through NumPy's BLAS ``axpy`` (:func:`cblas`): one pass on BLAS's
    threads, which may round ``p - lr g`` once (a fused multiply-add) where NumPy rounds the
    product and the difference separately: a few ulp of the operands from the plain update.
    ``lr == 0`` runs the plain update (BLAS skips the pass when ``a == 0``, which would turn
    ``p - 0 * inf`` into ``p`` instead of NaN). Without BLAS the product is formed one
    L2-sized block at a time.
    """
    flat = _flats(p, g) if p.size > BLOCK else None
    if flat is None:
        p -= lr * g
        return
    pf, gf = flat
    if lr != 0.0 and (blas := cblas()).available:  # BLAS skips the pass when a == 0
        blas.axpy(-lr, gf, pf)
        return
    n = pf.shape[0]
    tmp = _buffer(pf.dtype, BLOCK)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        t = tmp[: b - a]
        np.multiply(gf[a:b], lr, out=t)
        pf[a:b] -= t


_KERNELS: dict[str, Callable[..., Any]] = {
    "adam_update": adam_update, "sgd_update": sgd_update}


def kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The kernel ``name`` when ``xp`` is this backend's namespace, else None."""
    from . import NumpyBackend

    if xp is not NumpyBackend.xp:
        return None
    if name == "adam_update" and eager():
        jit()  # MLCORE_NUMPY_JIT=1: compile (or load the cached loop) with the optimiser
    return _KERNELS.get(name)
