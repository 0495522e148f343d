"""The one place that talks to array_api_compat.

Namespace and device of inputs, mixed-backend and mixed-device errors that name the
argument, dtype and value checks. The core calls :func:`namespace` once at the top of a
public function and passes ``xp`` down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeGuard, TypeVar, cast

from array_api_compat import array_namespace
from array_api_compat import device as _device

from ..backend import backend_of, optional_members
from ..errors import (
    BackendMismatchError,
    DeviceMismatchError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    ShapeError,
)
from ..plugins import registry
from ..types import Array, Device, DType, Namespace

if TYPE_CHECKING:
    from ..backend import Backend

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = [
    "namespace",
    "device_of",
    "check_same_device",
    "device_scope",
    "enters_device",
    "scoped",
    "writes_in_place",
    "check_floating",
    "check_finite",
    "check_same_shape",
    "describe",
]


def describe(x: object) -> str:
    """A short description of an array: its backend, shape and dtype."""

    b = backend_of(x)
    kind = f"{b.name} array" if b is not None else type(x).__module__.split(".")[0] + " array"
    shape = getattr(x, "shape", None)
    shape_text = tuple(shape) if shape is not None else "?"
    return f"{kind} of shape {shape_text}, dtype {getattr(x, 'dtype', '?')}"


_NAMESPACES: dict[tuple[type, ...], Namespace] = {}
"""Namespaces already resolved, by the argument types (filled on first use, bounded)."""


def namespace(*arrays: Array, names: Sequence[str] = ()) -> Namespace:
    """The Array API namespace shared by ``arrays``; a clear error when they differ.

    ``names`` labels the arrays in the error ("pred is a numpy array ..., target is a
    strict array ..."). mlcore never transfers arrays between backends silently.

    The namespace depends only on the array types, so it is remembered per tuple of types
    (0.3 us instead of array-api-compat's 1.5-3 us, which adds up on small layers).
    """
    kinds = tuple(map(type, arrays))
    xp = _NAMESPACES.get(kinds)
    if xp is not None:
        return xp
    try:
        xp = array_namespace(*arrays)
    except TypeError as exc:
        labels = list(names) + [f"argument {i}" for i in range(len(names), len(arrays))]
        for label, a in zip(labels, arrays, strict=False):
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                raise InvalidParameterError(
                    f"{label} is a {type(a).__name__}, not an array: this function takes "
                    f"arrays of one backend. Convert it first with "
                    f"mlcore.get_backend().asarray(...) (fit, predict, evaluate and metrics "
                    f"convert their inputs themselves).", a) from exc
        parts = [f"{label} is a {describe(a)}" for label, a in zip(labels, arrays, strict=False)]
        raise BackendMismatchError(
            "Arrays from different backends met in one call: " + "; ".join(parts) + ". "
            "Convert them explicitly with backend.asarray(...) first; mlcore never moves "
            "arrays between backends silently.",
            arrays,
        ) from exc
    if len(_NAMESPACES) < 256:
        _NAMESPACES[kinds] = xp
    return xp


def device_of(x: Array) -> Device:
    """The device ``x`` lives on."""
    return _device(x)


def check_same_device(*arrays: Array, names: Sequence[str] = ()) -> Device:
    """Return the common device of ``arrays``; raise naming each when they differ."""
    devices = [_device(a) for a in arrays]
    first = devices[0]
    if all(d == first for d in devices[1:]):
        return first
    labels = list(names) + [f"argument {i}" for i in range(len(names), len(arrays))]
    parts = [f"{label} is on {d}" for label, d in zip(labels, devices, strict=False)]
    raise DeviceMismatchError(
        "Arrays on different devices met in one call: " + "; ".join(parts) + ". Move them "
        "to one device explicitly; mlcore never transfers silently.",
        arrays,
    )


_ENTERS: dict[type, bool] = {}
"""Per device type: whether a backend declared that the core must enter it (filled lazily)."""


def enters_device(device: Device) -> TypeGuard[AbstractContextManager[object]]:
    """Whether the core computes on ``device`` inside ``with device:``.

    Only when a backend declares it, through the optional Backend member
    ``enters_device(device) -> bool``: CuPy does (it allocates every new array, and every
    kernel result, on its *current* device, whatever ``device=`` says); torch does not
    (``torch.device`` is a context manager too, but entering it installs a function mode that
    intercepts every operation). Asked once per device type, then remembered.
    """
    kind = type(device)
    known = _ENTERS.get(kind)
    if known is None:
        known = _ENTERS[kind] = hasattr(kind, "__enter__") and _declared(device)
    return known


def _declared(device: Device) -> bool:

    for b in registry().backends.values():
        ask = optional_members(b).enters_device
        if ask is not None and ask(device):
            return True
    return False


def scoped(device: Device, fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` itself, or ``fn`` run inside ``with device:`` when :func:`enters_device`."""
    if not enters_device(device):
        return fn

    def on_device(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with device:
            return fn(*args, **kwargs)

    return on_device


_INPLACE: dict[type, bool] = {}


def writes_in_place(x: Array) -> bool:
    """Whether the core may write into arrays of ``x``'s type (``x[...] = v``).

    An opt-in capability: the backend owning ``x`` declares ``inplace = True`` (NumPy,
    array-api-strict, CuPy, torch), a promise that ``x[...] = v`` and ``x -= u`` write into
    ``x`` itself (``check_backend``'s ``protocol`` check tests it). Otherwise (JAX's immutable
    arrays, a backend that does not say) the core builds new arrays instead, and its
    augmented assignments (``Y += b``) rebind on a type without in-place operators. Asked
    once per array type.
    """
    kind = type(x)
    known = _INPLACE.get(kind)
    if known is None:

        owner = backend_of(x)
        known = _INPLACE[kind] = owner is not None and optional_members(owner).inplace
    return known


@contextmanager
def device_scope(*arrays: Array, names: Sequence[str] = ()) -> Iterator[Device]:
    """Run the enclosed code on the one device of ``arrays``; yield that device.

    Raises :class:`DeviceMismatchError` (naming each argument) when the arrays are on
    different devices. A device its backend asks to enter (:func:`enters_device`: CuPy's) is
    entered, so that results stay on the inputs' device
    (``with device_scope(x, w, names=("x", "w")) as dev:``); for every other device (NumPy's
    ``"cpu"``, array-api-strict's, torch's, JAX's) it is a device check only.
    """
    dev = check_same_device(*arrays, names=names)
    if not enters_device(dev):
        yield dev
        return
    with dev:
        yield dev


def count_dtype(xp: Namespace) -> DType:
    """The namespace's default integer dtype, for counts and class indices: int64 on NumPy,
    int32 on JAX without 64-bit mode (where asking for int64 warns and truncates)."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return xp.int64
    return info().default_dtypes()["integral"]


def wide_float(xp: Namespace) -> DType:
    """float64 where the namespace has it (JAX has it only in 64-bit mode), else float32:
    for metric results computed from counts."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        found = info().dtypes(kind="real floating")
        return found.get("float64", found.get("float32", xp.float32))
    return xp.float64


def check_floating(xp: Namespace, x: Array, name: str) -> None:
    """Raise :class:`DTypeError` unless ``x`` has a real floating dtype.

    float32 and float64 are recognised by two equality tests (0.1 us) before the general
    ``isdtype`` (1 us through array-api-compat), since this runs on every public call.
    """
    dtype = x.dtype
    if dtype == xp.float32 or dtype == xp.float64:
        return
    if not xp.isdtype(dtype, "real floating"):
        raise DTypeError(
            f"{name} must be a floating-point array, received dtype {x.dtype}. "
            f"Convert it with astype(float32) or astype(float64).",
            x,
        )


def check_finite(xp: Namespace, x: Array, name: str) -> None:
    """Raise :class:`InvalidValueError` when ``x`` holds NaN or infinity."""
    if not bool(xp.all(xp.isfinite(x))):
        bad = int(xp.sum(xp.astype(~xp.isfinite(x), count_dtype(xp))))
        raise InvalidValueError(
            f"{name} contains {bad} NaN or infinite value(s); expected finite numbers. "
            f"Clean or impute the data first.",
            x,
        )


def check_same_shape(a: Array, b: Array, names: tuple[str, str]) -> None:
    """Raise :class:`ShapeError` naming both arrays when their shapes differ."""
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same shape, received "
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)}.",
            (a, b),
        )


