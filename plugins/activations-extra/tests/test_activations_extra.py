"""mlcore-activations-extra against PyTorch (values and gradients, float32 and float64, every
backend), erf and erfc against the standard library, parameter errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import DTypeError, InvalidParameterError

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (name, params, torch function of a tensor); the formula ones are where torch has no function.
ACTIVATIONS: list[tuple[str, dict[str, Any], Callable[[Any], Any]]] = [
    ("gelu", {}, lambda t: F.gelu(t)),
    ("gelu", {"approximate": "tanh"}, lambda t: F.gelu(t, approximate="tanh")),
    ("silu", {}, F.silu),
    ("swish", {"beta": 1.7}, lambda t: t * torch.sigmoid(1.7 * t)),
    ("elu", {"alpha": 0.7}, lambda t: F.elu(t, alpha=0.7)),
    ("selu", {}, F.selu),
    ("softplus", {}, F.softplus),
    ("softplus", {"beta": 2.0, "threshold": 15.0}, lambda t: F.softplus(t, 2.0, 15.0)),
    ("mish", {}, F.mish),
    ("hard_sigmoid", {}, F.hardsigmoid),
]

def _activation_inputs() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate([rng.normal(0.0, 3.0, 400), np.linspace(-40.0, 40.0, 161),
                           [-1e4, -1e3, 1e3, 1e4]])


def _torch_grad(fn: Callable[[Any], Any], host: np.ndarray, dtype: str) -> tuple[Any, Any]:
    t = torch.tensor(host, dtype=getattr(torch, dtype), requires_grad=True)
    out = fn(t)
    out.sum().backward()
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "params", "fn"), ACTIVATIONS,
                         ids=[f"{n}{p or ''}" for n, p, _ in ACTIVATIONS])
def test_activation_matches_torch(backend: Any, agree: Any, dtype: str, name: str,
                                  params: dict[str, Any], fn: Callable[[Any], Any]) -> None:
    x = _activation_inputs().astype(dtype)
    act = mlcore.activation(name, **params)
    xb = backend.asarray(x)
    y = act.forward(xb)
    dx = act.backward(xb, y, backend.asarray(np.ones_like(x)))
    want_y, want_dx = _torch_grad(fn, x, dtype)
    # torch's hardsigmoid gradient uses 1/6 rounded to float32 (error 5e-9) even in float64
    atol = 1e-8 if name == "hard_sigmoid" else 0.0
    agree(backend.to_numpy(y), want_y, dtype, f"{name} forward")
    agree(backend.to_numpy(dx), want_dx, dtype, f"{name} gradient", atol=atol)


# -- erf, which the Array API lacks -----------------------------------------------------------
def test_erf_and_erfc_are_accurate(backend: Any) -> None:
    from mlcore_activations_extra import erf, erfc

    x = np.concatenate([np.linspace(-30.0, 30.0, 6001), [-1e4, 1e4, 0.0, 1e-300]])
    want = np.array([math.erf(v) for v in x])
    want_c = np.array([math.erfc(v) for v in x])
    xp = backend.xp
    got = backend.to_numpy(erf(xp, backend.asarray(x)))
    got_c = backend.to_numpy(erfc(xp, backend.asarray(x)))
    assert np.max(np.abs(got - want)) <= 1e-15
    normal = want_c > 1e-300  # erfc's relative error, down to float64's underflow
    assert np.max(np.abs(got_c - want_c)[normal] / want_c[normal]) <= 1e-14
    got32 = backend.to_numpy(erf(xp, backend.asarray(x.astype(np.float32))))
    assert got32.dtype == np.float32
    assert np.max(np.abs(got32 - np.array([math.erf(v) for v in x.astype(np.float32)]))) <= 1e-6


# -- parameters and errors ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "match"), [
    ("elu", {"alhpa": 0.5}, "Activation 'elu' got unknown parameter 'alhpa'. Accepted: alpha."),
    ("gelu", {"approximate": "erf"}, "'none' or 'tanh'"),
    ("softplus", {"beta": 0.0}, "beta must be .* greater than 0"),
])
def test_bad_activation_parameters(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        mlcore.activation(name, **params)


def test_parameters_are_keyword_only() -> None:
    from mlcore_activations_extra import ELU

    with pytest.raises(TypeError, match="positional"):
        ELU(0.5)  # type: ignore[misc]


def test_integer_input_is_refused(xp: Any) -> None:
    with pytest.raises(DTypeError, match="floating-point"):
        mlcore.activation("gelu").forward(xp.asarray([1, 2, 3]))
