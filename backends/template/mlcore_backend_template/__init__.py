"""A template mlcore backend: the whole contract in one small module.

Copy this folder, then replace NumPy by your array library in the three places marked
``# your library``. mlcore finds the backend through the ``mlcore`` entry point in
pyproject.toml; this module does not import mlcore (hook markers are matched by the project
name), and it imports the array library only when an array is first needed, so
``mlcore info`` can say why the backend cannot run where the library is missing.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pluggy
from mlcore_numpy import HostRandom

__all__ = ["TemplateBackend", "mlcore_backends"]

hookimpl = pluggy.HookimplMarker("mlcore")


class TemplateBackend:
    """Arrays of the library, on its one device."""

    name = "template"  # what MLCORE_BACKEND=template selects: lower case, as the entry point
    inplace = True  # the core may write into these arrays (say False for immutable arrays)

    @cached_property
    def xp(self) -> Any:
        """The library's Array API namespace, imported on first use."""
        import array_api_compat.numpy as xp  # your library (array_api_compat.<lib>, or its own)

        return xp

    @property
    def device(self) -> Any:
        """The device arrays are created on: whatever ``array_api_compat.device(x)`` returns
        for this library's arrays (a string, or the library's device object)."""
        return "cpu"  # your library

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Lists, scalars, NumPy arrays or this library's arrays -> an array on ``device``.

        ``dtype`` is None or one of ``xp``'s dtypes. Copy only when needed: mlcore calls
        this at its boundaries (fit, predict, load) and for every random draw.
        """
        return self.xp.asarray(np.asarray(obj), dtype=dtype)  # your library

    def to_numpy(self, x: Any) -> np.ndarray:
        """A C-ordered NumPy *copy* (the caller may edit it)."""
        return np.array(x, copy=True, order="C")

    def synchronize(self) -> None:
        """Wait for queued work (nothing to wait for on a synchronous CPU library)."""

    def rng(self, seed: int | None = None) -> HostRandom:
        """NumPy's PCG64 on the host, converted with asarray: the same seed gives the same
        initial weights as on every first-party backend."""
        return HostRandom(seed, self.asarray)

    def is_available(self) -> bool:
        return self.unavailable_reason() == ""

    def unavailable_reason(self) -> str:
        """Why the backend cannot run here ("" when it can); never raise."""
        try:
            self.xp  # noqa: B018 - importing is the test
        except ImportError as exc:
            return f"the array library is not installed ({exc}); pip install it."
        return ""

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is this library's array (check without importing the library)."""
        return type(x) is np.ndarray  # your library

    def __repr__(self) -> str:
        return "<mlcore backend template>"


@hookimpl
def mlcore_backends() -> list[TemplateBackend]:
    """Called once, when mlcore first needs a backend; cheap, never failing."""
    return [TemplateBackend()]
