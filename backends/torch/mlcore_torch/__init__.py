"""mlcore's PyTorch backend: the same core, unchanged, on torch tensors.

Importing this module never imports torch, so the backend loads (and says why it cannot run)
where torch is missing. *Available* means torch imports **and** the chosen device exists;
otherwise :meth:`TorchBackend.unavailable_reason` says which, ``mlcore info`` shows it and
``MLCORE_BACKEND=torch`` fails with it. Nothing falls back to the CPU silently.

Devices are ``cpu``, ``cuda:N`` (``cuda`` is ``cuda:0``) and ``mps``: from the ``device=``
argument (``mlcore.get_backend("torch", device="cuda:1")``), else ``MLCORE_DEVICE``, else
``cpu``. Arrays are created with an explicit ``device=``, so nothing depends on a current
device and the backend does not ask the core to enter one (``torch.device`` is a context
manager that installs a function mode intercepting every operation; entering it per call
doubled the cost of a small step).

mlcore does its own backpropagation: tensors are created without ``requires_grad``, so torch
records no autograd graph; :meth:`TorchBackend.asarray` detaches a tensor that has one.
torch's own thread settings (``torch.set_num_threads``, ``OMP_NUM_THREADS``) are respected:
this backend never changes them.

Random numbers are drawn on the host with NumPy's PCG64 (:class:`mlcore_numpy.HostRandom`)
and copied to the device, so the same seed gives the same initial weights as on NumPy.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import Any

import numpy as np
import pluggy
from mlcore_numpy import LibraryBackend

__all__ = ["TorchBackend", "mlcore_backends", "mlcore_kernel", "parse_device"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")

INSTALL_HINT = "pip install 'mlcore-torch[torch]' (or pip install torch)"


def parse_device(spec: object, source: str = "device") -> str:
    """The canonical device text of ``spec``: ``"cpu"``, ``"cuda:N"`` or ``"mps"``.

    Accepts those strings (``"cuda"`` means ``"cuda:0"``), a CUDA device number and a
    ``torch.device``. ``None`` and ``""`` mean ``"cpu"``. ``source`` names where ``spec``
    came from in the error (``"MLCORE_DEVICE"``, ``"device"``).
    """
    if spec is None:
        return "cpu"
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
        return f"cuda:{spec}"
    text = str(spec).strip().lower()
    if text in ("", "cpu", "mps"):
        return text or "cpu"
    if text in ("cuda", "gpu"):
        return "cuda:0"
    if text.startswith("cuda:") and text[5:].isdigit():
        return f"cuda:{int(text[5:])}"
    raise ValueError(
        f"{source}={spec!r} is not a torch device: expected 'cpu', 'cuda:N' (N a device "
        f"number; 'cuda' for device 0) or 'mps', for example {source}=cuda:0.")


def _device_reason(torch: Any, text: str, where: str) -> str:
    """"" when ``text`` names a device torch can use here, else why not."""
    if text.startswith("cuda:"):
        if not torch.cuda.is_available():
            return (f"{where} asks for {text} but torch {torch.__version__} sees no CUDA "
                    f"device (a CPU-only build, no driver or no GPU). Use device='cpu', or "
                    f"install a CUDA build of torch.")
        count, index = torch.cuda.device_count(), int(text[5:])
        if index >= count:
            return (f"{where} asks for {text} but only {count} CUDA device(s) exist "
                    f"(cuda:0 to cuda:{count - 1}).")
    if text == "mps" and not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
        return (f"{where} asks for mps but Apple's Metal backend is not available here "
                f"(it needs macOS on Apple silicon and a torch built with MPS).")
    return ""


class TorchBackend(LibraryBackend):
    """Arrays are ``torch.Tensor`` on one device, seen through array-api-compat.

    ``device`` is ``None`` (``MLCORE_DEVICE``, read when needed, else ``cpu``), ``"cpu"``,
    ``"cuda:N"``, ``"mps"``, ``N`` or a ``torch.device``; :meth:`on_device` returns a
    backend bound to another one.
    """

    name = "torch"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    library, array_type, label, install_hint = "torch", "Tensor", "PyTorch", INSTALL_HINT
    default_device = "MLCORE_DEVICE or cpu"
    shape_errors = (RuntimeError,)  # what torch raises for shapes that do not broadcast
    parse_device = staticmethod(parse_device)

    # -- what torch is, loaded lazily ---------------------------------------------------
    @cached_property
    def _torch(self) -> Any:
        import torch

        return torch

    @cached_property
    def xp(self) -> Any:
        """array-api-compat's torch namespace (imports torch)."""
        import array_api_compat.torch as xp_torch

        return xp_torch

    # -- devices ------------------------------------------------------------------------
    @property
    def device_name(self) -> str:
        """``"cpu"``, ``"cuda:N"`` or ``"mps"``: the argument, else ``MLCORE_DEVICE``, else cpu."""
        if self._device_spec is not None:
            return parse_device(self._device_spec)
        return parse_device(os.environ.get("MLCORE_DEVICE") or None, "MLCORE_DEVICE")

    @property
    def device(self) -> Any:
        """The ``torch.device`` arrays are created on."""
        return self._torch.device(self.device_name)

    def on_device(self, device: object) -> TorchBackend:
        """This backend bound to another device (``"cuda:1"``); parse errors are ValueError."""
        return TorchBackend(parse_device(device))

    # -- arrays -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a tensor on this backend's device, without an autograd graph.

        Host data (lists, scalars, NumPy arrays) is converted through NumPy; a writeable
        C-contiguous NumPy array on the CPU device is shared, not copied (as
        ``torch.as_tensor`` does), anything else is copied. A tensor on another device is
        copied here: calling ``asarray`` is the explicit transfer, the core never does it.
        """
        torch = self._torch
        if isinstance(obj, torch.Tensor):
            return obj.detach().to(device=self.device, dtype=dtype)
        host = np.asarray(obj)
        if host.dtype.kind not in "biufc":
            raise TypeError(f"cannot convert an array of dtype {host.dtype} to a tensor")
        if not host.flags.writeable:  # torch would warn and share read-only memory
            host = host.copy()
        return torch.as_tensor(host, dtype=dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x`` in C order; waits for the work that produces ``x``."""
        if self.owns(x):
            x = x.detach().cpu().numpy()
        return np.array(x, copy=True, order="C")

    def synchronize(self) -> None:
        """Wait for the queued work of this backend's device (nothing to wait for on CPU)."""
        text, torch = self.device_name, self._torch
        if text.startswith("cuda:"):
            torch.cuda.synchronize(text)
        elif text == "mps":
            torch.mps.synchronize()

    # -- availability -------------------------------------------------------------------
    def device_reason(self) -> str:
        """"" when the chosen device exists here (torch imports), else why not."""
        try:
            text = self.device_name
        except ValueError as exc:
            return str(exc)
        where = "MLCORE_DEVICE" if self._device_spec is None else "device"
        return _device_reason(self._torch, text, where)

    def kernel_info(self) -> str:
        """One line for ``mlcore info``: torch's version and thread count."""
        torch = self._torch
        return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) "
                f"(torch.set_num_threads); fused SGD and Adam updates")


@hookimpl
def mlcore_backends() -> list[TorchBackend]:
    return [TorchBackend()]


def _adam_update(p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, eps: float,
                 scale: float) -> None:
    """:class:`mlcore.optimizers.Adam`'s passes with torch's in-place methods (fewer
    temporaries)."""
    m.mul_(b1).add_(g)
    v.mul_(b2).addcmul_(g, g)
    r = v.sqrt().add_(eps).mul_(scale)
    p.addcdiv_(m, r, value=-1.0)


def _sgd_update(p: Any, g: Any, lr: float) -> None:
    """``p -= lr * g`` in one pass."""
    p.add_(g, alpha=-lr)


_KERNELS = {"adam_update": _adam_update, "sgd_update": _sgd_update}


@hookimpl
def mlcore_kernel(name: str, xp: Any) -> Any:
    """torch's fused optimiser updates, for array-api-compat's torch namespace only."""
    if name not in _KERNELS or "array_api_compat.torch" not in sys.modules:
        return None
    import array_api_compat.torch as xp_torch

    return _KERNELS[name] if xp is xp_torch else None
