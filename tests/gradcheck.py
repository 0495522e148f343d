"""Test helpers shared by the layer, training and optimiser tests: host copies and central
finite differences (the independent oracle for every gradient)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def host(backend: Any, x: Any) -> np.ndarray:
    """A float64 NumPy copy of a backend array."""
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def numeric_grads(backend: Any, value: Callable[[], Any], params: Sequence[Any],
                  eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences of ``value()`` with respect to each Parameter's ``value``."""
    grads = []
    for p in params:
        base = host(backend, p.value)
        g = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            for sign in (1.0, -1.0):
                bumped = base.copy()
                bumped[idx] += sign * eps
                p.value = backend.asarray(bumped)
                g[idx] += sign * float(value()) / (2 * eps)
        p.value = backend.asarray(base)
        grads.append(g)
    return grads


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|b|, tiny)."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


class Box:
    """A stand-in holding ``value`` like a Parameter (finite differences on an input)."""

    def __init__(self, value: Any) -> None:
        self.value = value
