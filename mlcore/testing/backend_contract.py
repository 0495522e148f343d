"""The backend contract beyond numerics, for :func:`~mlcore.testing.check_backend`: what an
Array-API library's author (ndonnx, writing a backend from the docs alone) got wrong and no
check caught. ``asarray`` gives exactly the dtype asked for and takes the library's own
arrays (and another device's); ``inplace=True`` means writes land in the array itself; the
namespaces the core uses (``backend.xp`` to create, ``array_namespace(x)`` to compute) have
what it calls; the backend and a model fitted on it pickle; a compiled step a plugin offers
for the backend runs. Each failure names the member at fault, what was expected, what came
and the fix.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..arrays.namespace import device_of
from ..backend import XP_CALLS, Backend, module_name
from ..errors import CompiledStepWarning, PluginWarning
from ..plugins import registry
from ..training.compilers import probe_step

__all__ = ["MATH_CALLS", "require", "load_numpy", "inplace_promise", "check_namespaces",
           "convert", "every_dtype", "own_arrays", "other_devices", "compile_offer",
           "no_fallback", "round_trip", "unpicklable"]


MATH_CALLS = ("asarray", "astype", "zeros", "zeros_like", "full", "full_like", "empty",
              "arange", "reshape", "squeeze", "concat", "take", "matrix_transpose", "sum",
              "cumulative_sum", "mean", "max", "min", "argmax", "argsort", "count_nonzero",
              "all", "any", "maximum", "minimum", "where", "clip", "abs", "sign", "floor",
              "exp", "expm1", "log", "log1p", "sqrt", "tanh", "isfinite", "isnan", "isdtype",
              "finfo", "float32", "float64", "int64", "bool")
"""What the core calls on the namespace of the arrays at hand, ``array_namespace(x)``
(docs/backends.md, "Which standard functions does the core need?"); a test walks the core's
source for every ``xp.<name>`` and keeps this list complete."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def load_numpy() -> Any:
    import numpy as np

    return np


def inplace_promise(b: Backend) -> None:
    """``inplace=True`` promises that writes land in the array itself: ``x[...] = v`` and
    ``x -= u`` keep ``x`` (every reference sees the new values). Optimiser updates and
    ``Parameter.set`` rely on it (the suite asserts ``p.value is before`` after a step)."""
    np = load_numpy()
    f32 = b.xp.float32
    x = b.asarray(np.zeros(3, dtype=np.float32), dtype=f32)
    alias = x
    x[...] = b.asarray(np.ones(3, dtype=np.float32), dtype=f32)
    require(np.array_equal(b.to_numpy(alias), np.ones(3)),
            "inplace=True, but x[...] = v did not write into x (another reference to x "
            "still holds the old values). Write into the array itself, or declare "
            "inplace = False (the core then builds new arrays).")
    x -= b.asarray(np.full(3, 0.25, dtype=np.float32), dtype=f32)
    require(x is alias and np.array_equal(b.to_numpy(alias), np.full(3, 0.75)),
            "inplace=True, but x -= u gave a new array instead of writing into x (its "
            "__isub__ rebinds): an inplace backend's augmented assignments must update the "
            "array itself, as optimiser kernels (p -= lr * g) and the suite's "
            "'p.value is before' rely on. Implement __isub__ in place, or declare "
            "inplace = False.")


def check_namespaces(b: Backend, rtol: float) -> None:
    """Which namespace the core uses where, and that each has what the core calls there."""
    import array_api_compat

    np = load_numpy()
    x = b.asarray(np.ones((2, 2), dtype=np.float32), dtype=b.xp.float32)
    arrays = array_api_compat.array_namespace(x)
    same = " (the same module)" if arrays is b.xp else ""
    where = (f"The core creates arrays and names dtypes with backend.xp ({module_name(b.xp)}) and "
             f"computes with the namespace of the arrays at hand, array_namespace(x) "
             f"({module_name(arrays)}){same}.")
    lacking = [n for n in XP_CALLS if not hasattr(b.xp, n)]
    require(not lacking, f"xp has no {', '.join(lacking)}, which the core calls on "
                         f"backend.xp to create arrays. {where} Make xp the library's "
                         f"complete Array API namespace.")
    lacking = [n for n in MATH_CALLS if not hasattr(b.xp, n)]
    require(not lacking, f"xp has no {', '.join(lacking)}. {where} Plugins, the kits and "
                         f"users compute with backend.xp too: make it the library's "
                         f"complete Array API namespace, the module array_namespace(x) "
                         f"gives for its arrays.")
    lacking = [n for n in MATH_CALLS if not hasattr(arrays, n)]
    require(not lacking, f"array_namespace(x) of its arrays has no {', '.join(lacking)}, "
                         f"which the core's maths calls. {where}")
    if arrays is not b.xp:
        require(arrays.float32 == b.xp.float32,
                f"xp.float32 ({b.xp.float32!r}) is not the float32 of its arrays' namespace "
                f"({arrays.float32!r}). {where} Make xp the namespace of its arrays.")


