"""Built-in losses: values against float64 formulas written here, gradients against central
finite differences and PyTorch autograd, extreme inputs, errors and properties, on every
backend (the ``backend`` fixture)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlcore
from mlcore.errors import (
    BackendMismatchError,
    DeviceMismatchError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    ShapeError,
    UnknownNameError,
)

N, M = 5, 4
REDUCTIONS = ["mean", "sum", "none"]
DTYPES = ["float32", "float64"]
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- data and float64 oracles (per-sample values, written independently) -----------------
def _probs(rng: np.random.Generator, n: int = N, m: int = M) -> np.ndarray:
    p = rng.random((n, m)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _smooth(t: np.ndarray, s: float) -> np.ndarray:
    dense = np.eye(M)[t] if t.ndim == 1 else t
    return dense * (1 - s) + s / M


def _bce(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (-(t * np.log(p) + (1 - t) * np.log(1 - p))).mean(axis=1)


@dataclass
class Case:
    """One loss configuration: data, a float64 oracle and a PyTorch per-sample function."""

    id: str
    name: str
    params: dict[str, Any]
    data: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
    oracle: Callable[[np.ndarray, np.ndarray], np.ndarray]
    torch: Callable[[Any, Any, Any], Any] = field(repr=False)


def _regression(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(N, 3)), rng.normal(size=(N, 3))


def _bce_probs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.05, 0.95, (N, 3)), rng.random((N, 3))


def _bce_logits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 3, (N, 3)), rng.random((N, 3))


def _labels_logits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 2, (N, M)), rng.integers(0, M, N)


def _dist_logits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 2, (N, M)), _probs(rng)


def _labels_probs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _probs(rng), rng.integers(0, M, N)


def _dist_probs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _probs(rng), _probs(rng)


def _dist_probs_with_zeros(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = _probs(rng)
    t[:, 0] = 0.0
    return _probs(rng), t / t.sum(axis=1, keepdims=True)


def _f() -> Any:
    return pytest.importorskip("torch").nn.functional


def _xlogx(t: np.ndarray) -> np.ndarray:
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)


CASES = [
    Case("mse", "mse", {}, _regression, lambda p, t: ((p - t) ** 2).mean(axis=1),
         lambda a, t, torch: _f().mse_loss(a, t, reduction="none").mean(1)),
    Case("mae", "mae", {}, _regression, lambda p, t: np.abs(p - t).mean(axis=1),
         lambda a, t, torch: _f().l1_loss(a, t, reduction="none").mean(1)),
    Case("bce", "binary_cross_entropy", {}, _bce_probs, _bce,
         lambda a, t, torch: _f().binary_cross_entropy(a, t, reduction="none").mean(1)),
    Case("bce-logits", "binary_cross_entropy", {"from_logits": True}, _bce_logits,
         lambda z, t: _bce(1 / (1 + np.exp(-z)), t),
         lambda a, t, torch: _f().binary_cross_entropy_with_logits(a, t, reduction="none")
         .mean(1)),
    Case("ce-logits-labels", "cross_entropy", {"from_logits": True}, _labels_logits,
         lambda z, t: -_log_softmax(z)[np.arange(N), t],
         lambda a, t, torch: _f().cross_entropy(a, t, reduction="none")),
    Case("ce-logits-labels-smooth", "cross_entropy",
         {"from_logits": True, "label_smoothing": 0.1}, _labels_logits,
         lambda z, t: -(_smooth(t, 0.1) * _log_softmax(z)).sum(axis=1),
         lambda a, t, torch: _f().cross_entropy(a, t, reduction="none", label_smoothing=0.1)),
    Case("ce-logits-probs", "cross_entropy", {"from_logits": True}, _dist_logits,
         lambda z, t: -(t * _log_softmax(z)).sum(axis=1),
         lambda a, t, torch: _f().cross_entropy(a, t, reduction="none")),
    Case("ce-logits-probs-smooth", "cross_entropy",
         {"from_logits": True, "label_smoothing": 0.2}, _dist_logits,
         lambda z, t: -(_smooth(t, 0.2) * _log_softmax(z)).sum(axis=1),
         lambda a, t, torch: _f().cross_entropy(a, t, reduction="none", label_smoothing=0.2)),
    Case("ce-labels", "cross_entropy", {}, _labels_probs,
         lambda p, t: -np.log(p[np.arange(N), t]),
         lambda a, t, torch: _f().nll_loss(torch.log(a), t, reduction="none")),
    # with probability predictions torch has no cross-entropy of its own: the gradient of
    # KL(t || p) + H(t) equals that of -sum t log p, so kl_div stands in for it
    Case("ce-probs-smooth", "cross_entropy", {"label_smoothing": 0.1}, _dist_probs,
         lambda p, t: -(_smooth(t, 0.1) * np.log(p)).sum(axis=1),
         lambda a, t, torch: _f().kl_div(torch.log(a), _smooth_t(t, 0.1), reduction="none")
         .sum(1) - (_smooth_t(t, 0.1) * torch.log(_smooth_t(t, 0.1))).sum(1)),
    Case("kl", "kl_divergence", {}, _dist_probs,
         lambda p, t: (t * np.log(t / p)).sum(axis=1),
         lambda a, t, torch: _f().kl_div(torch.log(a), t, reduction="none").sum(1)),
    Case("kl-zero-targets", "kl_divergence", {}, _dist_probs_with_zeros,
         lambda p, t: (_xlogx(t) - t * np.log(p)).sum(axis=1),
         lambda a, t, torch: _f().kl_div(torch.log(a), t, reduction="none").sum(1)),
]


def _smooth_t(t: Any, s: float) -> Any:
    return t * (1 - s) + s / t.shape[1]


def _reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


def _arrays(backend: Any, case: Case, dtype: str, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    pred, target = case.data(np.random.default_rng(seed))
    xp = backend.xp
    tdtype = None if target.dtype.kind == "i" else getattr(xp, dtype)
    return (pred, target, backend.asarray(pred, dtype=getattr(xp, dtype)),
            backend.asarray(target, dtype=tdtype))


def _value(backend: Any, fn: Any, pred: np.ndarray, target: Any) -> np.ndarray:
    v = fn.forward(backend.asarray(pred), target)
    return np.asarray(backend.to_numpy(v), dtype=np.float64)


def _numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> Any:
    """Central finite differences of the scalar ``f`` with respect to each element of x."""
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


ids = [c.id for c in CASES]


# -- registry and construction -------------------------------------------------------------
def test_builtins_registered() -> None:
    names = {"mse", "mae", "binary_cross_entropy", "cross_entropy", "kl_divergence"}
    assert names <= set(mlcore.loss_names())


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_satisfies_protocol_and_repr(case: Case) -> None:
    fn = mlcore.loss(case.name, **case.params)
    assert isinstance(fn, mlcore.LossFn)
    assert repr(fn).startswith(f"loss({case.name!r}, reduction='mean'")


# -- values against the float64 oracle -----------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward_matches_formula(backend: Any, case: Case, dtype: str, reduction: str) -> None:
    pred, target, p, t = _arrays(backend, case, dtype)
    v = mlcore.loss(case.name, reduction=reduction, **case.params).forward(p, t)
    assert backend.owns(v) and v.dtype == p.dtype
    assert tuple(v.shape) == ((N,) if reduction == "none" else ())
    tol = 2e-6 if dtype == "float32" else 1e-12
    expect = _reduce(case.oracle(pred, target), reduction)
    np.testing.assert_allclose(backend.to_numpy(v), expect, rtol=tol, atol=tol)


def test_one_dimensional_pred_is_one_value_per_sample(backend: Any) -> None:
    p, t = np.array([0.2, 0.9, 0.5]), np.array([0.0, 1.0, 1.0])
    v = mlcore.loss("binary_cross_entropy", reduction="none").forward(
        backend.asarray(p), backend.asarray(t))
    np.testing.assert_allclose(backend.to_numpy(v), -np.log([0.8, 0.9, 0.5]), rtol=1e-12)


# -- gradients against finite differences --------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_backward_matches_finite_differences(backend: Any, case: Case, reduction: str) -> None:
    pred, _, p, t = _arrays(backend, case, "float64", seed=1)
    fn = mlcore.loss(case.name, reduction=reduction, **case.params)
    grad = fn.backward(p, t)
    assert backend.owns(grad) and grad.dtype == p.dtype and tuple(grad.shape) == pred.shape
    expect = _numeric_grad(lambda x: float(_value(backend, fn, x, t).sum()), pred)
    np.testing.assert_allclose(backend.to_numpy(grad), expect, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_value_and_grad_equals_forward_and_backward(backend: Any, case: Case,
                                                   reduction: str) -> None:
    _, _, p, t = _arrays(backend, case, "float32", seed=2)
    fn = mlcore.loss(case.name, reduction=reduction, **case.params)
    value, grad = fn.value_and_grad(p, t)
    np.testing.assert_allclose(backend.to_numpy(value), backend.to_numpy(fn.forward(p, t)),
                               rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(grad), backend.to_numpy(fn.backward(p, t)),
                               rtol=1e-6, atol=1e-7)


# -- PyTorch -------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_matches_pytorch(backend: Any, case: Case, dtype: str, reduction: str) -> None:
    torch = pytest.importorskip("torch")
    pred, target, p, t = _arrays(backend, case, dtype, seed=3)
    a = torch.tensor(pred, dtype=getattr(torch, dtype), requires_grad=True)
    tt = torch.tensor(target) if target.dtype.kind == "i" else torch.tensor(target, dtype=a.dtype)
    per_sample = case.torch(a, tt, torch)
    expect = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    expect.sum().backward()
    fn = mlcore.loss(case.name, reduction=reduction, **case.params)
    tol = 5e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(fn.forward(p, t)), expect.detach().numpy(),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(fn.backward(p, t)), a.grad.numpy(),
                               rtol=tol, atol=tol)


def test_torch_defaults_agree_for_mean(backend: Any) -> None:
    """Our default reduction is torch's default for every loss with a torch counterpart."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    rng = np.random.default_rng(4)
    pred, target = rng.uniform(0.05, 0.95, (N, 3)), rng.random((N, 3))
    pairs = {"mse": f.mse_loss, "mae": f.l1_loss, "binary_cross_entropy": f.binary_cross_entropy}
    for name, ref in pairs.items():
        ours = mlcore.loss(name).forward(backend.asarray(pred), backend.asarray(target))
        theirs = ref(torch.tensor(pred), torch.tensor(target)).item()
        np.testing.assert_allclose(float(backend.to_numpy(ours)), theirs, rtol=1e-12)
    p, q = _probs(rng), _probs(rng)
    ours = mlcore.loss("kl_divergence").forward(backend.asarray(p), backend.asarray(q))
    theirs = f.kl_div(torch.log(torch.tensor(p)), torch.tensor(q), reduction="batchmean")
    np.testing.assert_allclose(float(backend.to_numpy(ours)), theirs.item(), rtol=1e-12)


