"""mlcore's PyTorch backend: the same core, unchanged, on torch tensors, on the backend kit
(:mod:`mlcore_numpy.kit`: torch imported lazily, unavailable with the reason where torch or
the device is missing, never a silent CPU fallback; the same seed gives NumPy's weights).

Devices are ``cpu``, ``cuda:N`` (``cuda`` is ``cuda:0``) and ``mps``, else ``cpu``. Arrays
are created with an explicit ``device=``, so the backend does not ask the core to enter one
(entering a ``torch.device`` installs a function mode intercepting every operation; it
doubled the cost of a small step). mlcore does its own backpropagation: tensors are created
without ``requires_grad`` and :meth:`TorchBackend.asarray` detaches a tensor that has one.
torch's thread settings (``torch.set_num_threads``, ``OMP_NUM_THREADS``) are never changed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mlcore_numpy.kit import LibraryBackend, count_problem

__all__ = ["TorchBackend", "mlcore_backends", "mlcore_kernel", "parse_device"]
__version__ = "0.1.0"


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


class TorchBackend(LibraryBackend):
    """Arrays are ``torch.Tensor`` on one device, seen through array-api-compat.

    ``device`` is ``None`` (``MLCORE_DEVICE``, read when needed, else ``cpu``), ``"cpu"``,
    ``"cuda:N"``, ``"mps"``, ``N`` or a ``torch.device``; :meth:`on_device` returns a
    backend bound to another one.
    """

    name, label, default_device = "torch", "PyTorch", "MLCORE_DEVICE or cpu"
    library, array_type, namespace = "torch", "Tensor", "array_api_compat.torch"
    install_hint = "pip install 'mlcore-torch[torch]' (or pip install torch)"
    inplace = True  # the core may write into its arrays (optimiser updates, Parameter.set)
    shape_errors = (RuntimeError,)  # what torch raises for shapes that do not broadcast
    kernels: ClassVar[dict[str, Any]] = {"adam_update": _adam_update, "sgd_update": _sgd_update}
    parse_device = staticmethod(parse_device)

    def make_device(self, wanted: str) -> Any:
        return self.lib.device(wanted)

    def device_problem(self, wanted: str, where: str) -> str:
        torch = self.lib
        if wanted.startswith("cuda:"):
            if not torch.cuda.is_available():
                return (f"{where} asks for {wanted} but torch {torch.__version__} sees no CUDA "
                        f"device (a CPU-only build, no driver or no GPU). Use device='cpu', or "
                        f"install a CUDA build of torch.")
            return count_problem(where, "cuda", int(wanted[5:]), torch.cuda.device_count())
        mps = torch.backends.mps
        if wanted == "mps" and not (mps.is_built() and mps.is_available()):
            return (f"{where} asks for mps but Apple's Metal backend is not available here "
                    f"(it needs macOS on Apple silicon and a torch built with MPS).")
        return ""

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a tensor on this backend's device, without an autograd graph.

        Host data (lists, scalars, NumPy arrays) is converted through NumPy; a writeable
        C-contiguous NumPy array on the CPU device is shared, not copied (as
        ``torch.as_tensor`` does), anything else is copied. A tensor on another device is
        copied here: calling ``asarray`` is the explicit transfer, the core never does it.
        """
        torch = self.lib
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
        return super().to_numpy(x.detach().cpu().numpy() if self.owns(x) else x)

    def synchronize(self) -> None:
        """Wait for the queued work of this backend's device (nothing to wait for on CPU)."""
        wanted = self.wanted_device()[0]
        if wanted.startswith("cuda:"):
            self.lib.cuda.synchronize(wanted)
        elif wanted == "mps":
            self.lib.mps.synchronize()

    def kernel_info(self) -> str:  # type: ignore[override]
        """One line for ``mlcore info``: torch's version and thread count."""
        torch = self.lib
        return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) "
                f"(torch.set_num_threads); fused SGD and Adam updates")


mlcore_backends = TorchBackend.backends_hook()
mlcore_kernel = TorchBackend.kernel_hook()
