"""The backend kit: what every mlcore backend shares, for first-party and outside authors.

A backend is a class and a few module-level hooks. :class:`BackendBase` holds what any
backend does the same way: the optional Backend members with the defaults mlcore assumes
(``mlcore.backend.OptionalMembers``; a test holds the two equal), the seeded
:class:`HostRandom` stream (the same initial weights as NumPy for the same seed),
``is_available`` from ``unavailable_reason``, a C-ordered host copy, and the hook
registration (:meth:`~BackendBase.backends_hook`, :meth:`~BackendBase.kernel_hook`,
:meth:`~BackendBase.compile_step_hook`: a module assigns them to the hook names, and pluggy
matches the marker by the project name, so the module need not import mlcore).

:class:`LibraryBackend` adds what a backend over a lazily imported array library shares
(torch, JAX, CuPy): the library and its Array API namespace imported on first use (``lib``,
``xp``), "is this my namespace" by module name (no import), recognising the library's arrays
without importing it, availability (the import with an install hint, then the device), the
one reader of ``device=`` / ``MLCORE_DEVICE`` (:meth:`~LibraryBackend.wanted_device`),
:meth:`~LibraryBackend.on_device`, pickling by device (a fitted model pickles with its
backend; the library's modules are not pickled) and ``repr``. A subclass sets the class
attributes and writes ``parse_device`` (a static method: the parsed device, or ValueError
naming its source), ``make_device`` (the library's device object) and ``device_problem``
(why a parsed device is not usable here, or ""), then ``asarray`` and what is its own.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pluggy

__all__ = ["BackendBase", "HostRandom", "LibraryBackend", "count_problem", "hookimpl",
           "import_reason"]

hookimpl = pluggy.HookimplMarker("mlcore")


class HostRandom:
    """Seeded random numbers drawn on the host with NumPy's PCG64, then converted.

    ``convert(ndarray, dtype)`` turns the host array into the backend's array, so every
    first-party backend gives the same numbers for the same seed.
    """

    def __init__(self, seed: int | None, convert: Callable[[np.ndarray, Any], Any]) -> None:
        self._gen = np.random.default_rng(seed)
        self._convert = convert

    def uniform(self, low: float, high: float, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._convert(self._gen.uniform(low, high, shape), dtype)

    def random(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform samples in [0, 1) drawn at ``dtype``'s precision: 24 random bits for a
        32-bit float (NumPy's ``random(dtype=float32)``: half the work of 53 bits, and never
        the 1.0 a float64 draw can round to), 53 otherwise."""
        return self._convert(self._gen.random(shape, dtype=_host_float(dtype)), dtype)

    def normal(self, mean: float, std: float, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._convert(self._gen.normal(mean, std, shape), dtype)

    def permutation(self, n: int) -> Any:
        return self._convert(self._gen.permutation(n), None)


def _host_float(dtype: Any) -> type[np.floating[Any]]:
    """``np.float32`` when ``dtype`` (any backend's: NumPy's, torch's, JAX's, the strict
    one's) is a 32-bit float, else ``np.float64``; read from the dtype itself or, failing
    that, its name (``torch.float32``). Not cached: a cache would compare another library's
    dtype with NumPy's on a hash collision (array-api-strict warns about exactly that)."""
    for probe in (dtype, str(dtype).rsplit(".", 1)[-1]):
        try:
            found = np.dtype(probe)
        except TypeError:
            continue
        return np.float32 if found == np.float32 else np.float64
    return np.float64


def import_reason(label: str, modules: tuple[str, ...], hint: str) -> str:
    """"" when ``modules[0]`` imports, else why not (missing or broken) and ``hint``."""
    try:
        importlib.import_module(modules[0])
    except ModuleNotFoundError as exc:
        if exc.name in modules:
            return f"{label} is not installed. Install it with {hint}."
        return f"{label} is installed but failed to import: {exc}. Reinstall it: {hint}."
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything
        return f"{label} is installed but failed to import: {exc}. Reinstall it: {hint}."
    return ""


def count_problem(where: str, kind: str, index: int, count: int) -> str:
    """"" when device ``kind:index`` is one of the ``count`` here, else why not (``where``:
    the setting that asked for it)."""
    if index < count:
        return ""
    return (f"{where} asks for {kind}:{index} but only {count} {kind.upper()} device(s) exist "
            f"({kind}:0 to {kind}:{count - 1}).")


def _load(target: str) -> Callable[..., Any]:
    """The function named by ``"module:function"``, importing the module."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


class BackendBase:
    """What every backend shares, and the optional Backend members with mlcore's defaults.

    A subclass sets ``name`` and writes ``xp``, ``device``, ``asarray`` and ``owns``;
    ``unavailable_reason`` says "" (always usable) unless it says otherwise.
    """

    name: ClassVar[str]

    # -- the optional members, with the defaults mlcore assumes (docs/backends.md) ---------
    inplace: ClassVar[bool] = False  # True: the core may write into this backend's arrays
    conformance: ClassVar[bool] = False  # True: checks the core (strict), never recommended
    shape_errors: ClassVar[tuple[type[BaseException], ...]] = ()  # besides ValueError
    enters_device: ClassVar[Callable[..., bool] | None] = None  # run inside ``with device:``?
    materialize: ClassVar[Callable[..., Any] | None] = None  # lazy arrays: compute each step
    on_device: ClassVar[Callable[..., Any] | None] = None  # None: only ``device`` itself
    kernel_info: ClassVar[Callable[..., str] | None] = None  # a line for ``mlcore info``
    memory_info: ClassVar[Callable[..., str] | None] = None  # a line for ``mlcore info``
    communicator: ClassVar[Callable[..., Any] | None] = None  # None: MPI over host memory
    device_label: ClassVar[Callable[..., str] | None] = None  # None: str(device) in mlcore info
    host_batches: ClassVar[bool] = False  # True: fit slices batches on the host, asarray each
    #: Fused kernels by name (``mlcore.hookspecs.KERNELS``), served by :meth:`kernel_hook`;
    #: or ``"module:function"``, imported on first use and called as ``function(name, xp)``.
    kernels: ClassVar[Mapping[str, Callable[..., Any]] | str] = {}
    #: ``"module:function"`` compiling training steps, imported on first use and called as
    #: ``function(backend, step)`` (:meth:`compile_step`); "" compiles nothing.
    compiler: ClassVar[str] = ""

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x`` in C order, whatever the layout of ``x``."""
        return np.array(x, copy=True, order="C")

    def synchronize(self) -> None:
        """Nothing to wait for (a library that queues work overrides this)."""

    def rng(self, seed: int | None = None) -> HostRandom:
        """Numbers drawn on the host (NumPy PCG64) and converted: NumPy's stream."""
        return HostRandom(seed, self.asarray)

    def unavailable_reason(self) -> str:
        """Why this backend cannot run here, or ""."""
        return ""

    def is_available(self) -> bool:
        return self.unavailable_reason() == ""

    # -- namespaces and hooks ---------------------------------------------------------------
    namespace: ClassVar[str] = ""  # the module name of ``xp``: "array_api_compat.torch"

    @classmethod
    def owns_namespace(cls, xp: Any) -> bool:
        """Whether ``xp`` is this backend's namespace (by module name: nothing is imported)."""
        return bool(cls.namespace) and getattr(xp, "__name__", None) == cls.namespace

    @classmethod
    def kernel(cls, name: str, xp: Any) -> Callable[..., Any] | None:
        """The fused kernel ``name`` for ``xp``, this backend's namespace, or None (the plain
        path)."""
        if isinstance(cls.kernels, str):
            return _load(cls.kernels)(name, xp)  # type: ignore[no-any-return]
        return cls.kernels.get(name)

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any] | None:
        """``step`` compiled for this backend (by ``compiler``), or None: the eager step."""
        return _load(self.compiler)(self, step) if self.compiler else None  # type: ignore[no-any-return]

    @classmethod
    def backends_hook(cls) -> Callable[[], list[Any]]:
        """The ``mlcore_backends`` hook: one backend of this class, on its default device."""

        @hookimpl
        def mlcore_backends() -> list[Any]:
            return [cls()]

        return mlcore_backends

    @classmethod
    def kernel_hook(cls) -> Callable[[str, Any], Callable[..., Any] | None]:
        """The ``mlcore_kernel`` hook: :meth:`kernel` for this backend's namespace only."""

        @hookimpl
        def mlcore_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
            return cls.kernel(name, xp) if cls.owns_namespace(xp) else None

        return mlcore_kernel

    @classmethod
    def compile_step_hook(cls) -> Callable[[Any, Callable[..., Any]], Any]:
        """The ``mlcore_compile_step`` hook: :meth:`compile_step` for this class's backends."""

        @hookimpl
        def mlcore_compile_step(backend: Any, step: Callable[..., Any]) -> Any:
            return backend.compile_step(step) if isinstance(backend, cls) else None

        return mlcore_compile_step


