"""mlcore.plugin: the stable helpers against float64 formulas written here, and the bases'
promise that a plugin takes a built-in's path inside a model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore import plugin
from mlcore.errors import InvalidParameterError

X = np.concatenate([np.linspace(-60.0, 60.0, 241), [-1e4, -745.0, 1e-30, 745.0, 1e4]])


def _host(backend: Any, x: Any) -> Any:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def test_sigmoid_and_softplus(backend: Any) -> None:
    xp, x = backend.xp, backend.asarray(X)
    want_sig = np.array([1 / (1 + math.exp(-v)) if v > -700 else math.exp(v) for v in X])
    want_sp = np.array([max(v, 0.0) + math.log1p(math.exp(-abs(v))) for v in X])
    tiny = np.finfo(np.float64).smallest_normal  # below the exp floor: under it anyway
    np.testing.assert_allclose(_host(backend, plugin.sigmoid(xp, x)), want_sig, rtol=1e-15,
                               atol=tiny)
    # atol: below the smallest normal number torch flushes to zero (5e-324 -> 0)
    np.testing.assert_allclose(_host(backend, plugin.softplus(xp, x)), want_sp, rtol=1e-15,
                               atol=tiny)


def test_log1mexp_keeps_precision_in_both_tails(backend: Any) -> None:
    x = -np.geomspace(1e-12, 700.0, 200)
    want = np.array([math.log(-math.expm1(v)) if v > -math.log(2) else math.log1p(-math.exp(v))
                     for v in x])
    got = _host(backend, plugin.log1mexp(backend.xp, backend.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_logsumexp_is_finite_for_large_inputs(backend: Any) -> None:
    z = np.array([[1.0, 2.0, 3.0], [1e4, 1e4, -1e4]])
    want = [math.log(math.exp(1) + math.exp(2) + math.exp(3)), 1e4 + math.log(2.0)]
    got = _host(backend, plugin.logsumexp(backend.xp, backend.asarray(z), axis=1))
    np.testing.assert_allclose(got, want, rtol=1e-15)


class _Cube(plugin.ActivationBase):
    """x^3 written on the base; forward/backward count the checked calls."""

    name = "cube"
    checked = 0

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return x * x * x

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        return dy * (3.0 * x * x)

    def forward(self, x: Any) -> Any:
        _Cube.checked += 1
        return super().forward(x)


def test_a_plugin_activation_takes_the_unchecked_path_inside_a_model(
        backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mlcore.plugins.registry()._entries["activations"], "cube",
                        [mlcore.plugins._Entry(_Cube, mlcore.plugins.registry().records[0])])
    model = mlcore.MLP([3, 4, 2], activation="cube", seed=0, dtype="float64")
    x = backend.asarray(np.linspace(-1, 1, 12).reshape(4, 3))
    y = backend.asarray(np.array([0, 1, 1, 0]))
    before = _Cube.checked
    model.train_step(x, y, "cross_entropy", "sgd")
    assert _Cube.checked == before  # the model called forward_unchecked, never forward
    act = mlcore.activation("cube")
    np.testing.assert_allclose(_host(backend, act.forward(x)), np.linspace(-1, 1, 12)
                               .reshape(4, 3) ** 3, rtol=1e-15)


class _HalfSquares(plugin.ElementwiseLoss):
    name = "half_squares"

    def terms(self, xp: Any, pred: Any, target: Any) -> Any:
        d = pred - target
        return 0.5 * d * d

    def terms_gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        return pred - target


@pytest.mark.parametrize("reduction", plugin.REDUCTIONS)
def test_elementwise_loss_reductions(backend: Any, reduction: str) -> None:
    pred = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    target = np.zeros_like(pred)
    per_sample = (0.5 * pred**2).mean(axis=1)
    fn = _HalfSquares(reduction)
    value, grad = fn.value_and_grad(backend.asarray(pred), backend.asarray(target))
    want = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    np.testing.assert_allclose(_host(backend, value), want, rtol=1e-15)
    scale = {"mean": 1 / 6, "sum": 1 / 3, "none": 1 / 3}[reduction]
    np.testing.assert_allclose(_host(backend, grad), pred * scale, rtol=1e-15)
    with pytest.raises(InvalidParameterError, match="'half_squares': reduction must be one of"):
        _HalfSquares("avg")
