"""The conformance checks for layers: :func:`check_layer`.

A layer keeps the contract of :mod:`mlcore.layers.base`; the checks (``LAYER_CHECKS``), on
one backend or every usable one:

``gradient``   ``backprop`` against central finite differences of ``sum(Y · dY)`` in
               float64, by ``X`` (unless ``differentiable_input = False``) and by every
               element of every parameter; and ``backprop`` *adds* to ``grad``.
``dtypes``     float32 and float64 (where the backend has float64): the output is an array
               of the backend, on the input's device, in the parameters' dtype.
``purity``     forward and backprop write into none of ``X``, ``dY`` or the parameters
               (a traced JAX step cannot write; an eager one would corrupt the caller's).
``modes``      inference (``eval()``) is deterministic; a layer that is not ``modal``
               gives the same output in both modes.
``state``      ``config()`` is JSON data naming the registered type of the layer's class;
               the layer rebuilt from it (``from_config``) with the state copied gives the
               same output; and a model holding it saves and loads through a model file.
``compiled``   three training steps (the layer and a Dense head; loss mse, SGD) eager and
               through the compiled step
               (an identity compiler; ``jax.jit`` on jax) give the same parameters and
               buffers: the forward pass takes its noise from the step and reads nothing
               back to the host.
``seeds``      built with one seed, the layer gives the same output on this backend as on
               NumPy (the factory seeds every random choice).

``layer`` is a factory called with ``dtype="float32"`` or ``"float64"`` when it takes
``dtype`` (a class with its ``params``, or a function), or a registered layer type name.
``inputs(rng)`` returns the float64 (or integer) NumPy input; the default is ``N(0, 1)`` of
shape (5, ``in_features``) for a layer with ``in_features``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend import Backend, get_backend, use_backend
from ..layers.core import Dense, Layer
from ..layers.registry import layer_class, layer_from_config
from ..models.sequential import Sequential
from ..optimizers import SGD
from ..saving.io import load
from ..training.fit import make_train_step
from ..types import Array, Backprop
from .case import takes
from .checks import _numeric_grad
from .float64 import SkippedCheck, float64_reason
from .training import _backends, _Identity, identity_compiler

__all__ = ["check_layer", "LAYER_CHECKS", "LayerCase", "layer_params", "run_layer_check"]

LAYER_CHECKS = ("gradient", "dtypes", "purity", "modes", "state", "compiled", "seeds")


class _Ctx:
    def __init__(self, factory: Callable[..., Any], b: Backend, params: Mapping[str, Any],
                 inputs: Callable[[Any], Any] | None, label: str, tol: float) -> None:
        import numpy as np

        self.np, self.b, self.factory, self.params = np, b, factory, dict(params)
        self.inputs, self.label, self.tol = inputs, label, tol

    def build(self, dt: str) -> Any:
        kw = dict(self.params)
        if takes(self.factory, "dtype"):
            kw["dtype"] = dt
        with use_backend(self.b):
            return self.factory(**kw)

    def x(self, layer: Any) -> Any:
        rng = self.np.random.default_rng(20240531)
        if self.inputs is not None:
            return self.np.asarray(self.inputs(rng))
        width = getattr(layer, "in_features", None)
        if not isinstance(width, int):
            raise AssertionError(f"{self.label}: the layer has no in_features; pass "
                                 f"inputs=lambda rng: ... (a NumPy array of its input)")
        return rng.normal(size=(5, width))

    def arr(self, host: Any, dt: str) -> Any:
        """Host data as the backend's array; floating in ``dt``, integers kept."""
        host = self.np.asarray(host)
        if host.dtype.kind == "f":
            return self.b.asarray(host.astype(dt))
        return self.b.asarray(host)

    def model_input(self, host: Any, dt: str) -> Any:
        """What ``fit`` hands a model: the input in the parameters' dtype."""
        return self.b.asarray(self.np.asarray(host).astype(dt))

    def host(self, a: Any) -> Any:
        return self.np.asarray(self.b.to_numpy(a), dtype=self.np.float64)

    def dtypes(self) -> list[str]:
        return ["float32"] + ([] if float64_reason(self.b) else ["float64"])

    def float64(self) -> str:
        why = float64_reason(self.b)
        if why:
            raise SkippedCheck(f"{self.label}: needs float64, which {why}")
        return "float64"


def _fail(ctx: _Ctx, what: str) -> AssertionError:
    return AssertionError(f"{ctx.label}: {what}")


def _forward(layer: Layer, X: Array) -> tuple[Array, Backprop]:
    return layer.forward(X, None, input_grad=True)