class LibraryBackend(BackendBase):
    """The shared part of a backend whose arrays belong to a lazily imported library."""

    library: ClassVar[str]  # the module that defines the arrays: "torch"
    array_type: ClassVar[str]  # its array class: "Tensor"
    label: ClassVar[str]  # the library's name in messages: "PyTorch"
    install_hint: ClassVar[str]  # how to install it: "pip install 'mlcore-torch[torch]'"
    import_names: ClassVar[tuple[str, ...]] = ()  # modules whose absence means "not installed"
    default_device: ClassVar[str] = "MLCORE_DEVICE or default"  # for repr

    def __init__(self, device: object = None) -> None:
        if device is not None:
            self.parse_device(device)  # fail early, with the argument's name
        self._device_spec = device

    # -- the library, loaded lazily ----------------------------------------------------------
    @cached_property
    def lib(self) -> Any:
        """The array library's module (imports it)."""
        return importlib.import_module(self.library)

    @cached_property
    def xp(self) -> Any:
        """The library's Array API namespace, ``namespace`` (imports the library)."""
        return importlib.import_module(self.namespace)

    def owns(self, x: Any) -> bool:
        module = sys.modules.get(self.library)  # an array exists only once it is imported
        return module is not None and isinstance(x, getattr(module, self.array_type))

    # -- devices: the one reader of device= and MLCORE_DEVICE ---------------------------------
    @staticmethod
    def parse_device(spec: object, source: str = "device") -> Any:
        """The parsed device of ``spec`` (None or "": the default), or ValueError naming
        ``source`` (``"device"``, ``"MLCORE_DEVICE"``) and what it accepts."""
        raise NotImplementedError

    def make_device(self, wanted: Any) -> Any:
        """The library's device object for a parsed device (imports the library)."""
        raise NotImplementedError

    def device_problem(self, wanted: Any, where: str) -> str:
        """"" when the parsed device exists here (the library imports), else why not;
        ``where`` names the setting that asked for it."""
        return ""

    def wanted_device(self) -> tuple[Any, str]:
        """The parsed device and the setting it came from: the ``device`` argument, else
        ``MLCORE_DEVICE`` (read now, not at import), else the default (``parse_device(None)``).
        A device that does not parse raises ValueError naming that setting."""
        if self._device_spec is not None:
            return self.parse_device(self._device_spec, "device"), "device"
        env = os.environ.get("MLCORE_DEVICE", "").strip() or None
        return self.parse_device(env, "MLCORE_DEVICE"), "MLCORE_DEVICE"

    @property
    def device(self) -> Any:
        """The device arrays are created on (the library's device object)."""
        return self.make_device(self.wanted_device()[0])

    def device_text(self, wanted: Any) -> object:
        """How a parsed device is kept by :meth:`on_device` (and so pickled and shown)."""
        return wanted

    def on_device(self, device: object) -> Any:  # type: ignore[override]
        """This backend bound to another device (``"cuda:1"``); parse errors are ValueError."""
        return type(self)(self.device_text(self.parse_device(device)))

    def device_reason(self) -> str:
        """"" when the chosen device parses and exists here (the library imports), else why."""
        try:
            wanted, where = self.wanted_device()
        except ValueError as exc:
            return str(exc)
        return self.device_problem(wanted, where)

    # -- availability -----------------------------------------------------------------------
    @cached_property
    def library_reason(self) -> str:
        """"" when the library imports (asked once), else why not, with the install hint."""
        return import_reason(self.label, self.import_names or (self.library,), self.install_hint)

    def unavailable_reason(self) -> str:
        """Why this backend cannot run here (the library missing, the device absent), or ""."""
        return self.library_reason or self.device_reason()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as its class and device: cached modules and compiled steps stay behind.
        return (type(self), (self._device_spec,))

    def __repr__(self) -> str:
        spec = self._device_spec if self._device_spec is not None else self.default_device
        return f"<mlcore backend {self.name} {spec}>"
