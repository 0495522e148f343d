"""The conformance checks themselves (run through :mod:`mlcore.testing`).

Each check takes a :class:`~mlcore.testing.case.Context` (the case, the backend, and NumPy
as the host oracle) and raises ``AssertionError`` saying what is wrong, what was expected
and how to fix it. :func:`run` runs one check and labels its failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..backend import Backend, optional_members
from ..hookspecs import ActivationFn, LossFn
from .case import Case, takes
from .case import Context as _Ctx

__all__ = ["CHECK_FUNCS", "run", "require"]


def require(condition: bool, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` (survives ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def _same_array(ctx: _Ctx, out: Any, like: Any, what: str, shape: tuple[int, ...]) -> None:
    """``out`` is an array of ``like``'s backend, device and dtype, of ``shape``."""
    from array_api_compat import device

    require(ctx.b.owns(out), f"{what} is {type(out).__module__}.{type(out).__name__}, "
            f"expected a {ctx.b.name} array: compute with xp = array_namespace(x), never a "
            f"fixed library")
    require(device(out) == device(like), f"{what} is on {device(out)}, input on {device(like)}")
    require(out.dtype == like.dtype, f"{what} has dtype {dtname(out.dtype)} for "
            f"{dtname(like.dtype)} input; keep the input's dtype (use Python scalars, not "
            f"arrays made without dtype=)")
    require(tuple(out.shape) == shape, f"{what} has shape {tuple(out.shape)}, expected {shape}")


def _relative(ctx: _Ctx, got: Any, want: Any, tol: float, dt: Any, what: str) -> None:
    """Element by element ``|got - want| <= tol |want| + floor`` where ``want`` is finite;
    ``floor`` is the square root of the dtype's smallest normal (1.1e-19 in float32), so
    values that underflow towards 0 compare absolutely."""
    np = ctx.np
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    require(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}")
    err = np.abs(got - want)
    floor = float(ctx.xp.finfo(dt).smallest_normal) ** 0.5
    bad = np.isfinite(want) & ~(err <= tol * np.abs(want) + floor)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    rel = float(err.flat[i] / max(abs(float(want.flat[i])), 1e-300))
    raise AssertionError(
        f"{what}: relative error {rel:.3g} (tolerance {tol:g}); got {float(got.flat[i])!r}, "
        f"expected {float(want.flat[i])!r}. The formula loses precision at this magnitude "
        f"(cancellation?): rewrite it (log1p, expm1, a series near 0), or narrow "
        f"Case(magnitudes=...) and say why in your docs")


def _magnitudes(ctx: _Ctx, forward: Callable[..., Any], reference: Callable[..., Any],
                data: tuple[Any, ...], label: str) -> None:
    """The relative-precision part of ``reference``: the free default inputs scaled to tiny
    and huge magnitudes (``Case.magnitudes``); integer arrays are kept."""
    if not ctx.free_inputs():
        return
    np = ctx.np
    for scale in ctx.case.magnitudes:
        scaled = [a * scale if np.asarray(a).dtype.kind == "f" else a for a in data]
        for dt, tol in ctx.tolerances():
            arrays = [ctx.arr(a, dt) for a in scaled]
            hosts = [ctx.host(a) if np.asarray(s).dtype.kind == "f" else np.asarray(s)
                     for a, s in zip(arrays, scaled, strict=True)]
            with np.errstate(all="ignore"):
                want = reference(*hosts, **ctx.case.params)
            _relative(ctx, ctx.host(forward(*arrays)), want, tol, dt,
                      f"{label}({dtname(dt)}) vs reference at inputs x {scale:g}")


def _close(ctx: _Ctx, got: Any, want: Any, tol: float, what: str) -> None:
    np = ctx.np
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    require(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}")
    err = np.abs(got - want)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    if np.all(err <= tol * (scale + np.abs(want))):
        return
    worst = int(np.argmax(err))
    raise AssertionError(
        f"{what}: max abs error {float(err.flat[worst]):.3g} (tolerance {tol:g}, relative); "
        f"at flat index {worst} got {float(got.flat[worst])!r}, expected "
        f"{float(want.flat[worst])!r}")


# -- activation checks ------------------------------------------------------------------------
def _act_contract(ctx: _Ctx) -> None:
    obj = ctx.case.build()
    require(isinstance(obj, ActivationFn),
            f"the factory returned {obj!r}, which lacks forward(x) and backward(x, y, dy)")
    _rejects_unknown(ctx.case)


