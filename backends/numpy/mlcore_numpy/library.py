"""What a backend over an array library that is imported lazily shares (torch, JAX).

Such a backend loads, and says why it cannot run, where its library is missing: importing
the backend's module never imports the library. :class:`LibraryBackend` holds what every
one of them does the same way: the ``device`` argument checked early and kept as given,
:meth:`~LibraryBackend.on_device`, the seeded :class:`~mlcore_numpy.HostRandom` stream
(the same initial weights as NumPy for the same seed), recognising the library's arrays
without importing it, availability (the import, then the device), pickling by device (a
fitted model pickles with its backend; the library's modules are not pickled) and
``repr``. A subclass sets the class attributes and writes ``parse_device`` (a static
method: the canonical device, or ValueError naming the argument) and ``device_reason``.
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any, ClassVar

from . import HostRandom

__all__ = ["LibraryBackend", "import_reason"]


def import_reason(label: str, modules: tuple[str, ...], hint: str) -> str:
    """"" when ``modules[0]`` imports, else why not (missing or broken) and ``hint``."""
    try:
        __import__(modules[0])
    except ModuleNotFoundError as exc:
        if exc.name in modules:
            return f"{label} is not installed. Install it with {hint}."
        return f"{label} is installed but failed to import: {exc}. Reinstall it: {hint}."
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything
        return f"{label} is installed but failed to import: {exc}. Reinstall it: {hint}."
    return ""


class LibraryBackend:
    """The shared part of a backend whose arrays belong to a lazily imported library."""

    name: ClassVar[str]
    library: ClassVar[str]  # the module that defines the arrays: "torch"
    array_type: ClassVar[str]  # its array class: "Tensor"
    label: ClassVar[str]  # the library's name in messages: "PyTorch"
    install_hint: ClassVar[str]  # how to install it
    import_names: ClassVar[tuple[str, ...]] = ()  # modules whose absence means "not installed"
    default_device: ClassVar[str] = "MLCORE_DEVICE or default"  # for repr
    #: What the library raises for operands whose shapes do not broadcast.
    shape_errors: ClassVar[tuple[type[BaseException], ...]] = (ValueError,)

    def __init__(self, device: object = None) -> None:
        if device is not None:
            self.parse_device(device)  # fail early, with the argument's name
        self._device_spec = device

    @staticmethod
    def parse_device(spec: object, source: str = "device") -> Any:
        raise NotImplementedError

    def device_reason(self) -> str:
        """"" when the chosen device exists here, else why not (the library imports)."""
        raise NotImplementedError

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        raise NotImplementedError

    def on_device(self, device: object) -> Any:
        """This backend bound to another device; parse errors are ValueError."""
        self.parse_device(device)
        return type(self)(device)

    def rng(self, seed: int | None = None) -> HostRandom:
        """Numbers drawn on the host (NumPy PCG64) and copied to the device: NumPy's stream."""
        return HostRandom(seed, self.asarray)

    def owns(self, x: Any) -> bool:
        module = sys.modules.get(self.library)  # an array exists only once it is imported
        return module is not None and isinstance(x, getattr(module, self.array_type))

    @cached_property
    def _import_reason(self) -> str:
        return import_reason(self.label, self.import_names or (self.library,), self.install_hint)

    def unavailable_reason(self) -> str:
        """Why this backend cannot run here (the library missing, the device absent), or ""."""
        return self._import_reason or self.device_reason()

    def is_available(self) -> bool:
        return self.unavailable_reason() == ""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as its class and device: cached modules and compiled steps stay behind.
        return (type(self), (self._device_spec,))

    def __repr__(self) -> str:
        spec = self._device_spec if self._device_spec is not None else self.default_device
        return f"<mlcore backend {self.name} {spec}>"
