"""The backend contract and backend selection.

A backend supplies arrays: its Array API namespace ``xp``, a default device, conversion to
and from the host, a seeded random source and an availability check. Backends are plugins
(hook ``mlcore_backends``); the first-party ones (``mlcore-numpy``, ``mlcore-strict``,
``mlcore-cupy``, ``mlcore-torch``, ``mlcore-jax``) are separate distributions found by entry
point, like a stranger's.

Selection precedence, highest first: the ``name`` argument, ``use_backend`` (a
``ContextVar``, so threads and asyncio tasks don't leak into each other), the
``MLCORE_BACKEND`` environment variable (read when a backend is first needed, not at import),
then the default ``numpy``.
"""

from __future__ import annotations

import contextvars
import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .errors import BackendNotFoundError, BackendUnavailableError, InvalidParameterError
from .plugins import canonical_name, registry

__all__ = [
    "Backend",
    "OptionalMembers",
    "optional_members",
    "BackendStatus",
    "backend_status",
    "device_label",
    "XP_CALLS",
    "RandomSource",
    "BackendChoice",
    "get_backend",
    "backend_names",
    "backend_choice",
    "use_backend",
    "DEFAULT_BACKEND",
]

DEFAULT_BACKEND = "numpy"
_INSTALL_HINT = {"numpy": "mlcore-numpy", "strict": "mlcore-strict", "cupy": "mlcore-cupy",
                 "torch": "mlcore-torch[torch]", "jax": "mlcore-jax[jax]"}