def _rejects_unknown(case: Case) -> None:
    if getattr(case.factory, "mlcore_prebuilt", False):
        return  # an object built by the caller: no parameters to pass
    try:
        case.build(mlcore_no_such_parameter=1)
    except TypeError:
        return
    raise AssertionError("an unknown keyword parameter was accepted silently; declare "
                         "parameters as keyword-only __init__ arguments, without **kwargs")


def _act_dtypes(ctx: _Ctx) -> None:
    obj, x0 = ctx.case.build(), ctx.data()
    for dt in ctx.dtypes():
        x, dy = ctx.arr(x0, dt), ctx.arr(ctx.np.ones_like(x0), dt)
        before = ctx.host(x)
        y = obj.forward(x)
        _same_array(ctx, y, x, f"forward({dtname(dt)})", tuple(x.shape))
        _same_array(ctx, obj.backward(x, y, dy), x, f"backward({dtname(dt)})", tuple(x.shape))
        _close(ctx, ctx.host(x), before, 0.0, "x after forward and backward (inputs must "
               "not be modified in place)")


def _act_gradient(ctx: _Ctx) -> None:
    f64 = ctx.float64()
    np, obj = ctx.np, ctx.case.build()
    x0 = np.asarray(ctx.data(), dtype=np.float64)
    w = np.random.default_rng(7).normal(size=x0.shape)

    def total(xh: Any) -> float:
        return float(np.sum(ctx.host(obj.forward(ctx.arr(xh, f64))) * w))

    x = ctx.arr(x0, f64)
    analytic = ctx.host(obj.backward(x, obj.forward(x), ctx.arr(w, f64)))
    _close(ctx, analytic, _numeric_grad(np, total, x0), ctx.case.grad_tol,
           "backward vs central finite differences (float64)")


def _numeric_grad(np: Any, f: Callable[[Any], float], x0: Any) -> Any:
    grad = np.zeros_like(x0)
    for i in range(x0.size):
        h = 1e-6 * max(1.0, abs(float(x0.flat[i])))
        up, down = x0.copy(), x0.copy()
        up.flat[i] += h
        down.flat[i] -= h
        grad.flat[i] = (f(up) - f(down)) / (2 * h)
    return grad


def _act_extremes(ctx: _Ctx) -> None:
    obj, x0 = ctx.case.build(), ctx.data(extreme=True)
    for dt in ctx.dtypes():
        x = ctx.arr(x0, dt)
        y = obj.forward(x)
        g = obj.backward(x, y, ctx.arr(ctx.np.ones_like(x0), dt))
        _finite(ctx, y, f"forward({dtname(dt)})", x0)
        _finite(ctx, g, f"backward({dtname(dt)})", x0)


def dtname(dt: Any) -> str:
    """``float32`` for numpy.float32, array_api_strict.float32, torch.float32, ..."""
    return str(dt).split(".")[-1].strip("'>")


def _finite(ctx: _Ctx, out: Any, what: str, x0: Any) -> None:
    host = ctx.host(out)
    bad = ~ctx.np.isfinite(host)
    if bad.any():
        x0 = ctx.np.asarray(x0, dtype=float)
        where = (f"at x = {x0[bad][:4]}" if x0.shape == host.shape else
                 f"for inputs from {x0.min():g} to {x0.max():g}")
        raise AssertionError(
            f"{what} gives {host[bad][:4]} (NaN or infinity) {where}; use a stable formula "
            f"(exp of -|x|, log1p, clip before exp), or declare the input domain with "
            f"Case(extremes=...) if these inputs are invalid")


def _act_reference(ctx: _Ctx) -> None:
    reference = ctx.case.reference
    if reference is None:
        return
    obj, x0 = ctx.case.build(), ctx.data()
    for dt, tol in ctx.tolerances():
        x = ctx.arr(x0, dt)
        want = reference(ctx.host(x), **ctx.case.params)
        _close(ctx, ctx.host(obj.forward(x)), want, tol, f"forward({dtname(dt)}) vs reference")
    _magnitudes(ctx, obj.forward, reference, (x0,), "forward")


# -- loss checks ------------------------------------------------------------------------------
def _reductions(case: Case) -> list[str | None]:
    if "reduction" in case.params or not takes(case._factory(), "reduction"):
        return [None]
    return ["mean", "sum", "none"]


