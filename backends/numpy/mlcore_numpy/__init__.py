"""mlcore's NumPy backend: the CPU default.

Registered through the ``mlcore`` entry-point group exactly as a third-party backend would
be. It does not import mlcore: pluggy matches the hook marker by project name.
:mod:`mlcore_numpy.kit` is the backend kit every backend may build on (this package is
always installed with mlcore): :class:`BackendBase` (the optional members with their
defaults, the hooks, :class:`HostRandom`, so that the same seed gives the same numbers
everywhere) and :class:`LibraryBackend`, what the torch, JAX and CuPy backends share.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import array_api_compat
import array_api_compat.numpy as xp_numpy
import numpy as np

from .kit import BackendBase, HostRandom, LibraryBackend, hookimpl

__all__ = ["BackendBase", "NumpyBackend", "HostBackend", "HostRandom", "LibraryBackend",
           "mlcore_backends", "mlcore_kernel"]
__version__ = "0.1.0"



class HostBackend(BackendBase):
    """What a backend whose arrays live in host memory shares: nothing to wait for, always
    available, numbers drawn by :class:`HostRandom` and converted by ``self.asarray`` (all
    of it :class:`~mlcore_numpy.kit.BackendBase`'s defaults)."""


class NumpyBackend(HostBackend):
    """Arrays are NumPy ndarrays, seen through array-api-compat's NumPy namespace."""

    name = "numpy"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    xp = xp_numpy
    device = "cpu"

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        return np.asarray(obj, dtype=dtype)

    def owns(self, x: Any) -> bool:
        return array_api_compat.is_numpy_array(x)

    def kernel_info(self) -> str:
        """The fused kernels and whether NumPy's BLAS serves them (``mlcore info``)."""
        from . import fused, kernels
        from .jit import jit

        blas, compiled = kernels.cblas(), jit()
        where = (f"BLAS axpy from {os.path.basename(blas.library)}" if blas.available
                 else f"BLAS off ({blas.reason}), blocked NumPy passes")
        how = (f"one Numba {compiled.version} loop once a parameter has "
               f"{kernels.JIT_LOAD_MIN} elements, or {kernels.JIT_MIN} once the loops "
               f"below are loaded" if compiled.available
               else f"blocked NumPy passes; JIT off: {compiled.reason}")
        rows = ("softmax, log_softmax, sigmoid, relu, leaky_relu, their backwards, "
                "tanh_backward, step, softmax_cross_entropy")
        loops = fused.fused() if fused.fused.cache_info().currsize else None
        fast = (f"{rows} (one Numba pass per row once an input has {fused.LOAD_MIN} "
                f"elements)" if compiled.available and (loops is None or loops.available)
                else f"{rows}: the core's formulas (JIT off)")
        norm = ("batch_norm_forward and _backward (three and two Numba passes)"
                if compiled.available and (loops is None or loops.available)
                else "batch_norm_forward and _backward: the core's formula (JIT off)")
        return f"adam_update ({how}), sgd_update ({where}), {fast}, {norm}"

    def __repr__(self) -> str:
        return f"<mlcore backend numpy {np.__version__}>"


mlcore_backends = NumpyBackend.backends_hook()


@hookimpl
def mlcore_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """Fused NumPy kernels (see :mod:`mlcore_numpy.kernels`) for this backend's arrays."""
    from .kernels import kernel

    return kernel(name, xp)

