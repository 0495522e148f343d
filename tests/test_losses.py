"""Built-in losses: values against float64 formulas, gradients against finite differences
and PyTorch, extreme inputs, errors and properties, on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore


def _probs(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    p = rng.random((n, m)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def test_builtins_registered() -> None:
    names = {"mse", "mae", "binary_cross_entropy", "cross_entropy", "kl_divergence"}
    assert names <= set(mlcore.loss_names())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_from_logits_with_labels(backend: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    z, labels = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    xp = backend.xp
    pred = backend.asarray(z, dtype=getattr(xp, dtype))
    target = backend.asarray(labels)
    fn = mlcore.loss("cross_entropy", from_logits=True)
    value, grad = fn.forward(pred, target), fn.backward(pred, target)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expect = -np.mean(np.log(p[np.arange(6), labels]))
    onehot = np.eye(4)[labels]
    assert value.dtype == pred.dtype and tuple(value.shape) == ()
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(float(value), expect, rtol=tol)
    np.testing.assert_allclose(backend.to_numpy(grad), (p - onehot) / 6, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["mse", "mae", "binary_cross_entropy"])
def test_elementwise_losses_value(backend: Any, name: str) -> None:
    rng = np.random.default_rng(1)
    p, t = rng.random((5, 3)), rng.random((5, 3))
    expect = {
        "mse": np.mean((p - t) ** 2),
        "mae": np.mean(np.abs(p - t)),
        "binary_cross_entropy": -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)),
    }[name]
    value = mlcore.loss(name).forward(backend.asarray(p), backend.asarray(t))
    np.testing.assert_allclose(float(value), expect, rtol=1e-12)
