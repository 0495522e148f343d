"""mlcore's CuPy backend: the same core, unchanged, on a CUDA GPU.

Importing this module never imports CuPy: the backend must load (and say why it is
unavailable) on machines without CuPy or without a GPU. Available means CuPy imports **and**
a CUDA device is usable; the reason is reported otherwise and nothing falls back silently.

The device is ``cuda:N`` from ``MLCORE_DEVICE`` (default ``cuda:0``). Random numbers are
drawn on the host with NumPy's PCG64 and copied to the device, so the same seed gives the
same initial weights as on NumPy.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np
import pluggy
from mlcore_numpy import HostRandom

__all__ = ["CupyBackend", "mlcore_backends", "parse_device"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")


def parse_device(spec: str | int | None) -> int:
    """``"cuda:1"``, ``"1"`` or ``1`` -> 1; ``None`` or ``""`` -> 0."""
    if spec is None or spec == "":
        return 0
    if isinstance(spec, int):
        return spec
    text = str(spec).strip().lower()
    if text.startswith("cuda:"):
        text = text[5:]
    elif text in ("cuda", "gpu"):
        text = "0"
    if not text.isdigit():
        raise ValueError(f"MLCORE_DEVICE must look like 'cuda:N', received {spec!r}")
    return int(text)


class CupyBackend:
    """Arrays are CuPy ndarrays on one CUDA device."""

    name = "cupy"

    def __init__(self, device: str | int | None = None) -> None:
        self._device_spec = device

    @cached_property
    def _cupy(self) -> Any:
        import cupy

        return cupy

    @cached_property
    def xp(self) -> Any:
        import array_api_compat.cupy as xp_cupy

        return xp_cupy

    @property
    def device_id(self) -> int:
        spec = self._device_spec
        if spec is None:
            spec = os.environ.get("MLCORE_DEVICE")
        return parse_device(spec)

    @property
    def device(self) -> Any:
        return self._cupy.cuda.Device(self.device_id)

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        with self.device:
            return self._cupy.asarray(obj, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def synchronize(self) -> None:
        self.device.synchronize()

    def rng(self, seed: int | None = None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def unavailable_reason(self) -> str:
        try:
            import cupy
        except ImportError as exc:
            return (f"CuPy is not installed ({exc}). Install it with "
                    "pip install 'mlcore-cupy[cuda12]' (or [cuda13] for CUDA 13).")
        except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
            return f"CuPy failed to import: {exc}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001
            return f"CuPy is installed but no CUDA driver or device is usable: {exc}"
        if count == 0:
            return "CuPy is installed but no CUDA device was found."
        try:
            wanted = self.device_id
        except ValueError as exc:
            return str(exc)
        if wanted >= count:
            return f"MLCORE_DEVICE asks for cuda:{wanted} but only {count} device(s) exist."
        return ""

    def is_available(self) -> bool:
        return self.unavailable_reason() == ""

    def owns(self, x: Any) -> bool:
        mod = type(x).__module__
        return mod.startswith("cupy") and hasattr(x, "device")

    def memory_info(self) -> str:
        pool = self._cupy.get_default_memory_pool()
        used, held = pool.used_bytes() / 2**20, pool.total_bytes() / 2**20
        return f"pool used {used:.1f} MiB, held {held:.1f} MiB"

    def __repr__(self) -> str:
        return "<mlcore backend cupy>"


@hookimpl
def mlcore_backends() -> list[CupyBackend]:
    return [CupyBackend()]