def convert(b: Backend, obj: Any, dtype: Any, what: str) -> Any:
    try:
        return b.asarray(obj, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - reported as the failure
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _dtypes(b: Backend) -> dict[str, Any]:
    """Every real floating and integer dtype of ``xp`` (its ``__array_namespace_info__``
    where it has one: JAX without 64-bit mode has no float64 or int64), by name."""
    info = getattr(b.xp, "__array_namespace_info__", None)
    if info is not None:
        found = dict(info().dtypes(kind="real floating"))
        return found | dict(info().dtypes(kind="integral"))
    names = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
             "uint32", "uint64")
    return {n: getattr(b.xp, n) for n in names if hasattr(b.xp, n)}


def every_dtype(b: Backend) -> None:
    """``asarray(obj, dtype=d)`` is exactly ``d``: the core asks for the parameters' dtype,
    and a backend that gives float64 for float32 trains a float64 model without a word."""
    np = load_numpy()
    host = np.arange(6.0).reshape(2, 3)
    for name, dtype in _dtypes(b).items():
        floating = np.dtype(name).kind == "f"
        sources = [host.astype(np.int64), host.tolist() if floating else [[0, 1, 2], [3, 4, 5]]]
        if floating:
            sources += [host, host.astype(np.float32)]
        for obj in sources:
            what = f"asarray({_kind(obj)}, dtype={name})"
            x = convert(b, obj, dtype, what)
            require(x.dtype == dtype,
                    f"{what} gave dtype {x.dtype}: asarray must give exactly the dtype asked "
                    f"for (the core asks for the parameters' dtype; a {x.dtype} result "
                    f"trains a {x.dtype} model silently, or fails later with a ShapeError "
                    f"about dtypes). Pass dtype on to the library's conversion.")
            require(np.array_equal(b.to_numpy(x), host.astype(name)),
                    f"{what} changed the values")


def _kind(obj: Any) -> str:
    return f"ndarray {obj.dtype}" if hasattr(obj, "dtype") else f"{type(obj).__name__} of numbers"


