"""The backend conformance check: is an array backend fit to run mlcore's core?

:func:`check_backend` runs the checks below on an installed backend (first-party or a
stranger's, found by its entry point) and raises ``AssertionError`` naming the check, what
was expected and what came. Each compares with the NumPy backend, the host oracle:

``protocol``     the :class:`~mlcore.backend.Backend` members exist; ``name`` is the
                 lower-case name it is registered under; available, with no reason (a
                 member that raises is named); ``owns`` its arrays and not NumPy's (unless
                 its namespace is NumPy's); with ``inplace=True``, ``x[...] = v`` and
                 ``x -= u`` write into ``x`` itself.
``namespace``    which namespace the core uses where: ``backend.xp`` (creation, dtypes) and
                 ``array_namespace(x)`` of its arrays (the maths); each has every function
                 the core calls (:data:`~mlcore.backend.XP_CALLS`, :data:`MATH_CALLS`), the
                 missing one named.
``conversions``  ``asarray`` of lists, NumPy float32/float64/int64/bool arrays and scalars,
                 with and without ``dtype``, lands on ``device`` in ``xp``'s namespace;
                 ``asarray(..., dtype=d)`` gives exactly ``d`` for every float and integer
                 dtype of ``xp``; ``asarray`` takes the library's own arrays (and moves those
                 of another device, where the library has one); ``to_numpy`` gives back a
                 C-ordered NumPy copy with the same values, also of a transposed array;
                 editing that copy changes nothing.
``random``       ``rng(seed)``: the same seed gives the same numbers, another seed others;
                 uniform, normal and permutation have the right shape, dtype and range.
``activations``  every built-in activation, forward and backward, agrees with NumPy's.
``losses``       every built-in loss (value and gradient, each reduction) agrees with NumPy's.
``shapes``       mismatched shapes raise: mlcore's ShapeError from a layer, and ValueError or
                 the backend's declared ``shape_errors`` from the library itself.
``training``     one training step (eager, and compiled when a plugin's
                 ``mlcore_compile_step`` offers a step for the backend) from the same weights
                 gives NumPy's loss and new weights; an offered compiled step must run (a
                 hook that raises, or a step that fails and falls back, is a failure).
``save_load``    a model saved on the backend loads on NumPy with the same weights, and back.
``pickle``       the backend pickles after use, and so does a model fitted on it (the
                 member that does not pickle is named).

NumPy is imported inside the functions: ``import mlcore`` stays free of array libraries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..activations import activation
from ..arrays.namespace import device_of
from ..backend import Backend, backend_status, get_backend, optional_members, use_backend
from ..errors import ShapeError
from ..layers.core import Dense
from ..losses import loss
from ..models import load
from ..models.sequential import MLP
from ..plugins import canonical_name, registry
from ..training.fit import make_train_step
from .backend_contract import (
    MATH_CALLS,
    check_namespaces,
    compile_offer,
    convert,
    every_dtype,
    inplace_promise,
    no_fallback,
    other_devices,
    own_arrays,
    round_trip,
    unpicklable,
)
from .float64 import float64_reason

__all__ = ["BACKEND_CHECKS", "MATH_CALLS", "check_backend"]

BACKEND_CHECKS = ("protocol", "namespace", "conversions", "random", "activations", "losses",
                  "shapes", "training", "save_load", "pickle")
_MEMBERS = ("name", "xp", "device", "asarray", "to_numpy", "synchronize", "rng",
            "is_available", "unavailable_reason", "owns")


def check_backend(backend: Backend | str, *, checks: Sequence[str] | None = None,
                  rtol: float = 1e-5) -> None:
    """Run the backend checks (all, or ``checks``) on ``backend`` (a name or the object).

    ``rtol`` is the float32 tolerance against NumPy (float64 uses ``rtol**2``).
    """
    chosen = list(BACKEND_CHECKS if checks is None else checks)
    unknown = sorted(set(chosen) - set(BACKEND_CHECKS))
    if unknown:
        raise ValueError(f"Unknown backend check(s) {', '.join(unknown)}; the checks are "
                         f"{', '.join(BACKEND_CHECKS)}.")
    b = _resolve(backend)
    for check in chosen:
        try:
            _CHECKS[check](b, rtol)
        except AssertionError as exc:
            raise AssertionError(f"[backend {b.name}] {check}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - named with its check, traceback chained
            raise AssertionError(f"[backend {b.name}] {check}: raised {type(exc).__name__}: "
                                 f"{exc}") from exc


def _resolve(backend: Backend | str) -> Backend:
    """The backend object: one that is installed but faulty (a member raises, ``xp`` lacks a
    function) is checked, and ``protocol`` names its fault; an unknown or unavailable one
    raises as :func:`~mlcore.backend.get_backend` does."""
    if not isinstance(backend, str):
        return backend
    found = registry().backends.get(canonical_name(backend))
    if found is not None and backend_status(found).state == "failed":
        return found  # type: ignore[no-any-return]
    return get_backend(backend)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _np() -> Any:
    import numpy as np

    return np


def _close(got: Any, want: Any, rtol: float, what: str) -> None:
    np = _np()
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    _require(got.shape == want.shape, f"{what}: shape {got.shape}, NumPy gives {want.shape}")
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    _require(err <= rtol, f"{what}: differs from NumPy by {err:.3g} (relative to the largest "
                          f"value), tolerance {rtol:g}")


# -- protocol and conversions ---------------------------------------------------------------
def _protocol(b: Backend, rtol: float) -> None:
    np = _np()
    missing = [m for m in _MEMBERS if not _has(b, m)]
    _require(not missing, f"missing Backend member(s) {', '.join(missing)}")

    registered = registry().backends.get(b.name)
    _require(isinstance(b.name, str) and b.name == b.name.lower() and registered is not None,
             f"name {b.name!r} must be the lower-case name the backend is registered under "
             f"(registered: {', '.join(sorted(registry().backends))})")
    status = backend_status(b)
    _require(status.state == "available", f"not usable here ({status.state}): {status.reason}")
    _require(b.is_available() is True and b.unavailable_reason() == "",
             f"is_available() {b.is_available()!r} with reason {b.unavailable_reason()!r}")
    x = b.asarray([1.0, 2.0])
    _require(b.owns(x), f"owns() is False for its own array {type(x).__name__}")
    if b.xp is not get_backend("numpy").xp:  # a backend over NumPy owns NumPy's arrays
        _require(not b.owns(np.ones(2)), "owns() is True for a NumPy array")
    if optional_members(b).inplace:
        inplace_promise(b)


def _has(b: Backend, member: str) -> bool:
    """Whether ``b`` has ``member``: one that raises on access has it (``backend_status``
    names what it raised)."""
    try:
        getattr(b, member)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 - it exists, and fails: reported by the status below
        return True
    return True


def _conversions(b: Backend, rtol: float) -> None:
    import array_api_compat

    np = _np()

    host = np.arange(12.0).reshape(3, 4) - 5.5
    cases = [(host, None), (host, b.xp.float32), (host.astype(np.float32), None),
             (host.astype(np.int64), None), (host > 0, None), ([[1, 2], [3, 4]], None),
             (2.5, None)]
    for obj, dtype in cases:
        what = f"asarray({type(obj).__name__} {np.asarray(obj).dtype}, dtype={dtype})"
        x = convert(b, obj, dtype, what)
        _require(array_api_compat.array_namespace(x) is not None, f"{what}: no namespace")
        _require(str(device_of(x)) == str(b.device),
                 f"{what} is on {device_of(x)}, expected the backend's device {b.device}")
        back = b.to_numpy(x)
        _require(isinstance(back, np.ndarray), f"to_numpy gave {type(back).__name__}")
        _require(np.array_equal(back, np.asarray(obj, dtype=back.dtype)),
                 f"{what}: to_numpy does not give the values back")
    x = b.asarray(host)
    t = b.to_numpy(b.xp.matrix_transpose(x))
    _require(t.flags.c_contiguous and np.array_equal(t, host.T),
             "to_numpy of a transposed array must be a C-ordered copy of its values")
    t[...] = 0.0
    _require(np.array_equal(b.to_numpy(x), host), "editing to_numpy's result changed the array")
    every_dtype(b)
    own_arrays(b)
    other_devices(b)


def _random(b: Backend, rtol: float) -> None:
    np = _np()
    f32 = b.xp.float32
    draws = [b.to_numpy(b.rng(seed).uniform(-1.0, 1.0, (50,), f32)) for seed in (7, 7, 8)]
    _require(np.array_equal(draws[0], draws[1]), "rng(7) twice gave different numbers")
    _require(not np.array_equal(draws[0], draws[2]), "rng(7) and rng(8) gave the same numbers")
    _require(draws[0].dtype == np.float32 and bool(np.all(np.abs(draws[0]) <= 1.0)),
             f"uniform(-1, 1, float32) gave dtype {draws[0].dtype}, range "
             f"[{draws[0].min()}, {draws[0].max()}]")
    wide = b.xp.float32 if float64_reason(b) else b.xp.float64
    normal = b.to_numpy(b.rng(1).normal(0.0, 2.0, (4, 500), wide))
    _require(normal.shape == (4, 500) and abs(float(normal.std()) - 2.0) < 0.2,
             f"normal(0, 2) gave shape {normal.shape} and std {normal.std():.3f}")
    perm = b.to_numpy(b.rng(3).permutation(20))
    _require(perm.dtype.kind in "iu" and sorted(perm.tolist()) == list(range(20)),
             f"permutation(20) gave {perm.tolist()} of dtype {perm.dtype}")


# -- numerics against NumPy -----------------------------------------------------------------
def _builtin(kind: str) -> list[str]:

    return sorted(n for r in registry().records if r.builtin
                  for n in r.provides.get(kind, []))


def _float_cases(b: Backend, rtol: float) -> list[tuple[str, float]]:
    """float32 at ``rtol``, and float64 at ``rtol**2`` where the backend has it."""
    return [("float32", rtol)] + ([] if float64_reason(b) else [("float64", rtol * rtol)])


def _pairs(b: Backend, dtype: str) -> tuple[Backend, Any, Any]:
    ref = get_backend("numpy")
    return ref, getattr(ref.xp, dtype), getattr(b.xp, dtype)


def _activations(b: Backend, rtol: float) -> None:

    np = _np()
    x0 = np.random.default_rng(0).normal(0.0, 2.0, (5, 4))
    for dtype, tol in _float_cases(b, rtol):
        ref, rdt, bdt = _pairs(b, dtype)
        for name in _builtin("activations"):
            fn = activation(name)
            xr, xb = ref.asarray(x0, dtype=rdt), b.asarray(x0, dtype=bdt)
            yr, yb = fn.forward(xr), fn.forward(xb)
            what = f"activation {name!r} ({dtype})"
            _close(b.to_numpy(yb), yr, tol, f"{what} forward")
            dy = np.cos(x0)
            gr = fn.backward(xr, yr, ref.asarray(dy, dtype=rdt))
            gb = fn.backward(xb, yb, b.asarray(dy, dtype=bdt))
            _close(b.to_numpy(gb), gr, tol, f"{what} backward")


def _losses(b: Backend, rtol: float) -> None:

    np = _np()
    gen = np.random.default_rng(1)
    pred0 = gen.dirichlet(np.ones(3), size=6)  # probability rows: valid for every loss
    target0 = gen.dirichlet(np.ones(3), size=6)
    for dtype, tol in _float_cases(b, rtol):
        ref, rdt, bdt = _pairs(b, dtype)
        for name in _builtin("losses"):
            for reduction in ("mean", "sum", "none"):
                fn = loss(name, reduction=reduction)
                pr, tr = ref.asarray(pred0, dtype=rdt), ref.asarray(target0, dtype=rdt)
                pb, tb = b.asarray(pred0, dtype=bdt), b.asarray(target0, dtype=bdt)
                what = f"loss {name!r} (reduction={reduction!r}, {dtype})"
                _close(b.to_numpy(fn.forward(pb, tb)), fn.forward(pr, tr), tol, what)
                _close(b.to_numpy(fn.backward(pb, tb)), fn.backward(pr, tr), tol,
                       f"{what} gradient")


def _shapes(b: Backend, rtol: float) -> None:

    np = _np()
    with use_backend(b.name):
        layer = Dense(3, 2, seed=0)
    try:
        layer.forward(b.asarray(np.ones((4, 5)), dtype=layer.weight.value.dtype))
    except ShapeError:
        pass
    else:
        raise AssertionError("Dense(3, 2) accepted input of shape (4, 5)")
    accepted: tuple[type[BaseException], ...] = (ValueError, *optional_members(b).shape_errors)
    try:
        b.asarray(np.ones((4, 3))) + b.asarray(np.ones((5, 3)))
    except accepted:
        return
    except Exception as exc:  # noqa: BLE001 - reported as the failure
        raise AssertionError(
            f"adding shapes (4, 3) and (5, 3) raised {type(exc).__name__}: {exc}; declare it "
            f"as the backend's shape_errors = ({type(exc).__name__},)") from None
    raise AssertionError("adding shapes (4, 3) and (5, 3) was accepted silently")


# -- training and files ----------------------------------------------------------------------
def _model_on(name: str, like: Any = None) -> Any:

    with use_backend(name):
        model = MLP([4, 6, 3], activation="tanh", output_activation="softmax", seed=0)
        if like is not None:
            backend = model.backend
            model.load_state_dict({k: backend.asarray(v) for k, v in like.items()})
    return model


def _weights(model: Any) -> dict[str, Any]:
    return {k: model.backend.to_numpy(v) for k, v in model.state_dict().items()}


def _training(b: Backend, rtol: float) -> None:

    np = _np()
    gen = np.random.default_rng(2)
    x0, y0 = gen.normal(size=(16, 4)), gen.integers(0, 3, size=16)
    ref_model = _model_on("numpy")
    start = _weights(ref_model)
    ref_loss = make_train_step(ref_model, "cross_entropy", "adam", lr=0.01)(
        ref_model.backend.asarray(x0, dtype=ref_model.dtype), ref_model.backend.asarray(y0))
    offered = compile_offer(b)
    runs: list[tuple[str, bool | None]] = [("eager", False), ("default", None)]
    if offered:
        runs.insert(1, ("compiled", True))
    for label, jit in runs:
        model = _model_on(b.name, start)
        with no_fallback(label, offered):
            step = make_train_step(model, "cross_entropy", "adam", lr=0.01, jit_compile=jit)
            value = step(b.asarray(x0, dtype=model.dtype), b.asarray(y0))
        b.synchronize()
        _close(b.to_numpy(value), ref_model.backend.to_numpy(ref_loss), rtol,
               f"{label} step loss")
        for key, want in _weights(ref_model).items():
            _close(_weights(model)[key], want, rtol, f"{label} step, {key} after the update")


def _save_load(b: Backend, rtol: float) -> None:

    np = _np()
    model = _model_on(b.name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        model.save(path)
        on_numpy = load(path, backend="numpy")
        on_numpy.save(path)
        back = load(path, backend=b.name)
    for key, want in _weights(model).items():
        _require(np.array_equal(_weights(on_numpy)[key], want),
                 f"{key} changed when loaded on numpy")
        _require(np.array_equal(_weights(back)[key], want), f"{key} changed on the way back")


def _pickle(b: Backend, rtol: float) -> None:
    """The backend pickles after use (its library imported, its caches filled), and so does
    a model fitted on it: joblib, scikit-learn's ``clone`` and ``check_estimators_pickle``
    pickle a fitted model, backend included."""
    np = _np()
    b.asarray(np.ones(2), dtype=b.xp.float32)  # used: lib, xp and device cached
    back = round_trip(b, "the backend after use", unpicklable(b))
    _require(back.name == b.name and str(back.device) == str(b.device),
             f"the backend came back from pickle as {back.name!r} on {back.device}, "
             f"expected {b.name!r} on {b.device}")
    model = _model_on(b.name)
    gen = np.random.default_rng(3)
    with use_backend(b.name):
        model.fit(gen.normal(size=(8, 4)), gen.integers(0, 3, size=8), loss="cross_entropy",
                  epochs=1, batch_size=4, verbose=False)
    b.synchronize()
    copy = round_trip(model, "a model fitted on the backend", unpicklable(b))
    _require(copy.backend.name == b.name, f"the model came back on backend "
                                          f"{copy.backend.name!r}, expected {b.name!r}")
    for key, want in _weights(model).items():
        _require(np.array_equal(_weights(copy)[key], want), f"{key} changed in pickle")


_CHECKS: dict[str, Callable[[Backend, float], None]] = {
    "protocol": _protocol, "namespace": check_namespaces, "conversions": _conversions,
    "random": _random, "activations": _activations, "losses": _losses, "shapes": _shapes,
    "training": _training, "save_load": _save_load, "pickle": _pickle,
}