def _fixed_noise(layer: Any, X: Any, out_shape: Any = None) -> None:
    """Hand a noise-drawing layer one draw, reused by every forward pass of a check."""
    if callable(getattr(layer, "draw", None)) and getattr(layer, "active", False):
        layer.noise = layer.draw(tuple(X.shape), X.dtype)


def _gradient(ctx: _Ctx) -> None:
    np, dt = ctx.np, ctx.float64()
    layer = ctx.build(dt)
    x0 = ctx.x(layer)
    X = ctx.arr(x0, dt)
    _fixed_noise(layer, X)
    Y, backprop = _forward(layer, X)
    w = np.random.default_rng(7).normal(size=tuple(Y.shape))
    params = layer.named_parameters()
    for _, p in params:
        p.grad = None
    dX = backprop(ctx.arr(w, dt))

    def total(xh: Any) -> float:
        return float(np.sum(ctx.host(_forward(layer, ctx.arr(xh, dt))[0]) * w))

    if getattr(layer, "differentiable_input", True):
        if dX is None:
            raise _fail(ctx, "backprop(dY) returned None with input_grad=True; return dX")
        _close(ctx, ctx.host(dX), _numeric_grad(np, total, np.asarray(x0, dtype=float)),
               "dX vs central finite differences (float64)")
    grads: dict[str, Any] = {n: (None if p.grad is None else ctx.host(p.grad))
                             for n, p in params}
    for name, p in params:
        if grads[name] is None:
            raise _fail(ctx, f"backprop left parameter {name!r} without a gradient; add it "
                             f"with Parameter.accumulate")
        saved = p.value
        v0 = ctx.host(saved)

        def by_param(vh: Any, p: Any = p) -> float:
            p.value = ctx.arr(vh, dt)
            return total(x0)

        try:
            want = _numeric_grad(np, by_param, np.asarray(v0, dtype=float))
        finally:
            p.value = saved
        _close(ctx, grads[name], want, f"gradient of {name!r} vs central finite differences "
                                       f"(float64)")
    if params:
        name, p = params[0]
        _forward(layer, X)[1](ctx.arr(w, dt))
        _close(ctx, ctx.host(p.grad), 2.0 * grads[name],
               f"{name!r}.grad after a second backprop: gradients must accumulate "
               f"(Parameter.accumulate adds; zero_grad clears)")


def _close(ctx: _Ctx, got: Any, want: Any, what: str, tol: float | None = None) -> None:
    np = ctx.np
    tol = ctx.tol if tol is None else tol
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        raise _fail(ctx, f"{what}: shape {got.shape}, expected {want.shape}")
    err = np.abs(got - want)
    if np.all(err <= tol * (1.0 + np.abs(want))):
        return
    i = int(np.argmax(err))
    raise _fail(ctx, f"{what}: max abs error {float(err.flat[i]):.3g} (tolerance {tol:g}); "
                     f"at flat index {i} got {float(got.flat[i])!r}, expected "
                     f"{float(want.flat[i])!r}")


def _dtypes(ctx: _Ctx) -> None:
    from array_api_compat import device

    for dt in ctx.dtypes():
        layer = ctx.build(dt)
        X = ctx.arr(ctx.x(layer), dt)
        Y = _forward(layer, X)[0]
        if not ctx.b.owns(Y):
            raise _fail(ctx, f"forward({dt}) gave {type(Y).__module__}.{type(Y).__name__}, "
                             f"expected a {ctx.b.name} array (xp from the inputs, never a fixed "
                             f"library)")
        want = getattr(ctx.b.xp, dt)
        if Y.dtype != want:
            raise _fail(ctx, f"forward({dt}) has dtype {Y.dtype}; keep the parameters' dtype "
                             f"{dt} (Python scalars, arrays made with dtype=)")
        if device(Y) != device(X):
            raise _fail(ctx, f"forward({dt}) is on {device(Y)}, the input on {device(X)}")


def _purity(ctx: _Ctx) -> None:
    np = ctx.np
    for dt in ctx.dtypes():
        layer = ctx.build(dt)
        x0 = ctx.x(layer)
        X = ctx.arr(x0, dt)
        _fixed_noise(layer, X)
        before = [ctx.host(p.value) for _, p in layer.named_parameters()]
        Y, backprop = _forward(layer, X)
        dY = ctx.arr(np.ones(tuple(Y.shape)), dt)
        backprop(dY)
        what = "(write into new arrays: a traced JAX step cannot write into its inputs)"
        _close(ctx, ctx.host(X), np.asarray(x0, dtype=dt), f"X after forward and backprop "
               f"{what}", 0.0)
        _close(ctx, ctx.host(dY), np.ones(tuple(Y.shape)), f"dY after backprop {what}", 0.0)
        for (name, p), old in zip(layer.named_parameters(), before, strict=True):
            _close(ctx, ctx.host(p.value), old, f"parameter {name!r} after forward and "
                   f"backprop (only the optimiser changes parameters) {what}", 0.0)


