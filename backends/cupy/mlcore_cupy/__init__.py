"""mlcore's CuPy backend: the same core, unchanged, on a CUDA GPU.

Importing this module never imports CuPy, so the backend loads (and says why it cannot run)
on machines without CuPy or without a GPU. *Available* means CuPy imports **and** the CUDA
driver reports a usable device; otherwise :meth:`CupyBackend.unavailable_reason` says which
of the three is missing, ``mlcore info`` shows it, and ``MLCORE_BACKEND=cupy`` fails with it.
Nothing falls back to the CPU silently.

Devices are ``cuda:N``: from the ``device=`` argument (``mlcore.get_backend("cupy",
device="cuda:1")``), else ``MLCORE_DEVICE``, else ``cuda:0``. CuPy's creation functions take
no ``device=`` (array-api-compat 1.16 accepts the keyword and ignores it, except in
``asarray``): they allocate on CuPy's *current* device, and so do the results of every
kernel. So this backend creates its arrays inside ``with device:``, and the core runs
device-sensitive code inside :func:`mlcore.arrays.namespace.device_scope`, which enters
the device of its inputs.

Random numbers are drawn on the host with NumPy's PCG64 and copied to the device
(:class:`mlcore_numpy.HostRandom`), so the same seed gives the same initial weights as on
NumPy, bit for bit.

Speed: fused CUDA kernels (:mod:`mlcore_cupy.kernels`, hook ``mlcore_kernel``) and the
whole training step replayed as one CUDA graph (:mod:`mlcore_cupy.graph`, hook
``mlcore_compile_step``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any

import array_api_compat
import numpy as np
import pluggy
from mlcore_numpy import LibraryBackend

__all__ = ["CupyBackend", "mlcore_backends", "mlcore_kernel", "mlcore_compile_step",
           "parse_device"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")

INSTALL_HINT = ("pip install 'mlcore-cupy[cuda12]' for a CUDA 12 driver, or "
                "'mlcore-cupy[cuda13]' for CUDA 13")


def parse_device(spec: object, source: str = "device") -> int:
    """The CUDA device number of ``spec``: ``"cuda:1"``, ``"1"``, ``1`` or a CuPy Device.

    ``None``, ``""`` and ``"cuda"`` mean device 0. ``source`` names where ``spec`` came from
    in the error (``"MLCORE_DEVICE"``, ``"device"``).
    """
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


def _classify(exc: BaseException) -> str:
    """A reason from the error CUDA raised when counting devices."""
    text = f"{type(exc).__name__}: {exc}"
    if "NoDevice" in text or "no CUDA-capable device" in text:
        return f"CuPy is installed but no CUDA device was found ({text})."
    return (f"CuPy is installed but the CUDA driver is not usable ({text}). Install or "
            f"update the NVIDIA driver, or pick the CuPy wheel matching it: {INSTALL_HINT}.")


def _driver_probe() -> tuple[str, int]:
    """``("", device count)`` when CuPy imports and sees a device, else ``(reason, 0)``."""
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name == "cupy":
            return f"CuPy is not installed. Install it with {INSTALL_HINT}.", 0
        return f"CuPy is installed but failed to import: {exc}. Reinstall it: {INSTALL_HINT}.", 0
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
        return f"CuPy is installed but failed to import: {exc}. Reinstall it: {INSTALL_HINT}.", 0
    runtime = cupy.cuda.runtime
    try:
        if runtime.driverGetVersion() == 0:
            return (f"CuPy {cupy.__version__} is installed but no NVIDIA CUDA driver was "
                    "found. Install the NVIDIA driver (this machine may have no GPU)."), 0
        count = int(runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError and friends
        return _classify(exc), 0
    if count == 0:
        return "CuPy is installed but no CUDA device was found (device count 0).", 0
    return "", count


class CupyBackend(LibraryBackend):
    """Arrays are CuPy ndarrays on one CUDA device, seen through array-api-compat.

    ``device`` is ``None`` (``MLCORE_DEVICE``, read when needed, else ``cuda:0``), ``"cuda:N"``,
    ``N`` or a ``cupy.cuda.Device``; :meth:`on_device` returns a backend bound to another one.
    """

    name = "cupy"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    library, array_type, label, install_hint = "cupy", "ndarray", "CuPy", INSTALL_HINT
    default_device = "MLCORE_DEVICE or cuda:0"
    parse_device = staticmethod(parse_device)

    # -- what CuPy is, loaded lazily ----------------------------------------------------
    @cached_property
    def _cupy(self) -> Any:
        import cupy

        return cupy

    @cached_property
    def xp(self) -> Any:
        """array-api-compat's CuPy namespace (imports CuPy)."""
        import array_api_compat.cupy as xp_cupy

        return xp_cupy

    @cached_property
    def _probe(self) -> tuple[str, int]:
        return _driver_probe()

    @cached_property
    def _import_reason(self) -> str:
        """CuPy missing or broken, or no usable driver or device (the probe), or ""."""
        return self._probe[0]

    # -- devices ------------------------------------------------------------------------
    @property
    def device_id(self) -> int:
        """The CUDA device number: the ``device`` argument, else ``MLCORE_DEVICE``, else 0."""
        if self._device_spec is not None:
            return parse_device(self._device_spec)
        return parse_device(os.environ.get("MLCORE_DEVICE"), "MLCORE_DEVICE")

    @property
    def device(self) -> Any:
        """The ``cupy.cuda.Device``; also a context manager making it CuPy's current device."""
        return self._cupy.cuda.Device(self.device_id)

    def enters_device(self, device: object) -> bool:
        """Yes for a CuPy device: CuPy allocates on its *current* device, so mlcore computes
        inside ``with device:``."""
        cupy = sys.modules.get("cupy")
        return cupy is not None and isinstance(device, cupy.cuda.Device)

    def on_device(self, device: object) -> CupyBackend:
        """This backend bound to another device (``"cuda:1"``); parse errors are ValueError."""
        return CupyBackend(f"cuda:{parse_device(device)}")

    # -- arrays -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a CuPy array on this backend's device.

        Host data is copied to the device. A CuPy array already on another device is copied
        here: calling ``asarray`` is the explicit transfer, the core never does it itself.
        """
        cupy, dev = self._cupy, self.device
        with dev:
            if self.owns(obj) and obj.device != dev:
                obj = obj.copy()  # CuPy copies onto the current device, peer to peer
            return cupy.asarray(obj, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x``; waits for the work that produces ``x``."""
        if self.owns(x):
            return np.asarray(self._cupy.asnumpy(x))
        return np.array(x, copy=True)

    def synchronize(self) -> None:
        """Wait until every kernel queued on this backend's device has finished."""
        self.device.synchronize()

    def owns(self, x: Any) -> bool:
        return array_api_compat.is_cupy_array(x)

    # -- availability and memory ---------------------------------------------------------
    def device_reason(self) -> str:
        """"" when the chosen CUDA device exists (CuPy and the driver work), else why not."""
        try:
            wanted = self.device_id
        except ValueError as exc:
            return str(exc)
        count = self._probe[1]
        if wanted >= count:
            where = "MLCORE_DEVICE" if self._device_spec is None else "device"
            return (f"{where} asks for cuda:{wanted} but only {count} CUDA device(s) exist "
                    f"(cuda:0 to cuda:{count - 1}).")
        return ""

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
        cupy = self._cupy
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
            name = self._cupy.cuda.runtime.getDeviceProperties(self.device_id)["name"]
        except Exception:  # noqa: BLE001 - the name is decoration only
            return "unknown GPU"
        return name.decode() if isinstance(name, bytes) else str(name)

    def kernel_info(self) -> str:
        """The fused kernels and whether training steps are captured (``mlcore info``)."""
        from . import graph, kernels

        off = graph.disabled_reason()
        return (f"{', '.join(kernels.KERNEL_NAMES)}; training step as a CUDA graph: "
                f"{'off, ' + off if off else 'on (MLCORE_CUPY_GRAPH=0 turns it off)'}")


@hookimpl
def mlcore_backends() -> list[CupyBackend]:
    return [CupyBackend()]


@hookimpl
def mlcore_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """Fused CUDA kernels (:mod:`mlcore_cupy.kernels`) for CuPy arrays."""
    from .kernels import kernel

    return kernel(name, xp)


@hookimpl
def mlcore_compile_step(backend: Any, step: Callable[..., Any]) -> Callable[..., Any] | None:
    """The training step as a CUDA graph (:mod:`mlcore_cupy.graph`) on the cupy backend."""
    from .graph import compile_step

    return compile_step(backend, step)
