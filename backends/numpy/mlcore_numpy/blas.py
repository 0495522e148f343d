"""The BLAS binding: CBLAS ``?axpy`` of the OpenBLAS that NumPy itself loaded."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from ._switch import Optional

__all__ = ["Cblas", "cblas"]


class Cblas(Optional):
    """CBLAS ``?axpy`` of the OpenBLAS that NumPy itself loaded (``numpy.libs``).

    NumPy's wheels ship OpenBLAS built with 64-bit integers and symbols renamed
    ``scipy_cblas_<name>64_``. Calling that same library (ctypes, which releases the GIL)
    shares NumPy's BLAS thread pool: a second BLAS, such as SciPy's, would spin its own
    threads against NumPy's and slow every matmul (measured: a 784-512-512-10 SGD step went
    from 1.6 to 8 ms). Anything else (another BLAS, another platform, a failed self-test)
    leaves :attr:`available` False and the NumPy passes run.
    """

    SWITCH = "MLCORE_NUMPY_BLAS"

    def __init__(self) -> None:
        self.library = ""
        self._fns: dict[str, Any] = {}
        super().__init__()

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


_Cblas = Cblas  # the former private name


@functools.cache
def cblas() -> Cblas:
    """The process's :class:`Cblas` (loaded on first use; ``.available``, ``.reason``)."""
    return Cblas()