def _modes(ctx: _Ctx) -> None:
    dt = ctx.dtypes()[-1]
    layer = ctx.build(dt)
    X = ctx.arr(ctx.x(layer), dt)
    model = Sequential([layer])
    model.eval()
    if layer.training:
        raise _fail(ctx, "model.eval() left the layer in training mode (a container must "
                         "list its inner layers in sublayers())")
    a, b = ctx.host(_forward(layer, X)[0]), ctx.host(_forward(layer, X)[0])
    _close(ctx, b, a, "two forward passes in inference mode differ (randomness belongs to "
                      "training mode, drawn through draw()/noise)", 0.0)
    model.train()
    if not getattr(layer, "modal", False):
        _close(ctx, ctx.host(_forward(layer, X)[0]), a, "the output in training mode differs "
               "from inference mode, but the layer does not declare modal = True")


def _state(ctx: _Ctx) -> None:
    dt = ctx.dtypes()[-1]
    layer = ctx.build(dt)
    try:
        cfg = layer.config()
        text = json.dumps(cfg, allow_nan=False)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise _fail(ctx, f"config() is not JSON data ({type(exc).__name__}: {exc}); return "
                         f"{{'type': name, **constructor arguments}} (LayerBase.get_config)"
                    ) from None
    kind = cfg.get("type")
    if layer_class(kind) is not type(layer):
        raise _fail(ctx, f"config() names type {kind!r}, but the registered class for it is "
                         f"{getattr(layer_class(kind), '__name__', None)}, not "
                         f"{type(layer).__name__}: register the class under that name through "
                         f"the mlcore_layers hook (a model holding it could not be saved)")
    with use_backend(ctx.b):
        again = layer_from_config(json.loads(text))
    names = [n for n, _ in layer.named_parameters() + layer.named_buffers()]
    got = [n for n, _ in again.named_parameters() + again.named_buffers()]
    if names != got:
        raise _fail(ctx, f"rebuilt from its config it has parameters and buffers {got}, the "
                         f"original {names}")
    model = Sequential([layer]).eval()
    X = ctx.model_input(ctx.x(layer), dt) if not getattr(layer, "differentiable_input", True) \
        else ctx.arr(ctx.x(layer), dt)
    want = ctx.host(model(X))
    rebuilt = Sequential([again]).eval()
    rebuilt.load_state_dict(model.state_dict())
    _close(ctx, ctx.host(rebuilt(X)), want, "rebuilt from config() and state_dict(), the "
           "output differs (get_config must hold every constructor argument)", 0.0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.safetensors")
        model.save(path)  # type: ignore[attr-defined]
        loaded = load(path, backend=ctx.b.name)
    _close(ctx, ctx.host(loaded.eval()(X)), want, "saved and loaded in a model file, the "
           "output differs", 0.0)


def _compiled(ctx: _Ctx) -> None:
    np = ctx.np
    dt = "float32" if ctx.b.name == "jax" else ctx.float64()
    results = []
    plugin = None if ctx.b.name == "jax" else _Identity()
    with identity_compiler(plugin):
        for jit in (False, True):
            layer = ctx.build(dt)
            x0 = ctx.x(layer)
            X = ctx.model_input(x0, dt)
            width = int(Sequential([layer]).eval()(X).shape[1])
            with use_backend(ctx.b):  # a head: the step needs a parameter and a width
                model = Sequential([layer, Dense(width, 2, seed=0, dtype=dt)])
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a fallback to the eager step is a failure
                out = model.eval()(X)
                model.train()
                y = ctx.b.asarray(np.random.default_rng(3).normal(
                    size=tuple(out.shape)).astype(dt))
                step = make_train_step(model, "mse", SGD(model.parameters(), lr=0.05),
                                       jit_compile=jit)
                try:
                    for _ in range(3):
                        step(X, y)
                except Exception as exc:
                    raise _fail(ctx, f"the {'compiled' if jit else 'eager'} training step "
                                     f"failed: {type(exc).__name__}: {exc}. A layer must "
                                     f"read no value back to the host (float(), bool(), "
                                     f"if on an array) and take its randomness from "
                                     f"noise") from None
            results.append([(n, ctx.host(p.value)) for n, p in
                            model.named_parameters() + model.named_buffers()])
    tol = 1e-9 if dt == "float64" else 1e-4
    for (name, want), (_, got) in zip(*results, strict=True):
        _close(ctx, got, want, f"{name} after three compiled training steps vs three eager "
               f"ones (the forward pass must use only its inputs, parameters and noise)", tol)


def _seeds(ctx: _Ctx) -> None:
    ref = get_backend("numpy")
    dt = ctx.dtypes()[-1]
    outputs = []
    for b in (ref, ctx.b):
        other = _Ctx(ctx.factory, b, ctx.params, ctx.inputs, ctx.label, ctx.tol)
        layer = other.build(dt)
        X = other.model_input(other.x(layer), dt)
        outputs.append(other.host(Sequential([layer]).eval()(X)))
    _close(ctx, outputs[1], outputs[0], f"built with the same seed, the output on {ctx.b.name} "
           f"differs from NumPy's (seed every random choice through the backend's rng)",
           1e-9 if dt == "float64" else 1e-4)


_CHECKS: dict[str, Callable[[_Ctx], None]] = {
    "gradient": _gradient, "dtypes": _dtypes, "purity": _purity, "modes": _modes,
    "state": _state, "compiled": _compiled, "seeds": _seeds}


def check_layer(layer: Any, backend: Backend | str | None = None, *,
                params: Mapping[str, Any] | None = None,
                inputs: Callable[[Any], Any] | None = None,
                checks: Sequence[str] = LAYER_CHECKS, tol: float = 1e-6) -> None:
    """Run the layer checks (``LAYER_CHECKS``, see the module) on ``backend`` (default:
    every usable backend); raise ``AssertionError`` naming the layer, backend and check.

    A check that needs what the backend lacks (float64 on JAX without 64-bit mode) is
    skipped with a :class:`UserWarning` saying so (``pytest.skip`` under the marker).
    """
    unknown = sorted(set(checks) - set(LAYER_CHECKS))
    if unknown:
        raise ValueError(f"Unknown check(s) {', '.join(unknown)}; the layer checks are "
                         f"{', '.join(LAYER_CHECKS)}.")
    factory = layer_class(layer) if isinstance(layer, str) else layer
    if factory is None:
        raise ValueError(f"Unknown layer type {layer!r}: no installed plugin registers it")
    name = getattr(factory, "__name__", type(factory).__name__)
    for b in _backends(backend, True):
        for check in checks:
            run_layer_check(factory, b, check, params or {}, inputs, tol, name)


def run_layer_check(factory: Callable[..., Any], b: Backend, check: str,
                    params: Mapping[str, Any], inputs: Callable[[Any], Any] | None,
                    tol: float, name: str, *, skip: Callable[[str], Any] | None = None) -> None:
    """One check; a :class:`SkippedCheck` becomes a warning, or ``skip(reason)``
    (``pytest.skip`` under the marker)."""
    ctx = _Ctx(factory, b, params, inputs, f"[layer {name} on {b.name}] {check}", tol)
    try:
        _CHECKS[check](ctx)
    except SkippedCheck as why:
        if skip is not None:
            skip(str(why))
        warnings.warn(str(why), UserWarning, stacklevel=3)


@dataclass(frozen=True)
class LayerCase:
    """One layer check on one backend: what a ``mlcore_layer_case`` test runs."""

    factory: Callable[..., Any]
    backend: str
    check: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Callable[[Any], Any] | None = None
    tol: float = 1e-6

    def run(self) -> None:
        import pytest

        run_layer_check(self.factory, get_backend(self.backend), self.check, self.params,
                        self.inputs, self.tol, _label(self.factory), skip=pytest.skip)

    def __str__(self) -> str:
        return f"layer:{_label(self.factory)}-{self.backend}-{self.check}"


def _label(factory: object) -> str:
    return str(getattr(factory, "__name__", type(factory).__name__))


def layer_params(factory: Any, *, params: Mapping[str, Any] | None = None,
                 inputs: Callable[[Any], Any] | None = None,
                 checks: Sequence[str] = LAYER_CHECKS, tol: float = 1e-6,
                 backends: Sequence[tuple[str, str]] = ()) -> list[Any]:
    """``pytest.param(LayerCase)`` for every (usable backend, check); ``backends`` are
    ``(name, reason it is unusable or "")`` pairs."""
    import pytest

    factory = layer_class(factory) if isinstance(factory, str) else factory
    out = []
    for name, reason in backends:
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        for check in checks:
            case = LayerCase(factory, name, check, dict(params or {}), inputs, tol)
            out.append(pytest.param(case, id=str(case), marks=marks))
    return out
