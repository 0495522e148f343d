"""mlcore's array-api-strict backend.

array-api-strict implements the standard and nothing else, so running the whole suite on it
proves the core uses only the Array API. Random numbers come from the host (NumPy PCG64,
shared with the NumPy backend), so the same seed gives the same weights as on NumPy.
"""

from __future__ import annotations

from typing import Any

import array_api_strict
import numpy as np
import pluggy
from array_api_strict._array_object import Array as _StrictArray
from mlcore_numpy import HostBackend

__all__ = ["StrictBackend", "mlcore_backends"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")


class StrictBackend(HostBackend):
    """Arrays are ``array_api_strict.Array`` on its CPU device."""

    name = "strict"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    conformance = True  # proves the core uses only the standard; ~2x slower by design
    xp = array_api_strict
    device = array_api_strict.Device("CPU_DEVICE")

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` on the CPU device; an array on another of array-api-strict's devices
        ("device1") is moved here (the explicit transfer)."""
        if isinstance(obj, _StrictArray):
            if obj.device != self.device:
                obj = array_api_strict.asarray(obj, device=self.device)
            return obj if dtype is None else array_api_strict.astype(obj, dtype)
        return array_api_strict.asarray(np.asarray(obj), dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(np.from_dlpack(x), copy=True, order="C")

    def owns(self, x: Any) -> bool:
        return isinstance(x, _StrictArray)

    def __repr__(self) -> str:
        return f"<mlcore backend strict {array_api_strict.__version__}>"


@hookimpl
def mlcore_backends() -> list[StrictBackend]:
    return [StrictBackend()]