@runtime_checkable
class RandomSource(Protocol):
    """Seeded random numbers for initialisers and shuffling (the Array API has none).

    The same seed gives the same numbers; first-party backends draw on the host with NumPy's
    PCG64, so the same seed gives the same initial weights on every backend (docs/backends.md
    lists the optional ``random``)."""

    def uniform(self, low: float, high: float, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform samples in ``[low, high)`` as a backend array of ``dtype``."""

    def normal(self, mean: float, std: float, shape: tuple[int, ...], dtype: Any) -> Any:
        """Normal samples as a backend array of ``dtype``."""

    def permutation(self, n: int) -> Any:
        """A random permutation of ``range(n)`` as a backend integer array."""


@runtime_checkable
class Backend(Protocol):
    """What a backend plugin provides (documented in docs/backends.md)."""

    name: str
    """Short lower-case name used by ``MLCORE_BACKEND`` and ``get_backend``."""

    @property
    def xp(self) -> Any:
        """The Array API namespace (import the array library lazily here)."""

    @property
    def device(self) -> Any:
        """The default device arrays are created on."""

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Convert ``obj`` (lists, NumPy arrays, scalars) to an array on ``device``."""

    def to_numpy(self, x: Any) -> Any:
        """A host NumPy copy of ``x``, C-ordered (row-major) whatever the layout of ``x``."""

    def synchronize(self) -> None:
        """Wait until queued work is done (a no-op on CPU; needed for honest GPU timing)."""

    def rng(self, seed: int | None = None) -> RandomSource:
        """A seeded random source creating arrays of this backend."""

    def is_available(self) -> bool:
        """Whether the backend can run here."""

    def unavailable_reason(self) -> str:
        """A human reason when ``is_available()`` is False, else ``""``."""

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend."""

    # The optional members, each with its default, are :class:`OptionalMembers`; the core
    # reads them only through :func:`optional_members`.


@dataclass(frozen=True)
class OptionalMembers:
    """Every optional Backend member, with the default the core uses where a backend leaves
    it out (docs/backends.md, "Optional members"). :func:`optional_members` reads them; the
    backend kit (``mlcore_numpy.kit.BackendBase``) declares the same defaults."""

    conformance: bool = False
    """True for a backend that checks the core against a standard (strict) rather than runs
    it fast: ``mlcore bench`` measures it but never recommends it."""
    inplace: bool = False
    """True: the core may write into the backend's arrays; else it builds new ones (JAX)."""
    shape_errors: tuple[type[BaseException], ...] = ()
    """What the library raises for shapes that do not fit, besides ValueError (torch:
    RuntimeError), for the conformance kits."""
    enters_device: Callable[[Any], bool] | None = None
    """``enters_device(device)``: whether the core computes inside ``with device:`` (CuPy);
    None: never entered."""
    materialize: Callable[[tuple[Any, ...]], Sequence[Any]] | None = None
    """``materialize(arrays) -> arrays`` after each eager step (a lazy backend: dask);
    None: arrays are used as they come."""
    on_device: Callable[[Any], Backend] | None = None
    """``on_device(device)``: the backend bound to another device (ValueError for one it
    cannot parse); None: only ``device`` itself is accepted."""
    kernel_info: Callable[[], str] | None = None
    """A line about the fused kernels for ``mlcore info``; None: nothing shown."""
    memory_info: Callable[[], str] | None = None
    """A line about device memory for ``mlcore info``; None: nothing shown."""
    communicator: Callable[[Any], Any] | None = None
    """``communicator(world)``: its own Communicator for several processes (NCCL), or None;
    None: MPI over host memory."""
    device_label: Callable[[], str] | None = None
    """``device_label()``: a short readable name of ``device`` for ``mlcore info`` ("cpu",
    "cuda:1"); None: ``str(device)``, or the device's type where that is an object address
    (:func:`device_label`)."""
    host_batches: bool = False
    """True: ``fit`` slices in-memory training data on the host (NumPy) and converts each
    batch once with ``asarray``, instead of slicing the backend's arrays batch by batch (a
    graph library whose every slice is an operation: ndonnx)."""


_OPTIONAL = tuple(f.name for f in fields(OptionalMembers))


def optional_members(backend: object) -> OptionalMembers:
    """``backend``'s optional members, each its own where it declares one (not None), else
    the default: the one place the core reads them."""
    found = {name: getattr(backend, name, None) for name in _OPTIONAL}
    return OptionalMembers(**{k: v for k, v in found.items() if v is not None})


XP_CALLS = ("asarray", "zeros", "ones", "full", "empty", "isdtype", "float32", "float64")
"""What the core takes from ``backend.xp`` itself: it creates arrays there (parameters,
buffers, host data) and names dtypes. Every other function it calls on the namespace of the
arrays at hand (``array_namespace(x)``, docs/backends.md)."""


class BackendStatus(NamedTuple):
    """Whether a backend can be used here: ``state`` is ``"available"``, ``"unavailable"``
    (it says why, in ``reason``) or ``"failed"`` (one of its members raised, or ``xp`` lacks
    what the core calls: a fault of the backend, ``reason`` names the member)."""

    state: str
    reason: str


_XP_MISSING: dict[int, tuple[Any, tuple[str, ...]]] = {}
"""Per namespace (by id, the namespace kept alive with it): the :data:`XP_CALLS` it lacks."""


def _xp_missing(xp: Any) -> tuple[str, ...]:
    known = _XP_MISSING.get(id(xp))
    if known is None or known[0] is not xp:
        known = _XP_MISSING[id(xp)] = (xp, tuple(n for n in XP_CALLS if not hasattr(xp, n)))
    return known[1]


def module_name(xp: object) -> str:
    """A namespace's name as messages show it (the module's, else its type's)."""
    return str(getattr(xp, "__name__", None) or type(xp).__name__)


def backend_status(backend: Any) -> BackendStatus:
    """Whether ``backend`` can run here, never raising: its own answer
    (``is_available()``, ``unavailable_reason()``), then ``xp`` checked for every function
    the core calls on it (:data:`XP_CALLS`). What ``get_backend`` and ``mlcore info`` use."""
    member = "is_available()"
    try:
        if not backend.is_available():
            member = "unavailable_reason()"
            return BackendStatus("unavailable", str(backend.unavailable_reason()))
        member = "xp"
        missing = _xp_missing(backend.xp)
    except Exception as exc:  # noqa: BLE001 - a backend's fault, reported in one line
        return BackendStatus("failed", member_failure(member, exc))
    if missing:
        return BackendStatus("failed", (
            f"its namespace xp ({module_name(backend.xp)}) has no {', '.join(missing)}, "
            f"which mlcore calls on backend.xp ({', '.join(XP_CALLS)}). Make xp the "
            f"library's complete Array API namespace (the module array_namespace(x) gives "
            f"for its arrays)."))
    return BackendStatus("available", "")


def member_failure(member: str, exc: BaseException) -> str:
    """One line saying that a backend's ``member`` raised ``exc``, and the fix."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return (f"{member} raised {type(exc).__name__}: {text}. A backend's {member} must not "
            f"raise: fix or uninstall its plugin.")


_ADDRESS = " at 0x"


def device_label(backend: Any) -> str:
    """``backend``'s device as ``mlcore info`` shows it: the backend's ``device_label()``,
    else ``str(device)``, else (an object address) the device's type and module."""
    label = optional_members(backend).device_label
    if label is not None:
        return str(label())
    device = backend.device
    text = str(device)
    if _ADDRESS not in text:
        return text
    kind = type(device)
    return f"{kind.__qualname__} ({kind.__module__.split('.')[0]})"


class BackendChoice(NamedTuple):
    """The selected backend name and where the choice came from."""

    name: str
    source: str  # "argument", "context", "environment (MLCORE_BACKEND)" or "default"


_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlcore_backend", default=None
)
_context_device: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "mlcore_device", default=None
)


def backend_choice(name: str | None = None) -> BackendChoice:
    """Return which backend ``get_backend(name)`` would use, and why."""
    if name is not None:
        return BackendChoice(name, "argument")
    ctx = _context_choice.get()
    if ctx is not None:
        return BackendChoice(ctx, "context (use_backend)")
    env = os.environ.get("MLCORE_BACKEND", "").strip()
    if env:
        return BackendChoice(env, "environment (MLCORE_BACKEND)")
    return BackendChoice(DEFAULT_BACKEND, "default")


def _all_backends() -> dict[str, Backend]:

    return registry().backends


def backend_names(available_only: bool = False) -> list[str]:
    """Names of the installed backends (only those usable here if ``available_only``)."""
    backends = _all_backends()
    return sorted(n for n, b in backends.items()
                  if not available_only or backend_status(b).state == "available")