def own_arrays(b: Backend) -> None:
    """``asarray`` takes the library's own arrays (``load_state_dict``, user code), keeping
    or casting their dtype, on ``device``."""
    np = load_numpy()
    host = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    own = b.asarray(host, dtype=b.xp.float32)
    dtypes = _dtypes(b)
    other = dtypes.get("float64", dtypes.get("int32"))
    for dtype, want in ((None, b.xp.float32), (b.xp.float32, b.xp.float32), (other, other)):
        what = f"asarray(its own {type(own).__name__} float32, dtype={dtype})"
        try:
            x = b.asarray(own, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - reported as the failure
            raise AssertionError(
                f"{what} raised {type(exc).__name__}: {exc}. asarray receives the library's "
                f"own arrays too (load_state_dict, metrics, user code; another device's, to "
                f"move them): recognise them (owns) before converting through NumPy.") from exc
        require(x.dtype == want, f"{what} gave dtype {x.dtype}, expected {want}")
        require(str(device_of(x)) == str(b.device), f"{what} is on {device_of(x)}, "
                                                    f"expected {b.device}")
        require(np.array_equal(b.to_numpy(x), host), f"{what} changed the values")


def other_devices(b: Backend) -> None:
    """An array of the library on another of its devices is moved to ``device`` by
    ``asarray`` (the explicit transfer), where the library has another device here."""
    np = load_numpy()
    host = np.arange(4.0, dtype=np.float32)
    for dev in _devices(b):
        try:
            foreign = b.xp.asarray(host, device=dev)
        except Exception:  # noqa: BLE001 - a device that holds no arrays here
            continue
        what = f"asarray(its own array on device {dev})"
        x = convert(b, foreign, None, what)
        require(str(device_of(x)) == str(b.device),
                f"{what} stayed on {device_of(x)}: asarray is the explicit transfer and must "
                f"move it to the backend's device {b.device} (mlcore never moves arrays "
                f"itself).")
        require(np.array_equal(b.to_numpy(x), host), f"{what} changed the values")


def _devices(b: Backend) -> list[Any]:
    info = getattr(b.xp, "__array_namespace_info__", None)
    if info is None:
        return []
    with warnings.catch_warnings():  # array-api-compat's torch warns about device names
        warnings.simplefilter("ignore")
        try:
            found = list(info().devices())
        except Exception:  # noqa: BLE001 - no device list: nothing to move between
            return []
    return [d for d in found if d is not None and d != b.device
            and str(d) != str(b.device) and "meta" not in str(d)]


def compile_offer(b: Backend) -> str:
    """The plugin whose ``mlcore_compile_step`` offers a compiled step for ``b`` (asked
    one plugin at a time, as the core asks them all: with a step it never runs), or ""."""
    for impl in reversed(registry().pm.hook.mlcore_compile_step.get_hookimpls()):
        args = {"backend": b, "step": probe_step}
        try:
            found = impl.function(**{n: args[n] for n in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - reported as the failure
            raise AssertionError(
                f"mlcore_compile_step of plugin {impl.plugin_name!r} raised "
                f"{type(exc).__name__}: {exc} when asked whether it compiles training steps "
                f"for backend {b.name!r}. The hook is asked for every backend, with a step "
                f"it never runs: return None for backends not your own, a callable for "
                f"yours; fit falls back to the (slower) eager step when it raises.") from exc
        if callable(found):  # as the core counts an offer (anything else: declined)
            return f"plugin {impl.plugin_name!r}"
    return ""


@contextmanager
def no_fallback(label: str, offered: str) -> Iterator[None]:
    """Fails the ``training`` check when the compiled step that ``offered`` (a plugin)
    offers did not run: it raised (``jit_compile=True``), or fit would fall back to the
    eager step (a ``CompiledStepWarning`` or ``PluginWarning``). Other warnings pass."""
    def failed(why: str) -> AssertionError:
        return AssertionError(
            f"{label} step: {offered} offers a compiled training step for this backend "
            f"(its mlcore_compile_step returned a callable), but that step did not run "
            f"({why}). fit would fall back to the eager step, with a warning at most. Fix the "
            f"compiled step, or return None from the hook for steps it cannot compile.")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except AssertionError:
            raise
        except Exception as exc:
            if offered:
                raise failed(f"{type(exc).__name__}: {exc}") from exc
            raise
    fell = [w for w in caught if offered and issubclass(w.category, (CompiledStepWarning,
                                                                     PluginWarning))]
    for w in caught:
        if w not in fell:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fell:
        raise failed(f"{fell[0].category.__name__}: {fell[0].message}")


def round_trip(obj: Any, what: str, culprit: str) -> Any:
    try:
        return pickle.loads(pickle.dumps(obj))
    except Exception as exc:  # noqa: BLE001 - reported as the failure
        raise AssertionError(
            f"pickling {what} failed ({type(exc).__name__}: {exc}){culprit}. A fitted model "
            f"pickles with its backend, so the backend must pickle without its library's "
            f"modules: pickle it by class and device (__reduce__ returning (type(self), "
            f"(device,))), as mlcore_numpy.kit.LibraryBackend does.") from exc


def unpicklable(b: Backend) -> str:
    """``"; its attribute 'xp' (module) does not pickle"`` for the first such attribute of
    ``b``'s instance dict (a cached property holding the library's module), else ""."""
    for key, value in vars(b).items() if hasattr(b, "__dict__") else ():
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - the culprit
            return (f"; its attribute {key!r} ({type(value).__name__}) does not pickle: a "
                    f"cached property keeps it in the instance")
    return ""