def _built(case: Case, reduction: str | None) -> Any:
    return case.build() if reduction is None else case.build(reduction=reduction)


def _loss_value_shape(obj: Any, pred: Any) -> tuple[int, ...]:
    return (int(pred.shape[0]),) if getattr(obj, "reduction", None) == "none" else ()


def _loss_contract(ctx: _Ctx) -> None:
    obj = ctx.case.build()
    require(isinstance(obj, LossFn), f"the factory returned {obj!r}, which lacks "
            f"forward(pred, target) and backward(pred, target)")
    if getattr(ctx.case.factory, "mlcore_prebuilt", False):
        require(getattr(obj, "reduction", None) in ("mean", "sum", "none"),
                f"{obj!r} has no reduction attribute ('mean', 'sum' or 'none'); a loss takes "
                f"reduction= (docs/plugins.md section 5; mlcore.plugin.LossBase)")
    else:
        require(takes(ctx.case._factory(), "reduction"),
                "the factory takes no reduction parameter; a loss takes reduction='mean' "
                "(the default), 'sum' or 'none' (docs/plugins.md section 5), so that the kit "
                "can prove its mean is a mean: build it on mlcore.plugin.LossBase and pass "
                "reduction to super().__init__")
    _rejects_unknown(ctx.case)


def _loss_dtypes(ctx: _Ctx) -> None:
    pred0, target0 = ctx.data()
    for reduction in _reductions(ctx.case):
        obj = _built(ctx.case, reduction)
        for dt in ctx.dtypes():
            pred, target = ctx.arr(pred0, dt), ctx.arr(target0, dt)
            before = ctx.host(pred), ctx.host(target)
            where = f"reduction={reduction!r}, {dtname(dt)}"
            value = obj.forward(pred, target)
            _same_array(ctx, value, pred, f"forward ({where})", _loss_value_shape(obj, pred))
            grad = obj.backward(pred, target)
            _same_array(ctx, grad, pred, f"backward ({where})", tuple(pred.shape))
            for arr, old, label in zip((pred, target), before, ("pred", "target"), strict=True):
                _close(ctx, ctx.host(arr), old, 0.0, f"{label} after forward and backward "
                       f"(inputs must not be modified in place)")


def _loss_reductions(ctx: _Ctx) -> None:
    np, f64 = ctx.np, ctx.float64()
    pred, target = (ctx.arr(a, f64) for a in ctx.data())
    out = {r: _built(ctx.case, r) for r in ("none", "sum", "mean")}
    values = ctx.host(out["none"].forward(pred, target))
    grad = ctx.host(out["none"].backward(pred, target))
    n = int(pred.shape[0])
    require(values.shape == (n,), f"reduction='none' gives shape {values.shape}; it must give "
            f"the ({n},) per-sample values (reduction is ignored?)")
    _close(ctx, ctx.host(out["sum"].forward(pred, target)), np.sum(values), 1e-12,
           "'sum' vs the sum of the 'none' values")
    _close(ctx, ctx.host(out["mean"].forward(pred, target)), np.mean(values), 1e-12,
           "'mean' vs the mean of the 'none' per-sample values")
    _close(ctx, ctx.host(out["sum"].backward(pred, target)), grad, 1e-12,
           "'sum' gradient vs the 'none' gradient (of the sum)")
    _close(ctx, ctx.host(out["mean"].backward(pred, target)), grad / n, 1e-12,
           "'mean' gradient vs the 'none' gradient / N")


def _loss_gradient(ctx: _Ctx) -> None:
    np, f64 = ctx.np, ctx.float64()
    pred0, target0 = ctx.data()
    pred0 = np.asarray(pred0, dtype=np.float64)
    target = ctx.arr(target0, f64)
    for reduction in _reductions(ctx.case):
        obj = _built(ctx.case, reduction)

        def total(ph: Any, obj: Any = obj) -> float:
            return float(np.sum(ctx.host(obj.forward(ctx.arr(ph, f64), target))))

        analytic = ctx.host(obj.backward(ctx.arr(pred0, f64), target))
        _close(ctx, analytic, _numeric_grad(np, total, pred0), ctx.case.grad_tol,
               f"backward vs central finite differences (float64, reduction={reduction!r})")


