"""Built-in activations: forward against float64 formulas, backward against finite
differences and PyTorch, extreme inputs, errors and properties, on every backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import mlcore

NAMES = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "log_softmax", "step"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.array([1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in z.ravel()]).reshape(
        z.shape
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ORACLES = {
    "identity": lambda z: z,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "softmax": _softmax,
    "log_softmax": lambda z: np.log(_softmax(z)),
    "step": lambda z: (z > 0).astype(float),
}


def _data(seed: int = 0, shape: tuple[int, ...] = (4, 5)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, shape)


def test_builtins_registered() -> None:
    assert set(NAMES) <= set(mlcore.activation_names())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_formula(backend: Any, name: str, dtype: str) -> None:
    z = _data()
    x = backend.asarray(z, dtype=getattr(backend.xp, dtype))
    y = mlcore.activation(name).forward(x)
    assert backend.owns(y) and y.dtype == x.dtype and tuple(y.shape) == z.shape
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(y), ORACLES[name](z), rtol=tol, atol=tol)