def convert(backend: Backend, data: object, name: str) -> Array:
    """``data`` as an array of ``backend`` (unchanged when it already is one) holding real
    numbers (complex is refused, never cast)."""
    try:
        array: Array = cast("Array", data) if backend.owns(data) else backend.asarray(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        detail = str(exc).rstrip(".")
        if type(data).__module__ == "numpy" and hasattr(data, "astype"):
            raise DTypeError(
                f"{name} is a {describe(data)}, which the {backend.name} backend cannot hold: "
                f"{detail}. Convert it first: {name}.astype('float32').", data) from exc
        if hasattr(data, "shape"):  # an array of another library or device
            raise BackendMismatchError(
                f"{name} is a {describe(data)} and could not be converted to a "
                f"{backend.name} array: {detail}. Convert it explicitly first (for example "
                f"to a NumPy float32 array).", data) from exc
        raise InvalidValueError(f"{name} could not be converted to an array: {detail}. Pass "
                                f"a rectangular list or array of numbers.", data) from exc
    xp = backend.xp
    if not xp.isdtype(array.dtype, ("real floating", "integral", "bool")):
        fix = (f" mlcore trains on real numbers: pass {name}.real, or the real and imaginary "
               f"parts as separate features." if xp.isdtype(array.dtype, "complex floating")
               else "")
        raise DTypeError(f"{name} must hold real numbers, received dtype {array.dtype}.{fix}",
                         data)
    return array
