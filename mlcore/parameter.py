"""The trainable array holder, :class:`Parameter`, and the device helper :func:`on_device`.

Below the layers and the optimisers, which both hold parameters (re-exported by
:mod:`mlcore.layers`, where they used to live).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from .arrays.namespace import check_same_device, enters_device, namespace, writes_in_place
from .errors import DTypeError, ShapeError
from .types import Array, Device

__all__ = ["Parameter", "on_device"]


class Parameter:
    """A trainable array (``value``) and its accumulated gradient (``grad``, None if clear)."""

    __slots__ = ("grad", "value")

    def __init__(self, value: Array) -> None:
        self.value = value
        self.grad: Array | None = None

    def accumulate(self, grad: Array) -> None:
        """Add ``grad`` (a fresh array the parameter may keep) to the gradient."""
        self.grad = grad if self.grad is None else self.grad + grad

    def set(self, value: Array) -> None:
        """Copy ``value`` into the parameter's own storage, as ``torch``'s ``copy_`` does.

        The array keeps its identity and memory layout (a Dense weight stays stored as the
        transpose of an (in, out) array, see :class:`Dense`), so an optimiser's state and
        earlier ``state_dict()`` results see the new values. On an array that cannot be
        written in place (read-only, or of a backend that does not declare ``inplace``, as
        JAX's immutable arrays) the parameter takes a copy of ``value`` instead. ``value``
        must have the parameter's shape, dtype, backend and device: nothing is broadcast,
        cast or moved, each mismatch raises.
        """
        xp = namespace(self.value, value, names=("parameter", "value"))
        check_same_device(self.value, value, names=("parameter", "value"))
        if tuple(value.shape) != self.shape:
            raise ShapeError(
                f"Parameter.set: the parameter has shape {self.shape}, value has shape "
                f"{tuple(value.shape)}. Pass an array of the parameter's shape.", value)
        if value.dtype != self.value.dtype:
            raise DTypeError(
                f"Parameter.set: the parameter is {self.value.dtype}, value is {value.dtype}. "
                f"Convert value with astype first.", value)
        if not writes_in_place(self.value):  # an immutable array type (JAX)
            self.value = xp.asarray(value, copy=True)
            return
        try:
            self.value[...] = value
        except ValueError:
            if getattr(getattr(self.value, "flags", None), "writeable", True):
                raise  # a real error, not a read-only destination
            self.value = xp.asarray(value, copy=True)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.value.dtype})"


def on_device(device: Device) -> AbstractContextManager[object]:
    """``device`` itself when its backend asks the core to enter it
    (:func:`mlcore.arrays.namespace.enters_device`: CuPy allocates every new array on its *current*
    device, whatever ``device=`` says), else a no-op context."""
    return device if enters_device(device) else nullcontext()
