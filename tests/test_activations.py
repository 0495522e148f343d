"""Built-in activations: forward against float64 formulas written here, backward against
central finite differences and PyTorch autograd, extreme inputs, errors and properties, on
every backend (the ``backend`` fixture)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mlcore
from mlcore.errors import (
    BackendMismatchError,
    DTypeError,
    InvalidParameterError,
    UnknownNameError,
)

NAMES = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "log_softmax", "step"]
SMOOTH = [n for n in NAMES if n != "step"]
DTYPES = ["float32", "float64"]
TOL = {"float32": 2e-6, "float64": 1e-12}
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- independent float64 oracles -----------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    flat = [1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0 for v in z.ravel().tolist()]
    return np.array(flat).reshape(z.shape)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


ORACLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda z: z,
    "sigmoid": _sigmoid,
    "tanh": lambda z: np.array([math.tanh(v) for v in z.ravel()]).reshape(z.shape),
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "step": lambda z: (z > 0).astype(float),
}


def _data(seed: int = 0, shape: tuple[int, ...] = (4, 5)) -> np.ndarray:
    """Normal data kept at least 0.05 away from the kinks of relu, leaky_relu and step."""
    z = np.random.default_rng(seed).normal(0.0, 2.0, shape)
    return np.where(np.abs(z) < 0.05, 0.5, z)


def _run(backend: Any, fn: Any, z: np.ndarray, dtype: str = "float64") -> np.ndarray:
    x = backend.asarray(z, dtype=getattr(backend.xp, dtype))
    return np.asarray(backend.to_numpy(fn.forward(x)), dtype=np.float64)


def _backward(backend: Any, fn: Any, z: np.ndarray, dz: np.ndarray, dtype: str) -> Any:
    xp = backend.xp
    x = backend.asarray(z, dtype=getattr(xp, dtype))
    return fn.backward(x, fn.forward(x), backend.asarray(dz, dtype=getattr(xp, dtype)))


def _numeric_vjp(f: Callable[[np.ndarray], np.ndarray], z: np.ndarray, dy: np.ndarray,
                 h: float = 1e-6) -> np.ndarray:
    """Central finite differences of ``sum(dy * f(z))`` with respect to each element of z."""
    out = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[i] = h
        out[i] = (np.sum(dy * f(z + e)) - np.sum(dy * f(z - e))) / (2 * h)
    return out


# -- registry and construction -------------------------------------------------------------
def test_builtins_registered() -> None:
    assert set(NAMES) <= set(mlcore.activation_names())


def test_builtins_survive_disabled_autoload(monkeypatch: pytest.MonkeyPatch,
                                            fresh_registry: Any) -> None:
    monkeypatch.setenv("MLCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert set(NAMES) <= set(mlcore.activation_names())


@pytest.mark.parametrize("name", NAMES)
def test_satisfies_protocol_and_repr(name: str) -> None:
    fn = mlcore.activation(name)
    assert isinstance(fn, mlcore.ActivationFn)
    assert repr(fn).startswith(f"activation({name!r}")


# -- forward against the float64 oracle ----------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_formula(backend: Any, name: str, dtype: str) -> None:
    z = _data()
    x = backend.asarray(z, dtype=getattr(backend.xp, dtype))
    y = mlcore.activation(name).forward(x)
    assert backend.owns(y) and y.dtype == x.dtype and tuple(y.shape) == z.shape
    assert mlcore.arrays.namespace.device_of(y) == mlcore.arrays.namespace.device_of(x)
    np.testing.assert_allclose(backend.to_numpy(y), ORACLES[name](z), rtol=TOL[dtype],
                               atol=TOL[dtype])


@pytest.mark.parametrize("alpha", [0.2, 0.0, -0.5, 1.0, 3.0])
def test_leaky_relu_alpha(backend: Any, alpha: float) -> None:
    z = _data(1)
    fn = mlcore.activation("leaky_relu", alpha=alpha)
    np.testing.assert_allclose(_run(backend, fn, z), np.where(z > 0, z, alpha * z), rtol=1e-12)
    dz = np.ones_like(z)
    dx = backend.to_numpy(_backward(backend, fn, z, dz, "float64"))
    np.testing.assert_allclose(dx, np.where(z > 0, 1.0, alpha), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_axis(backend: Any, name: str) -> None:
    z = _data(2, (3, 4, 2))
    oracle = _softmax if name == "softmax" else _log_softmax
    for axis in (0, 1, -1):
        got = _run(backend, mlcore.activation(name, axis=axis), z)
        np.testing.assert_allclose(got, oracle(z, axis), rtol=1e-12, atol=1e-12)


def test_step_is_the_perceptron_threshold(backend: Any) -> None:
    z = np.array([-1.0, 0.0, 1e-30, 2.0])
    assert _run(backend, mlcore.activation("step"), z).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_relu_gradient_at_zero_is_zero(backend: Any) -> None:
    fn = mlcore.activation("relu")
    dx = _backward(backend, fn, np.zeros(3), np.ones(3), "float64")
    assert backend.to_numpy(dx).tolist() == [0.0, 0.0, 0.0]


# -- backward against finite differences ---------------------------------------------------
@pytest.mark.parametrize("name", SMOOTH)
def test_backward_matches_finite_differences(backend: Any, name: str) -> None:
    z, dy = _data(3, (3, 4)), _data(4, (3, 4))
    fn = mlcore.activation(name)
    dx = backend.to_numpy(_backward(backend, fn, z, dy, "float64"))
    expect = _numeric_vjp(lambda v: _run(backend, fn, v), z, dy)
    np.testing.assert_allclose(dx, expect, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_backward_along_axis0(backend: Any, name: str) -> None:
    z, dy = _data(5, (3, 4)), _data(6, (3, 4))
    fn = mlcore.activation(name, axis=0)
    dx = backend.to_numpy(_backward(backend, fn, z, dy, "float64"))
    expect = _numeric_vjp(lambda v: _run(backend, fn, v), z, dy)
    np.testing.assert_allclose(dx, expect, rtol=1e-6, atol=1e-8)


def test_step_gradient_is_zero(backend: Any) -> None:
    dx = _backward(backend, mlcore.activation("step"), _data(), np.ones((4, 5)), "float32")
    assert dx.dtype == backend.xp.float32
    assert not backend.to_numpy(dx).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_backward_keeps_dtype_and_shape(backend: Any, name: str, dtype: str) -> None:
    z = _data()
    dx = _backward(backend, mlcore.activation(name), z, np.ones_like(z), dtype)
    assert backend.owns(dx) and dx.dtype == getattr(backend.xp, dtype)
    assert tuple(dx.shape) == z.shape


# -- PyTorch -------------------------------------------------------------------------------
def _torch_fns() -> dict[str, Callable[[Any], Any]]:
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    return {
        "identity": lambda t: t * 1,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": f.relu,
        "leaky_relu": lambda t: f.leaky_relu(t, 0.01),
        "softmax": lambda t: f.softmax(t, dim=-1),
        "log_softmax": lambda t: f.log_softmax(t, dim=-1),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SMOOTH)
def test_matches_pytorch(backend: Any, name: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    z, dy = _data(7, (6, 5)) * 3, _data(8, (6, 5))
    z[0] = [-1e4, 1e4, 30.0, -30.0, 0.5]  # extreme and saturating values too
    zt = torch.tensor(z, dtype=getattr(torch, dtype), requires_grad=True)
    yt = _torch_fns()[name](zt)
    (yt * torch.tensor(dy, dtype=zt.dtype)).sum().backward()
    fn = mlcore.activation(name)
    y = _run(backend, fn, z, dtype)
    dx = backend.to_numpy(_backward(backend, fn, z, dy, dtype))
    tol = TOL[dtype] * 2
    np.testing.assert_allclose(y, yt.detach().double().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, zt.grad.double().numpy(), rtol=tol, atol=tol)


# -- extreme inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_stay_finite(backend: Any, name: str, dtype: str) -> None:
    big = 1e30 if dtype == "float32" else 1e300
    z = np.array([[-1e4, 1e4, 0.0, 1.0], [-1e4, -1e4, -1e4, -1e4], [big, -big, 1e-30, -1e-30]])
    fn = mlcore.activation(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow warnings from the array library fail too
        y = _run(backend, fn, z, dtype)
        dx = backend.to_numpy(_backward(backend, fn, z, np.ones_like(z), dtype))
    assert np.isfinite(y).all() and np.isfinite(dx).all()


def test_sigmoid_extremes_exact(backend: Any) -> None:
    fn = mlcore.activation("sigmoid")
    y = _run(backend, fn, np.array([-1e4, -50.0, 0.0, 50.0, 1e4]))
    # below exp's floor (about -709) the output is the value at the floor, < 2e-308
    np.testing.assert_allclose(y, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-14,
                               atol=2e-308)


def test_softmax_extremes_exact(backend: Any) -> None:
    z = np.array([[-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]])
    y = _run(backend, mlcore.activation("softmax"), z, "float32")
    assert y.tolist() == [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_integer_input_is_a_dtype_error(backend: Any, name: str) -> None:
    x = backend.asarray(np.array([1, 2, 3]))
    with pytest.raises(DTypeError, match="x must be a floating-point array.*astype"):
        mlcore.activation(name).forward(x)


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(UnknownNameError, match="Registered:.*relu.*Did you mean 'relu'"):
        mlcore.activation("reluu")


@pytest.mark.parametrize(("name", "params", "pattern"), [
    ("relu", {"alpha": 0.1}, "unknown parameter 'alpha'"),
    ("leaky_relu", {"slope": 0.1}, "Accepted: alpha"),
    ("leaky_relu", {"alpha": "big"}, "alpha must be a finite real number"),
    ("leaky_relu", {"alpha": float("nan")}, "finite"),
    ("leaky_relu", {"alpha": True}, "finite real number"),
    ("softmax", {"axis": 1.5}, "axis must be an integer"),
    ("log_softmax", {"dim": 1}, "Accepted: axis"),
])
def test_bad_parameters(name: str, params: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern):
        mlcore.activation(name, **params)


def test_mixed_backends_in_backward_name_both() -> None:
    numpy_b, strict_b = mlcore.get_backend("numpy"), mlcore.get_backend("strict")
    x = numpy_b.asarray(np.ones(3))
    dy = strict_b.asarray(np.ones(3))
    with pytest.raises(BackendMismatchError, match="x is a numpy array.*dy is a strict array"):
        mlcore.activation("relu").backward(x, x, dy)


# -- properties ----------------------------------------------------------------------------
def _arrays(min_dims: int = 1) -> Any:
    return st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
        dt, hnp.array_shapes(min_dims=min_dims, max_dims=3, max_side=5),
        elements=st.floats(-1e4, 1e4, width=32)))


@PROPERTY
@given(z=_arrays(), name=st.sampled_from(NAMES))
def test_property_shape_and_dtype_kept(backend: Any, z: np.ndarray, name: str) -> None:
    x = backend.asarray(z)
    fn = mlcore.activation(name)
    y = fn.forward(x)
    dx = fn.backward(x, y, y)
    assert y.dtype == x.dtype == dx.dtype and tuple(y.shape) == tuple(dx.shape) == z.shape
    assert np.isfinite(backend.to_numpy(y)).all() and np.isfinite(backend.to_numpy(dx)).all()


@PROPERTY
@given(z=_arrays())
def test_property_softmax_is_a_distribution(backend: Any, z: np.ndarray) -> None:
    y = backend.to_numpy(mlcore.activation("softmax").forward(backend.asarray(z)))
    tol = 1e-5 if z.dtype == np.float32 else 1e-12
    assert (y >= 0).all() and (y <= 1).all()
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=tol)
    log_y = backend.to_numpy(mlcore.activation("log_softmax").forward(backend.asarray(z)))
    np.testing.assert_allclose(np.exp(log_y.astype(np.float64)).sum(axis=-1), 1.0, rtol=tol)


@PROPERTY
@given(z=_arrays(), name=st.sampled_from(["sigmoid", "tanh"]))
def test_property_squashing_ranges(backend: Any, z: np.ndarray, name: str) -> None:
    y = backend.to_numpy(mlcore.activation(name).forward(backend.asarray(z)))
    lo = 0.0 if name == "sigmoid" else -1.0
    assert (y >= lo).all() and (y <= 1.0).all()


@pytest.mark.parametrize("name", NAMES)
def test_results_stay_on_a_non_default_device(name: str) -> None:
    import array_api_strict as xs

    dev = xs.Device("device1")
    x = xs.asarray(_data(), device=dev)
    fn = mlcore.activation(name)
    y = fn.forward(x)
    assert y.device == fn.backward(x, y, y).device == dev


def test_softmax_axis_out_of_range_is_named() -> None:
    for name in ("softmax", "log_softmax"):
        with pytest.raises(mlcore.ShapeError, match=r"axis=5 is out of range for an input of 2"):
            mlcore.activation(name, axis=5).forward(np.ones((2, 3), np.float32))