def _not_found(name: str) -> BackendNotFoundError:

    installed = sorted(_all_backends())
    failed = registry().failure_for_backend(name)
    if failed:
        return BackendNotFoundError(
            f"Backend {name!r} could not be loaded: plugin {failed}. "
            f"Installed and loaded: {', '.join(installed) or 'none'}.", name)
    msg = f"Unknown backend {name!r}. Installed: {', '.join(installed) or 'none'}."
    close = difflib.get_close_matches(name, list(_INSTALL_HINT) + installed, n=1)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    target = close[0] if close else name
    if target in _INSTALL_HINT and target not in installed:
        msg += f" Install it with pip install {_INSTALL_HINT[target]}."
    elif target not in installed:
        msg += f" If a plugin distribution provides {target!r}, pip install it."
    return BackendNotFoundError(msg, name)


def _on_device(backend: Backend, device: Any) -> Backend:
    """``backend`` bound to ``device`` (``"cuda:1"``); one-device backends accept their own."""
    on_device = optional_members(backend).on_device
    if on_device is not None:
        try:
            bound: Backend = on_device(device)
        except ValueError as exc:
            raise InvalidParameterError(f"Backend {backend.name!r}: {exc}", device) from exc
        return bound
    if device == backend.device or str(device) == str(backend.device):
        return backend
    raise InvalidParameterError(
        f"Backend {backend.name!r} has one device, {str(backend.device)!r}; received "
        f"device={device!r}. Leave device unset, or choose a GPU backend (cupy) for 'cuda:N'.",
        device,
    )


def get_backend(name: str | None = None, *, device: Any = None) -> Backend:
    """Return the selected backend, ready to use, on ``device`` when given (``"cuda:1"``).

    Without ``device``, the device given to :class:`use_backend` applies when the backend
    comes from that context; else the backend's default (cupy: ``MLCORE_DEVICE``, cuda:0).
    Raises :class:`BackendNotFoundError` (listing the installed backends and how to install
    the missing one), :class:`BackendUnavailableError` (with the backend's reason, or the
    member that raised, or what ``xp`` lacks: :func:`backend_status`) or
    :class:`InvalidParameterError` (a device the backend cannot parse or does not have).
    """

    if name is not None and not isinstance(name, str):
        raise InvalidParameterError(
            f"A backend is chosen by name (str), received {type(name).__name__}. "
            f"Installed: {', '.join(backend_names())}.", name)
    choice = backend_choice(name)
    backend = _all_backends().get(canonical_name(choice.name))
    if backend is None:
        raise _not_found(choice.name)
    if device is None and choice.source.startswith("context"):
        device = _context_device.get()
    if device is not None:
        backend = _on_device(backend, device)
    status = backend_status(backend)
    if status.state != "available":
        raise BackendUnavailableError(
            f"Backend {backend.name!r} (chosen by {choice.source}) is installed but not "
            f"usable here: {status.reason}",
            backend,
        )
    return backend


class use_backend:  # noqa: N801 - used like a function, as contextlib helpers are
    """Select a backend (and optionally its device, ``device="cuda:1"``) for the context.

    ``name`` is a backend name (any case, surrounding spaces ignored) or a backend object
    from :func:`get_backend`. As a context manager it restores the previous choice on exit;
    as a plain call it stays in force for the current thread or task. The backend is checked
    at once::

        with mlcore.use_backend("strict"):
            model.fit(X, y, loss="cross_entropy", epochs=5)
    """

    def __init__(self, name: str | Backend, *, device: Any = None) -> None:
        chosen: Any = name  # anything but a name or a Backend: get_backend says what it expects
        if not isinstance(name, str) and hasattr(name, "xp") and hasattr(name, "name"):
            # a Backend object (get_backend's result, possibly bound to a device)
            if device is None and name is not _all_backends().get(str(name.name)):
                device = name.device
            chosen = str(name.name)
        self.backend = get_backend(chosen, device=device)
        self.device = device
        # the plain call: in force from here; a with block restores what came before it
        self._called: Any = (_context_choice.set(self.backend.name), _context_device.set(device))
        self._entered: list[Any] = []

    def __enter__(self) -> Backend:
        # set again on every entry: the same object may be entered twice, or in another
        # thread or task (whose context the constructor's call never touched)
        self._entered.append((_context_choice.set(self.backend.name),
                              _context_device.set(self.device)))
        return self.backend

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for token in reversed(self._entered.pop()):
            token.var.reset(token)
        if self._called is not None and not self._entered:
            called, self._called = self._called, None
            try:  # undo the constructor's call too, where it was made (this context)
                for token in reversed(called):
                    token.var.reset(token)
            except (ValueError, RuntimeError):  # made in another context, or reset already
                pass


def backend_of(x: Any, backends: Sequence[Backend] | None = None) -> Backend | None:
    """The installed backend that owns array ``x``, or None."""
    for b in backends if backends is not None else _all_backends().values():
        if b.owns(x):
            return b
    return None
