"""The conformance checks for the training plugin kinds: metrics and optimisers.

:func:`check_metric` and :func:`check_optimizer` raise ``AssertionError`` describing the
first failure, on one backend or on every usable one. NumPy is the host oracle; it is
imported inside the functions, so ``import mlcore`` stays free of array libraries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..backend import Backend, backend_status, get_backend, use_backend
from ..hookspecs import hookimpl
from ..layers.core import Parameter
from ..models.sequential import MLP
from ..plugins import registry
from ..training.fit import make_train_step
from .float64 import float64_reason

__all__ = ["check_metric", "check_optimizer", "TASKS", "identity_compiler"]


def _backends(backend: Backend | str | None, every: bool) -> list[Backend]:
    if backend is not None or not every:
        return [backend if not isinstance(backend, str | None) else get_backend(backend)]
    return [b for b in registry().backends.values()
            if backend_status(b).state == "available"]


def _dtypes(b: Backend) -> tuple[str, ...]:
    """The float dtypes ``b`` computes in: float64 only where it can (JAX's 64-bit mode)."""
    return ("float32",) if float64_reason(b) else ("float64", "float32")


def _binary_data(rng: Any) -> tuple[Any, Any]:
    """Probabilities (N, 1) with ties and 0/1 labels holding both classes."""
    p = rng.random((53, 1))
    p[::5] = 0.5
    y = (rng.random(53) < 0.4).astype("float64")
    y[:2] = [0.0, 1.0]
    return p, y


def _multiclass_data(rng: Any) -> tuple[Any, Any]:
    """Probability rows (N, 3) and integer class labels holding every class."""
    p = rng.dirichlet((1.0, 1.0, 1.0), size=53)
    y = rng.integers(0, 3, size=53)
    y[:3] = [0, 1, 2]
    return p, y


def _regression_data(rng: Any) -> tuple[Any, Any]:
    """Outputs and targets (N, 2)."""
    return rng.normal(size=(53, 2)), rng.normal(size=(53, 2))


TASKS = {
    "binary": ("binary_cross_entropy: y_pred (N, 1) probabilities in the model's dtype, "
               "y_true (N, 1) bool labels", _binary_data),
    "multiclass": ("cross_entropy: y_pred (N, M) probability rows in the model's dtype, "
                   "y_true (N,) integer class labels", _multiclass_data),
    "regression": ("any other loss: y_pred (N, k) and y_true (N, k), both in the model's "
                   "dtype", _regression_data),
}
"""What ``fit`` feeds a metric, per loss family (the metric input contract,
:class:`mlcore.metrics.Metric`), and the kit's default data for it."""


def _as_fit_feeds(b: Backend, task: str, p: Any, y: Any, dt: str) -> tuple[Any, Any]:
    """``(y_pred, y_true)`` exactly as ``fit`` hands them to ``update`` for ``task``."""
    import numpy as np

    pa = b.asarray(np.asarray(p, dtype=dt).reshape(len(p), -1))
    y = np.asarray(y)
    if task == "binary":
        return pa, b.asarray(y.reshape(len(y), 1) > 0.5)
    if task == "multiclass":
        return pa, b.asarray(y.astype("int64") if y.ndim == 1 else np.argmax(y, axis=1))
    return pa, b.asarray(y.astype(dt).reshape(pa.shape))


def check_metric(metric: str | Callable[..., Any], backend: Backend | str | None = None, *,
                 task: str = "binary",
                 data: Callable[[Any], tuple[Any, Any]] | None = None,
                 reference: Callable[[Any, Any], float] | None = None,
                 tol: float = 1e-6) -> None:
    """Check a metric (a registered name or a factory) on ``backend`` (default: every
    usable backend), fed exactly what ``fit`` feeds it for ``task`` (:data:`TASKS`:
    ``"binary"``, bool (N, 1) labels; ``"multiclass"``, integer (N,) labels; ``"regression"``,
    floating targets of the output's shape): a lower-case ``name``; ``update``/``result``
    give a Python float; seven batches give the whole set's value; float32 and float64
    (where the backend has it) work; inputs are left unchanged; calling the metric on host
    data (``metric(y_pred, y_true)``) agrees; and, with ``reference(y_pred, y_true)``
    (float64 NumPy, the host data), agreement with it. ``data(rng)`` returns host
    ``(y_pred, y_true)`` (default: the task's)."""
    import numpy as np

    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; the tasks are {', '.join(TASKS)}.")
    feeds, default = TASKS[task]
    factory = registry().get("metrics", metric) if isinstance(metric, str) else metric
    for b in _backends(backend, True):
        rng = np.random.default_rng(0)
        p, y = (data or default)(rng)
        m = factory()
        name = getattr(m, "name", "")
        assert isinstance(name, str) and name.isidentifier() and name == name.lower(), \
            f"metric {m!r} needs a lower-case identifier as name, has {name!r}"
        for dt in _dtypes(b):
            where = f"{name} on {b.name} {dt}"
            pa, ya = _as_fit_feeds(b, task, p, y, dt)
            held = b.to_numpy(pa).copy()
            try:
                whole = m.result(m.update(None, pa, ya))
            except Exception as exc:
                raise AssertionError(
                    f"{where}: update/result raised {type(exc).__name__}: {exc}, fed what fit "
                    f"feeds with {feeds} (y_true {ya.dtype}, shape {tuple(ya.shape)}). Cast "
                    f"y_true to y_pred's dtype first (xp.astype); see the metric input "
                    f"contract, mlcore.metrics.Metric") from None
            assert isinstance(whole, float) and math.isfinite(whole), \
                f"{where}: result must be a finite Python float, got {whole!r}"
            state = None
            n = p.shape[0]
            for s in range(0, n, 8):
                state = m.update(state, pa[s:min(s + 8, n), ...], ya[s:min(s + 8, n), ...])
            batched = m.result(state)
            scale = 1e-4 if dt == "float32" else tol
            assert math.isclose(batched, whole, rel_tol=scale, abs_tol=scale), \
                f"{where}: 7 batches give {batched}, the whole set {whole}"
            np.testing.assert_array_equal(b.to_numpy(pa), held,
                                          err_msg=f"{where}: update modified y_pred")
            direct = m(pa, np.asarray(y))
            assert math.isclose(direct, whole, rel_tol=scale, abs_tol=scale), \
                f"{where}: called on host labels, metric(y_pred, y_true) gives {direct}; fed " \
                f"as fit feeds, {whole}"
            if reference is not None and dt == "float64":
                want = float(reference(p, y))
                assert math.isclose(whole, want, rel_tol=tol, abs_tol=tol), \
                    f"{where}: {whole}, the reference gives {want}"


def check_optimizer(optimizer: str | Callable[..., Any], backend: Backend | str | None = None,
                    *, lr: float | None = None, steps: int = 60) -> None:
    """Check an optimiser (a registered name or a factory ``f(params, lr=...)``) on
    ``backend`` (default: every usable backend): it lowers the quadratic
    ``0.5 ||p - t||²`` over ``steps`` steps in float32 and float64, keeps the parameters'
    shape, dtype and backend, skips parameters without a gradient, leaves the caller's
    ``grad`` arrays as they were, and (when it has ``state_dict``) a copy restored from its
    state after a few steps continues exactly.

    For an optimiser written as a rule (:class:`mlcore.plugin.OptimizerBase`), also: the
    rule is pure (it writes into none of its inputs, which a traced JAX step requires);
    training a small model with the step compiled (an identity compiler; ``jax.jit`` on the
    jax backend) gives the eager weights and state; and, when it takes ``weight_decay``, a
    positive decay with zero gradients moves the parameters towards zero."""
    import numpy as np


    factory = registry().get("optimizers", optimizer) if isinstance(optimizer, str) else optimizer
    kw = {} if lr is None else {"lr": lr}
    for b in _backends(backend, True):
        for dt in _dtypes(b):
            rng = np.random.default_rng(1)
            start, target = rng.standard_normal(5).astype(dt), rng.standard_normal(5).astype(dt)
            t = b.asarray(target)

            def run(params: list[Any], opt: Any, n: int, t: Any = t) -> None:
                for _ in range(n):
                    params[0].grad = params[0].value - t
                    opt.step()

            ps = [Parameter(b.asarray(start.copy())), Parameter(b.asarray(start.copy()))]
            opt = factory(ps, **kw)
            before = float(np.sum((start - target) ** 2))
            run(ps, opt, steps)
            after = b.to_numpy(ps[0].value)
            assert b.owns(ps[0].value) and after.shape == (5,) and after.dtype == np.dtype(dt), \
                f"{type(opt).__name__} on {b.name} {dt}: the parameter changed kind"
            assert float(np.sum((after - target) ** 2)) < before, \
                f"{type(opt).__name__} on {b.name} {dt}: {steps} steps did not lower 0.5||p - t||²"
            np.testing.assert_array_equal(b.to_numpy(ps[1].value), start,
                                          err_msg="a parameter without a gradient was updated")
            _check_grad_untouched(b, factory, kw, start, dt)
            if hasattr(opt, "state_dict"):
                _check_resume(b, factory, kw, start, run)
            if getattr(opt, "has_rule", False):
                _check_pure(b, opt, start, dt)
                _check_weight_decay(b, factory, kw, start)
                if dt == "float64" or b.name == "jax":
                    _check_compiled(b, factory, kw, dt)


def _name(opt: Any, b: Backend, dt: str = "") -> str:
    return f"{type(opt).__name__} on {b.name}{' ' + dt if dt else ''}"


def _check_grad_untouched(b: Backend, factory: Callable[..., Any], kw: dict[str, Any],
                          start: Any, dt: str) -> None:
    import numpy as np


    ps = [Parameter(b.asarray(start.copy()))]
    opt = factory(ps, **kw)
    grad = (start * 0.5 + 1.0).astype(dt)
    ps[0].grad = b.asarray(grad.copy())
    held = ps[0].grad
    opt.step()
    np.testing.assert_array_equal(
        b.to_numpy(held), grad,
        err_msg=f"{_name(opt, b, dt)}: step() changed the caller's gradient array in place "
                f"(clip or scale a copy)")


def _check_pure(b: Backend, opt: Any, start: Any, dt: str) -> None:
    """The rule writes into none of its inputs (values compared before and after)."""
    import numpy as np

    xp = opt.xp
    values = [b.asarray(start.copy()), b.asarray(start.copy() * 2.0)]
    grads = [b.asarray(start.copy() + 1.0), b.asarray(start.copy() - 1.0)]
    state = opt.init(xp, values)
    for name in opt.slots:  # non-zero state, so that writes show
        state[name] = tuple(b.asarray(np.full(start.shape, 0.25, dtype=dt)) for _ in values)
    if opt.counted:
        state["step"] = 2
    copies = [[b.to_numpy(a).copy() for a in arrays] for arrays in
              (values, grads, *(state[n] for n in opt.slots))]
    new_values, new_state = opt.update(xp, values, grads, state, 0.01)
    for kind, arrays, saved in zip(("params", "grads", *opt.slots),
                                   (values, grads, *(state[n] for n in opt.slots)), copies,
                                   strict=True):
        for a, c in zip(arrays, saved, strict=True):
            np.testing.assert_array_equal(
                b.to_numpy(a), c, err_msg=f"{_name(opt, b, dt)}: the rule wrote into its "
                f"input {kind!r}; return new arrays instead (a compiled JAX step cannot write)")
    assert len(new_values) == len(values) and set(new_state) >= set(opt.slots), \
        f"{_name(opt, b, dt)}: the rule must return one array per parameter and every slot " \
        f"{list(opt.slots)}, returned {len(new_values)} arrays and {sorted(new_state)}"


def _check_weight_decay(b: Backend, factory: Callable[..., Any], kw: dict[str, Any],
                        start: Any) -> None:
    import numpy as np


    ps = [Parameter(b.asarray(start.copy() + 3.0))]
    try:
        opt = factory(ps, **(kw | {"weight_decay": 0.1}))
    except TypeError:  # takes no weight_decay
        return
    for _ in range(3):
        ps[0].grad = b.asarray(np.zeros_like(start))
        opt.step()
    after = b.to_numpy(ps[0].value)
    assert float(np.sum(np.abs(after))) < float(np.sum(np.abs(start + 3.0))), \
        f"{_name(opt, b)}: weight_decay=0.1 with zero gradients did not move the parameters " \
        f"towards zero (is weight_decay ignored?)"


@contextmanager
def identity_compiler(plugin: Any) -> Iterator[None]:
    """``plugin`` (an :class:`_Identity`, or None for none) registered for the block."""
    if plugin is not None:
        registry().pm.register(plugin, name="mlcore-kit-identity-compiler")
    try:
        yield
    finally:
        if plugin is not None:
            registry().pm.unregister(plugin)


class _Identity:
    """A compiler that returns the pure step itself: the compiled path, on any backend."""

    def __init__(self) -> None:

        self.mlcore_compile_step = hookimpl(self._compile)

    @staticmethod
    def _compile(backend: Any, step: Any) -> Any:
        return step


def _check_compiled(b: Backend, factory: Callable[..., Any], kw: dict[str, Any],
                    dt: str) -> None:
    """A small model trained eagerly and with the compiled step: the same weights and
    state (the identity compiler; jax.jit on jax)."""
    import numpy as np


    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(16, 3)).astype(dt), rng.integers(0, 2, size=16)
    results = []
    plugin = None if b.name == "jax" else _Identity()
    if plugin is not None:
        registry().pm.register(plugin, name="mlcore-kit-identity-compiler")
    try:
        for jit in (False, True):
            with use_backend(b):
                model = MLP([3, 5, 2], activation="tanh", seed=0, dtype=dt)
                opt = factory(model.parameters(), **kw)
                step = make_train_step(model, "cross_entropy", opt, jit_compile=jit)
                xb, yb = b.asarray(x), b.asarray(y)
                for _ in range(4):
                    step(xb, yb)
                results.append([b.to_numpy(p.value) for p in model.parameters()]
                               + [b.to_numpy(a) for a in opt.state_arrays()])
    finally:
        if plugin is not None:
            registry().pm.unregister(plugin)
    tol = 1e-9 if dt == "float64" else 1e-4
    for want, got in zip(*results, strict=True):
        np.testing.assert_allclose(
            got, want, rtol=tol, atol=tol,
            err_msg=f"{_name(opt, b, dt)}: four compiled steps differ from four eager ones "
                    f"(the rule must use only its arguments and its declared "
                    f"hyperparameters; state in declared slots)")


def _check_resume(b: Backend, factory: Callable[..., Any], kw: dict[str, Any], start: Any,
                  run: Callable[..., None]) -> None:

    a = [Parameter(b.asarray(start.copy()))]
    opt_a = factory(a, **kw)
    run(a, opt_a, 4)
    c = [Parameter(b.asarray(b.to_numpy(a[0].value).copy()))]
    opt_c = factory(c, **kw)
    opt_c.load_state_dict(opt_a.state_dict())
    run(a, opt_a, 4)
    run(c, opt_c, 4)
    assert (b.to_numpy(a[0].value) == b.to_numpy(c[0].value)).all(), \
        f"{type(opt_a).__name__} on {b.name}: restored from state_dict, it does not continue " \
        f"as the original"