def _loss_extremes(ctx: _Ctx) -> None:
    pred0, target0 = ctx.data(extreme=True)
    for reduction in _reductions(ctx.case):
        obj = _built(ctx.case, reduction)
        for dt in ctx.dtypes():
            pred, target = ctx.arr(pred0, dt), ctx.arr(target0, dt)
            where = f"reduction={reduction!r}, {dtname(dt)}"
            _finite(ctx, obj.forward(pred, target), f"forward ({where})", pred0)
            _finite(ctx, obj.backward(pred, target), f"backward ({where})", pred0)


def _loss_shapes(ctx: _Ctx) -> None:
    pred0, target0 = ctx.data()
    obj = ctx.case.build()
    pred = ctx.arr(pred0, ctx.widest())
    for bad in _mismatched(ctx.np, target0):
        target = ctx.arr(bad, ctx.widest())
        for method in ("forward", "backward"):
            _raises_value_error(getattr(obj, method), pred, target, method,
                                _shape_errors(ctx.b))


def _mismatched(np: Any, target: Any) -> Iterator[Any]:
    target = np.asarray(target)
    yield target[1:]  # one sample fewer
    if target.shape[0] > 2:
        yield target[:1]  # one sample: would broadcast silently


def _shape_errors(backend: Any) -> tuple[type[BaseException], ...]:
    """ValueError, and what the backend's library raises for mismatched shapes (the optional
    Backend member ``shape_errors``: torch raises RuntimeError)."""
    return (ValueError, *optional_members(backend).shape_errors)


def _raises_value_error(method: Callable[..., Any], pred: Any, target: Any, what: str,
                        accepted: tuple[type[BaseException], ...] = (ValueError,)) -> None:
    shapes = f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
    try:
        method(pred, target)
    except accepted as exc:
        require(bool(str(exc).strip()), f"{what} raised {type(exc).__name__} without a message")
        return
    except Exception as exc:  # noqa: BLE001 - reported as the failure
        raise AssertionError(
            f"{what} with {shapes} raised {type(exc).__name__}: {exc}; expected "
            f"mlcore.ShapeError (a ValueError) naming both shapes") from None
    raise AssertionError(f"{what} accepted {shapes} silently; raise mlcore.ShapeError "
                         f"(a ValueError) naming both shapes")


def _loss_reference(ctx: _Ctx) -> None:
    reference = ctx.case.reference
    if reference is None:
        return
    pred0, target0 = ctx.data()
    reduction = None if _reductions(ctx.case) == [None] else "none"
    obj = _built(ctx.case, reduction)
    for dt, tol in ctx.tolerances():
        pred, target = ctx.arr(pred0, dt), ctx.arr(target0, dt)
        host_target = ctx.np.asarray(ctx.b.to_numpy(target))
        host_target = host_target.astype(float) if host_target.dtype.kind == "f" else host_target
        want = reference(ctx.host(pred), host_target, **ctx.case.params)
        got = ctx.host(obj.forward(pred, target))
        require(got.shape == ctx.np.shape(want), _reduction_hint(got, want, reduction))
        _close(ctx, got, want, tol, f"forward({dtname(dt)}, reduction={reduction!r}) vs "
               f"reference")
    _magnitudes(ctx, obj.forward, reference, (pred0, target0),
                f"forward(reduction={reduction!r})")


def _reduction_hint(got: Any, want: Any, reduction: str | None) -> str:
    if reduction == "none":
        how = ("the loss is built with reduction='none', so reference must return the "
               "per-sample values, shape (N,)")
    else:
        how = ("the loss is compared as built (params set a reduction, or it has no "
               "reduction parameter), so reference must return what forward returns")
    shape = tuple(getattr(want, "shape", ()))
    return f"reference: forward gives shape {got.shape}, reference {shape}: {how}"


CHECK_FUNCS: dict[str, dict[str, Callable[[_Ctx], None]]] = {
    "activation": {"contract": _act_contract, "dtypes": _act_dtypes,
                   "gradient": _act_gradient, "extremes": _act_extremes,
                   "reference": _act_reference},
    "loss": {"contract": _loss_contract, "dtypes": _loss_dtypes,
             "reductions": _loss_reductions, "gradient": _loss_gradient,
             "extremes": _loss_extremes, "shapes": _loss_shapes, "reference": _loss_reference},
}


def run(case: Case, b: Backend, check: str) -> None:
    ctx = _Ctx(case, b)
    try:
        CHECK_FUNCS[case.kind][check](ctx)
    except AssertionError as exc:
        raise AssertionError(f"[{case.kind} {case.label} on {b.name}] {check}: {exc}") from None
