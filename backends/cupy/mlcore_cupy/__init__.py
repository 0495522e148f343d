"""mlcore's CuPy backend: the same core, unchanged, on a CUDA GPU, on the backend kit
(:mod:`mlcore_numpy.kit`: CuPy imported lazily; the same seed gives NumPy's weights).
*Available* means CuPy imports **and** the CUDA driver reports the chosen device; otherwise
:meth:`CupyBackend.unavailable_reason` says which is missing. Nothing falls back to the CPU.

Devices are ``cuda:N``, else ``cuda:0``. CuPy's creation functions allocate on CuPy's
*current* device, whatever ``device=`` says, and so do the results of every kernel: this
backend creates its arrays inside ``with device:`` and declares ``enters_device``. Speed:
fused CUDA kernels (:mod:`mlcore_cupy.kernels`), the step as a CUDA graph (``graph``).
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import Any

import numpy as np
from mlcore_numpy import LibraryBackend
from mlcore_numpy.kit import count_problem, import_reason

__all__ = ["CupyBackend", "mlcore_backends", "mlcore_kernel", "mlcore_compile_step",
           "parse_device"]
__version__ = "0.1.0"


def parse_device(spec: object, source: str = "device") -> int:
    """The CUDA device number of ``spec`` (``"cuda:1"``, ``"1"``, ``1``, a CuPy Device; None,
    "" and "cuda": 0); ``source`` names the setting in the error (``"MLCORE_DEVICE"``)."""
    if spec is None:
        return 0
    device_id = getattr(spec, "id", None)  # a cupy.cuda.Device
    if isinstance(device_id, int) and not isinstance(spec, bool):
        return device_id
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
        return spec
    text = str(spec).strip().lower()
    text = "0" if text in ("", "cuda", "gpu") else text.removeprefix("cuda:")
    if not text.isdigit():
        raise ValueError(
            f"{source}={spec!r} is not a CUDA device: expected 'cuda:N' with N a device "
            f"number, for example {source}=cuda:0 (or 'cuda' for device 0).")
    return int(text)


class CupyBackend(LibraryBackend):
    """Arrays are CuPy ndarrays on one CUDA device (``"cuda:N"``, ``N`` or a
    ``cupy.cuda.Device``), seen through array-api-compat."""

    name, label, default_device = "cupy", "CuPy", "MLCORE_DEVICE or cuda:0"
    library, array_type, namespace = "cupy", "ndarray", "array_api_compat.cupy"
    install_hint = ("pip install 'mlcore-cupy[cuda12]' for a CUDA 12 driver, or "
                    "'mlcore-cupy[cuda13]' for CUDA 13")
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    kernels, compiler = "mlcore_cupy.kernels:kernel", "mlcore_cupy.graph:compile_step"
    parse_device = staticmethod(parse_device)

    # -- availability: CuPy, then the driver, then the device ------------------------------
    @cached_property
    def library_reason(self) -> str:
        """CuPy missing or broken, or no usable driver or device (asked once), or ""."""
        return import_reason(self.label, (self.library,), self.install_hint) or self._driver[0]

    @cached_property
    def _driver(self) -> tuple[str, int]:
        """``("", device count)`` when the CUDA driver sees a device, else ``(reason, 0)``."""
        cupy = self.lib
        try:
            if cupy.cuda.runtime.driverGetVersion() == 0:
                return (f"CuPy {cupy.__version__} is installed but no NVIDIA CUDA driver was "
                        "found. Install the NVIDIA driver (this machine may have no GPU)."), 0
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:  # noqa: BLE001 - CUDARuntimeError and friends
            text = f"{type(exc).__name__}: {exc}"
            if "NoDevice" in text or "no CUDA-capable device" in text:
                return f"CuPy is installed but no CUDA device was found ({text}).", 0
            return (f"CuPy is installed but the CUDA driver is not usable ({text}). Install or "
                    f"update the NVIDIA driver, or pick the CuPy wheel matching it: "
                    f"{self.install_hint}."), 0
        return ("", count) if count else (
            "CuPy is installed but no CUDA device was found (device count 0).", 0)

    def device_problem(self, wanted: int, where: str) -> str:
        return count_problem(where, "cuda", wanted, self._driver[1])

    # -- devices ------------------------------------------------------------------------
    @property
    def device_id(self) -> int:
        """The CUDA device number: the ``device`` argument, else ``MLCORE_DEVICE``, else 0."""
        return int(self.wanted_device()[0])

    def make_device(self, wanted: int) -> Any:
        """The ``cupy.cuda.Device``; also a context manager making it CuPy's current device."""
        return self.lib.cuda.Device(wanted)

    def device_text(self, wanted: int) -> str:
        return f"cuda:{wanted}"

    def enters_device(self, device: object) -> bool:  # type: ignore[override]
        """Yes for a CuPy device: CuPy allocates on its *current* device, so mlcore computes
        inside ``with device:``."""
        cupy = sys.modules.get("cupy")
        return cupy is not None and isinstance(device, cupy.cuda.Device)

    # -- arrays -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a CuPy array on this backend's device; host data and CuPy arrays on
        another device are copied (the explicit transfer: the core never does it itself)."""
        cupy, dev = self.lib, self.device
        with dev:
            if self.owns(obj) and obj.device != dev:
                obj = obj.copy()  # CuPy copies onto the current device, peer to peer
            return cupy.asarray(obj, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x``; waits for the work that produces ``x``."""
        return np.asarray(self.lib.asnumpy(x)) if self.owns(x) else super().to_numpy(x)

    def synchronize(self) -> None:
        """Wait until every kernel queued on this backend's device has finished."""
        self.device.synchronize()

    # -- NCCL, memory, mlcore info ----------------------------------------------------
    def communicator(self, world: Any) -> Any:
        """NCCL between GPUs for ``mlcore.distributed`` with ``MLCORE_CUPY_NCCL=1`` (see
        :mod:`mlcore_cupy.nccl`; not yet run on a multi-GPU machine), else None: MPI over
        host memory."""
        if os.environ.get("MLCORE_CUPY_NCCL", "") != "1":
            return None
        from .nccl import NcclCommunicator

        return NcclCommunicator(self, world)

    def memory_stats(self) -> dict[str, int]:
        """Bytes in CuPy's memory pool for this device (used by arrays, held) and on the card."""
        cupy = self.lib
        pool = cupy.get_default_memory_pool()
        with self.device:  # CuPy's pool reports the current device's figures
            free, total = cupy.cuda.runtime.memGetInfo()
            return {"pool_used_bytes": int(pool.used_bytes()),
                    "pool_held_bytes": int(pool.total_bytes()),
                    "device_free_bytes": int(free), "device_total_bytes": int(total)}

    def memory_info(self) -> str:
        """One line for ``mlcore info``: the memory pool in use and the card's memory."""
        s = self.memory_stats()
        mib, gib = 2**20, 2**30
        return (f"cuda:{self.device_id} ({self._device_name()}): memory pool used "
                f"{s['pool_used_bytes'] / mib:.1f} MiB, held {s['pool_held_bytes'] / mib:.1f} "
                f"MiB; card {s['device_free_bytes'] / gib:.1f} GiB free of "
                f"{s['device_total_bytes'] / gib:.1f} GiB")

    def _device_name(self) -> str:
        try:
            name = self.lib.cuda.runtime.getDeviceProperties(self.device_id)["name"]
        except Exception:  # noqa: BLE001 - the name is decoration only
            return "unknown GPU"
        return name.decode() if isinstance(name, bytes) else str(name)

    def kernel_info(self) -> str:
        """The fused kernels and whether training steps are captured (``mlcore info``)."""
        from . import graph, kernels

        off = graph.disabled_reason()
        return (f"{', '.join(kernels.KERNEL_NAMES)}; training step as a CUDA graph: "
                f"{'off, ' + off if off else 'on (MLCORE_CUPY_GRAPH=0 turns it off)'}")


mlcore_backends = CupyBackend.backends_hook()
mlcore_kernel = CupyBackend.kernel_hook()
mlcore_compile_step = CupyBackend.compile_step_hook()