# -- extreme inputs ------------------------------------------------------------------------
def _finite(backend: Any, name: str, params: dict[str, Any], pred: Any, target: Any) -> Any:
    fn = mlcore.loss(name, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow or divide warnings fail the test
        value, grad = fn.forward(pred, target), fn.backward(pred, target)
    v, g = backend.to_numpy(value), backend.to_numpy(grad)
    assert np.isfinite(v).all() and np.isfinite(g).all(), (v, g)
    return v, g


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_logits_extremes(backend: Any, dtype: str) -> None:
    xp = backend.xp
    z = backend.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]],
                        dtype=getattr(xp, dtype))
    labels = backend.asarray(np.array([1, 0, 2]))
    v, g = _finite(backend, "cross_entropy", {"from_logits": True}, z, labels)
    # sample 0: -log softmax = 2e4; sample 1: log 3; sample 2: 2e4 + log 2
    np.testing.assert_allclose(v, (2e4 + np.log(3) + 2e4 + np.log(2)) / 3, rtol=1e-6)
    np.testing.assert_allclose(g[0], np.array([1.0, -1.0, 0.0]) / 3, atol=1e-7)
    onehot = backend.asarray(np.eye(3)[[1, 0, 2]], dtype=getattr(xp, dtype))
    _finite(backend, "cross_entropy", {"from_logits": True, "label_smoothing": 0.1}, z, onehot)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_logits_extremes(backend: Any, dtype: str) -> None:
    z = backend.asarray([1e4, -1e4, 1e4, -1e4, 0.0], dtype=getattr(backend.xp, dtype))
    y = backend.asarray([1.0, 0.0, 0.0, 1.0, 1.0], dtype=getattr(backend.xp, dtype))
    v, g = _finite(backend, "binary_cross_entropy", {"from_logits": True, "reduction": "none"},
                   z, y)
    np.testing.assert_allclose(v, [0.0, 0.0, 1e4, 1e4, np.log(2)], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(g, [0.0, 0.0, 1.0, -1.0, -0.5], atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_exactly_zero_and_one(backend: Any, dtype: str) -> None:
    xp = backend.xp
    eps = float(np.finfo(dtype).eps)
    p = backend.asarray([0.0, 1.0, 0.0, 1.0], dtype=getattr(xp, dtype))
    y = backend.asarray([0.0, 1.0, 1.0, 0.0], dtype=getattr(xp, dtype))
    v, _ = _finite(backend, "binary_cross_entropy", {"reduction": "none"}, p, y)
    np.testing.assert_allclose(v, [eps, eps, -np.log(eps), -np.log(eps)], rtol=1e-3)
    pm = backend.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=getattr(xp, dtype))
    labels = backend.asarray(np.array([0, 2]))
    v, _ = _finite(backend, "cross_entropy", {"reduction": "none"}, pm, labels)
    np.testing.assert_allclose(v, [0.0, -np.log(eps)], rtol=1e-6)
    _finite(backend, "kl_divergence", {}, pm, pm)


def test_eps_parameter_sets_the_clip(backend: Any) -> None:
    p, y = backend.asarray([0.0]), backend.asarray([1.0])
    v = mlcore.loss("binary_cross_entropy", eps=1e-7).forward(p, y)
    np.testing.assert_allclose(float(backend.to_numpy(v)), -np.log(1e-7), rtol=1e-12)


def test_float32_pred_with_float64_target_stays_float32(backend: Any) -> None:
    xp = backend.xp
    p = backend.asarray(np.full((2, 3), 0.5), dtype=xp.float32)
    t = backend.asarray(np.full((2, 3), 0.25), dtype=xp.float64)
    for name in ("mse", "mae", "binary_cross_entropy"):
        fn = mlcore.loss(name)
        assert fn.forward(p, t).dtype == fn.backward(p, t).dtype == xp.float32


# -- errors --------------------------------------------------------------------------------
def _np(backend: Any, *arrays: Any) -> list[Any]:
    return [backend.asarray(np.asarray(a)) for a in arrays]


@pytest.mark.parametrize("name", ["mse", "mae", "binary_cross_entropy", "kl_divergence"])
def test_shape_mismatch_names_both(backend: Any, name: str) -> None:
    p, t = _np(backend, np.full((3, 2), 0.5), np.full((3, 3), 1 / 3))
    with pytest.raises(ShapeError, match=r"pred and target .* pred \(3, 2\) and target \(3, 3\)"):
        mlcore.loss(name).forward(p, t)


def test_cross_entropy_shape_errors(backend: Any) -> None:
    fn = mlcore.loss("cross_entropy", from_logits=True)
    p, labels, onehot = _np(backend, np.zeros((3, 4)), np.array([0, 1]), np.eye(3))
    with pytest.raises(ShapeError, match=r"pred has 3 samples but target has 2 labels"):
        fn.forward(p, labels)
    with pytest.raises(ShapeError, match=r"pred \(3, 4\) and target \(3, 3\)"):
        fn.forward(p, onehot)
    with pytest.raises(ShapeError, match=r"expected pred of shape \(N, M\)"):
        fn.forward(backend.asarray(np.zeros(4)), labels)
    with pytest.raises(ShapeError, match="N >= 1 samples"):
        mlcore.loss("mse").forward(*_np(backend, np.zeros((0, 2)), np.zeros((0, 2))))


@pytest.mark.parametrize("bad", [-1, 4, 7])
def test_class_index_out_of_range(backend: Any, bad: int) -> None:
    p, labels = _np(backend, np.zeros((3, 4)), np.array([0, bad, 1]))
    with pytest.raises(InvalidValueError, match=r"class indices in \[0, 3\].*4 classes"):
        mlcore.loss("cross_entropy", from_logits=True).backward(p, labels)


@pytest.mark.parametrize("name", ["cross_entropy", "kl_divergence"])
@pytest.mark.parametrize("rows", [[[0.5, 0.6], [0.5, 0.5]], [[1.5, -0.5], [0.5, 0.5]]])
def test_target_rows_must_be_distributions(backend: Any, name: str, rows: Any) -> None:
    p, t = _np(backend, np.full((2, 2), 0.5), np.array(rows))
    with pytest.raises(InvalidValueError, match="probability distributions.*Normalise"):
        mlcore.loss(name).forward(p, t)


def test_bce_values_outside_unit_interval(backend: Any) -> None:
    p, t = _np(backend, np.array([0.5, 1.2]), np.array([0.0, 1.0]))
    with pytest.raises(InvalidValueError, match=r"pred \(probabilities\) in \[0, 1\].*logits"):
        mlcore.loss("binary_cross_entropy").forward(p, t)
    with pytest.raises(InvalidValueError, match=r"target in \[0, 1\]"):
        mlcore.loss("binary_cross_entropy", from_logits=True).forward(t, p)


@pytest.mark.parametrize("name", ["mse", "mae", "binary_cross_entropy", "cross_entropy",
                                  "kl_divergence"])
def test_integer_pred_is_a_dtype_error(backend: Any, name: str) -> None:
    p, t = _np(backend, np.ones((2, 2), dtype=np.int64), np.full((2, 2), 0.5))
    with pytest.raises(DTypeError, match="pred must be a floating-point array"):
        mlcore.loss(name).forward(p, t)


def test_integer_targets_where_floats_are_required(backend: Any) -> None:
    p, t = _np(backend, np.full((2, 2), 0.5), np.eye(2, dtype=np.int64))
    for name in ("mse", "binary_cross_entropy", "cross_entropy", "kl_divergence"):
        with pytest.raises(DTypeError, match="target must be a floating-point array"):
            mlcore.loss(name).forward(p, t)
    labels = backend.asarray(np.array([0.0, 1.0]))
    with pytest.raises(DTypeError, match="class indices and must be an integer array"):
        mlcore.loss("cross_entropy").forward(p, labels)


def test_unknown_loss_lists_registered() -> None:
    with pytest.raises(UnknownNameError, match="Registered:.*mse.*Did you mean 'mse'"):
        mlcore.loss("mes")


@pytest.mark.parametrize(("name", "params", "pattern"), [
    ("mse", {"reduction": "avg"}, "reduction must be one of mean, sum, none; received 'avg'"),
    ("cross_entropy", {"reduction": None}, "reduction must be one of"),
    ("mse", {"from_logits": True}, "unknown parameter 'from_logits'"),
    ("cross_entropy", {"logits": True}, "Accepted: reduction, from_logits"),
    ("cross_entropy", {"from_logits": "yes"}, "from_logits must be True or False"),
    ("cross_entropy", {"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
    ("binary_cross_entropy", {"eps": 0.0}, r"eps must be None .* \(0, 0.5\)"),
    ("kl_divergence", {"eps": "small"}, "eps must be None"),
])
def test_bad_parameters(name: str, params: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern):
        mlcore.loss(name, **params)


def test_mixed_backends_name_pred_and_target() -> None:
    p = mlcore.get_backend("numpy").asarray(np.zeros((2, 2)))
    t = mlcore.get_backend("strict").asarray(np.zeros((2, 2)))
    with pytest.raises(BackendMismatchError, match="pred is a numpy array.*target is a strict"):
        mlcore.loss("mse").forward(p, t)


# -- properties ----------------------------------------------------------------------------
@st.composite
def _distributions(draw: Any) -> tuple[np.ndarray, np.ndarray, str]:
    n, m = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    cell = st.floats(0.0, 1.0, allow_subnormal=False)
    raw_p = np.array(draw(st.lists(cell, min_size=n * m, max_size=n * m))).reshape(n, m)
    raw_q = np.array(draw(st.lists(cell, min_size=n * m, max_size=n * m))).reshape(n, m)
    p, q = raw_p + 1e-3, raw_q * draw(st.sampled_from([0.0, 1.0])) + 1e-3  # q may be uniform
    q[:, 0] += draw(st.sampled_from([0.0, 1.0]))
    return p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True), draw(st.sampled_from(DTYPES))


@PROPERTY
@given(d=_distributions())
def test_property_kl_nonnegative_and_zero_iff_equal(backend: Any, d: Any) -> None:
    p, q, dtype = d
    xp = backend.xp
    fn = mlcore.loss("kl_divergence", reduction="none")
    pa, qa = (backend.asarray(a, dtype=getattr(xp, dtype)) for a in (p, q))
    kl = backend.to_numpy(fn.forward(pa, qa)).astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    # Pinsker: KL >= ||q - p||_1^2 / 2, so KL > 0 whenever the rows differ
    l1 = np.abs(q.astype(dtype).astype(float) - p.astype(dtype).astype(float)).sum(axis=1)
    assert (kl >= 0.5 * l1**2 - tol).all()
    assert np.abs(backend.to_numpy(fn.forward(qa, qa))).max() <= tol


@PROPERTY
@given(d=_distributions(), smoothing=st.sampled_from([0.0, 0.1]))
def test_property_cross_entropy_is_kl_plus_entropy(backend: Any, d: Any,
                                                   smoothing: float) -> None:
    p, q, _ = d
    pa, qa = backend.asarray(p), backend.asarray(q)
    ce = mlcore.loss("cross_entropy", reduction="none").forward(pa, qa)
    kl = mlcore.loss("kl_divergence", reduction="none").forward(pa, qa)
    entropy = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)).sum(axis=1)
    np.testing.assert_allclose(backend.to_numpy(ce), backend.to_numpy(kl) + entropy,
                               rtol=1e-10, atol=1e-12)


