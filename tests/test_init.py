"""Weight initialisers (mlcore.init): fans, bounds, names and the MLP's defaults."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mlcore.errors import UnknownNameError
from mlcore.init import (
    RELU_FAMILY,
    default_init,
    get_initializer,
    glorot_uniform,
    he_normal,
    initializer_names,
)


def test_fans_of_an_out_in_weight(backend: Any) -> None:
    w = backend.to_numpy(glorot_uniform((50, 200), backend.xp.float64, backend.rng(0), backend))
    assert w.shape == (50, 200) and np.abs(w).max() <= math.sqrt(6.0 / 250)
    v = backend.to_numpy(he_normal((400, 100), backend.xp.float64, backend.rng(1), backend))
    assert v.std() == pytest.approx(math.sqrt(2.0 / 100), rel=0.05)  # fan_in = shape[1]


def test_one_dimensional_shape_counts_its_length_as_both_fans(backend: Any) -> None:
    w = backend.to_numpy(glorot_uniform((30,), backend.xp.float32, backend.rng(2), backend))
    assert w.dtype == np.float32 and np.abs(w).max() <= math.sqrt(6.0 / 60)


def test_names_aliases_and_errors() -> None:
    assert get_initializer("xavier_uniform") is get_initializer("glorot_uniform")
    assert get_initializer("KAIMING_NORMAL") is he_normal
    assert get_initializer(glorot_uniform) is glorot_uniform  # a callable passes through
    assert "zeros" in initializer_names()
    with pytest.raises(UnknownNameError, match=r"Unknown initialiser 'glorot'\. Known: "):
        get_initializer("glorot")


@pytest.mark.parametrize("activation", [*sorted(RELU_FAMILY), "tanh", "sigmoid", None])
def test_default_follows_the_activation(activation: Any) -> None:
    want = "he_uniform" if activation in RELU_FAMILY else "glorot_uniform"
    assert default_init(activation) == want
