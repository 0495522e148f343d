"""A template mlcore backend on the backend kit: the whole contract in one small module.

Copy this folder, then replace NumPy by your array library on every line marked
``# your library`` (``grep -n "your library"`` lists them: the class attributes, the devices,
``asarray`` for host data and for your own arrays, ``to_numpy``). mlcore finds the backend
through the ``mlcore`` entry point in pyproject.toml. This module does not import mlcore
(hook markers are matched by the project name), and the kit
(:class:`mlcore_numpy.kit.LibraryBackend`) imports the array library only when an array is
first needed, so ``mlcore info`` can say why the backend cannot run where it is missing.

The kit gives you: ``lib`` and ``xp`` (imported on first use), ``owns``,
``is_available`` / ``unavailable_reason`` (the import, with ``install_hint``, then the
device), the one reader of ``device=`` / ``MLCORE_DEVICE``, ``on_device``, ``rng`` (NumPy's
PCG64 on the host: the same seed gives the same weights as every first-party backend),
pickling (by class and device: the cached ``lib`` and ``xp`` modules stay behind, so a
fitted model pickles with its backend), ``repr``, the optional members with mlcore's
defaults, and the hooks. You write what is your library's own.

Optional members worth a look for a new library (docs/backends.md, "Optional members"):
``device_label()`` (how ``mlcore info`` names the device when ``str(device)`` is not
readable), ``host_batches = True`` (a graph library whose every slice is an operation: fit
slices batches on the host and converts each once with ``asarray``), and
``compile_step`` with ``mlcore_compile_step = TemplateBackend.compile_step_hook()`` (a
library that compiles the whole training step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlcore_numpy.kit import LibraryBackend, hookimpl

__all__ = ["TemplateBackend", "hookimpl", "mlcore_backends"]


class TemplateBackend(LibraryBackend):
    """Arrays of the library, on its one device."""

    name = "template"  # what MLCORE_BACKEND=template selects: lower case, as the entry point
    library, array_type = "numpy", "ndarray"  # your library's module and array class
    namespace = "array_api_compat.numpy"  # your library's Array API namespace module
    label, install_hint = "NumPy", "pip install numpy"  # your library, and how to install it
    default_device = "cpu"  # your library's default device, as repr shows it
    inplace = True  # your library: x[...] = v and x -= v write into x (False: immutable)

    @staticmethod
    def parse_device(spec: object, source: str = "device") -> str:
        """The device ``spec`` names (None or "": the default), or ValueError saying what
        ``source`` (``"device"``, ``"MLCORE_DEVICE"``) accepts."""
        if spec is None or str(spec).strip().lower() in ("", "cpu"):  # your library
            return "cpu"
        raise ValueError(f"{source}={spec!r} is not a device of the template backend: "
                         f"expected 'cpu', for example {source}=cpu.")

    def make_device(self, wanted: str) -> Any:
        """The device arrays are created on: whatever ``array_api_compat.device(x)`` returns
        for this library's arrays (a string, or the library's device object)."""
        return "cpu"  # your library

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Lists, scalars, NumPy arrays or this library's arrays -> an array on ``device``,
        of exactly ``dtype`` when it is given (None: the input's own dtype).

        ``dtype`` is None or one of ``xp``'s dtypes. Copy only when needed: mlcore calls
        this at its boundaries (fit, predict, load) and for every random draw.
        """
        if self.owns(obj):  # this library's array, perhaps on another device: move, cast
            return self.xp.asarray(obj, dtype=dtype, device=self.device)  # your library
        host = np.asarray(obj)  # lists, scalars, NumPy arrays (any layout, maybe read-only)
        return self.xp.asarray(host, dtype=dtype, device=self.device)  # your library

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x`` in C order, whatever the layout of ``x``."""
        return np.array(x, copy=True, order="C")  # your library: its array to host memory


#: Called once, when mlcore first needs a backend: one TemplateBackend on its default device.
mlcore_backends = TemplateBackend.backends_hook()