@PROPERTY
@given(d=_distributions(), case=st.sampled_from(CASES), reduction=st.sampled_from(REDUCTIONS))
def test_property_shape_and_dtype_kept(backend: Any, d: Any, case: Case,
                                       reduction: str) -> None:
    _, _, dtype = d
    _, _, p, t = _arrays(backend, case, dtype)
    fn = mlcore.loss(case.name, reduction=reduction, **case.params)
    v, g = fn.value_and_grad(p, t)
    assert v.dtype == g.dtype == p.dtype and tuple(g.shape) == tuple(p.shape)
    assert tuple(v.shape) == ((p.shape[0],) if reduction == "none" else ())


def test_devices_must_match_naming_pred_and_target() -> None:
    import array_api_strict

    strict = mlcore.get_backend("strict")
    p = strict.asarray(np.zeros((2, 2)))
    t = array_api_strict.asarray(np.zeros((2, 2)), device=array_api_strict.Device("device1"))
    with pytest.raises(DeviceMismatchError, match="pred is on .*CPU_DEVICE.*target is on"):
        mlcore.loss("mse").backward(p, t)


def test_keyword_arguments_are_accepted(backend: Any) -> None:
    p, t = _np(backend, np.array([[0.5, 0.5]]), np.array([[0.0, 1.0]]))
    fn = mlcore.loss("mse")
    assert float(backend.to_numpy(fn.forward(target=t, pred=p))) == 0.25
    assert backend.to_numpy(fn.backward(p, target=t)).tolist() == [[0.5, -0.5]]


