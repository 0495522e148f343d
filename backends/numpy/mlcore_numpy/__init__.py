"""mlcore's NumPy backend: the CPU default.

Registered through the ``mlcore`` entry-point group exactly as a third-party backend would
be. It does not import mlcore: pluggy matches the hook marker by project name.
:class:`HostRandom` is reused by the other first-party backends so that the same seed gives
the same numbers everywhere; :class:`~mlcore_numpy.library.LibraryBackend` is what the torch
and JAX backends share.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import array_api_compat
import array_api_compat.numpy as xp_numpy
import numpy as np
import pluggy

__all__ = ["NumpyBackend", "HostBackend", "HostRandom", "LibraryBackend", "mlcore_backends",
           "mlcore_kernel"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")


class HostRandom:
    """Seeded random numbers drawn on the host with NumPy's PCG64, then converted.

    ``convert(ndarray, dtype)`` turns the host array into the backend's array, so every
    first-party backend gives the same numbers for the same seed.
    """

    def __init__(self, seed: int | None, convert: Callable[[np.ndarray, Any], Any]) -> None:
        self._gen = np.random.default_rng(seed)
        self._convert = convert

    def uniform(self, low: float, high: float, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._convert(self._gen.uniform(low, high, shape), dtype)

    def normal(self, mean: float, std: float, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._convert(self._gen.normal(mean, std, shape), dtype)

    def permutation(self, n: int) -> Any:
        return self._convert(self._gen.permutation(n), None)


class HostBackend:
    """What a backend whose arrays live in host memory shares: nothing to wait for, always
    available, numbers drawn by :class:`HostRandom` and converted by ``self.asarray``."""

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Nothing to wait for on the CPU."""

    def rng(self, seed: int | None = None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def is_available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return ""


class NumpyBackend(HostBackend):
    """Arrays are NumPy ndarrays, seen through array-api-compat's NumPy namespace."""

    name = "numpy"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    xp = xp_numpy
    device = "cpu"

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        return np.asarray(obj, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x, copy=True, order="C")  # C order, whatever the layout of x

    def owns(self, x: Any) -> bool:
        return array_api_compat.is_numpy_array(x)

    def kernel_info(self) -> str:
        """The fused kernels and whether NumPy's BLAS serves them (``mlcore info``)."""
        from . import kernels
        from .jit import jit

        blas, compiled = kernels.cblas(), jit()
        where = (f"BLAS axpy from {os.path.basename(blas.library)}" if blas.available
                 else f"BLAS off ({blas.reason}), blocked NumPy passes")
        how = (f"one Numba {compiled.version} loop once a parameter has "
               f"{kernels.JIT_LOAD_MIN} elements" if compiled.available
               else f"blocked NumPy passes; JIT off: {compiled.reason}")
        return f"adam_update ({how}), sgd_update ({where})"

    def __repr__(self) -> str:
        return f"<mlcore backend numpy {np.__version__}>"


@hookimpl
def mlcore_backends() -> list[NumpyBackend]:
    return [NumpyBackend()]


@hookimpl
def mlcore_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """Fused NumPy kernels (see :mod:`mlcore_numpy.kernels`) for this backend's arrays."""
    from .kernels import kernel

    return kernel(name, xp)


from .library import LibraryBackend  # noqa: E402 - it uses HostRandom, defined above