def test_calls_run_inside_a_declared_context_manager_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CuPy allocates on its current device: a device its backend declares (enters_device)
    is entered; another context-manager device (torch's) is not."""
    from mlcore.arrays import namespace as _array
    from mlcore.arrays.numerics import on_input_device

    entered: list[str] = []

    class Device:
        def __enter__(self) -> None:
            entered.append("in")

        def __exit__(self, *exc: object) -> None:
            entered.append("out")

    class Fake:
        device = Device()

    class Fn:
        @on_input_device(("pred", "target"))
        def forward(self, pred: Any, target: Any) -> str:
            entered.append("run")
            return "done"

    fake = Fake()
    monkeypatch.setitem(_array._ENTERS, Device, False)
    assert Fn().forward(fake, fake) == "done" and entered == ["run"]
    monkeypatch.setitem(_array._ENTERS, Device, True)
    entered.clear()
    assert Fn().forward(fake, fake) == "done" and entered == ["in", "run", "out"]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_results_stay_on_a_non_default_device(case: Case) -> None:
    import array_api_strict as xs

    dev = xs.Device("device1")
    pred, target = case.data(np.random.default_rng(5))
    p, t = xs.asarray(pred, device=dev), xs.asarray(target, device=dev)
    value, grad = mlcore.loss(case.name, **case.params).value_and_grad(p, t)
    assert value.device == grad.device == dev


def test_cross_entropy_with_labels_without_take_along_axis(backend: Any) -> None:
    """A library lacking take_along_axis (dask) gets the one-hot form: the same values."""
    import types

    xp = backend.xp
    rng = np.random.default_rng(0)
    pred = backend.asarray(rng.dirichlet(np.ones(4), size=5), dtype=xp.float64)
    labels = backend.asarray(rng.integers(0, 4, size=5))
    fn = mlcore.loss("cross_entropy", reduction="none")
    want = backend.to_numpy(fn.forward(pred, labels))
    lacking = types.SimpleNamespace(**{k: getattr(xp, k) for k in dir(xp)
                                       if not k.startswith("__") and k != "take_along_axis"})
    got = backend.to_numpy(fn._weighted(lacking, xp.log(pred), labels))
    np.testing.assert_allclose(-got, want, rtol=1e-12)
