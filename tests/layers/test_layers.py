"""Layers: Dense (eq. 1.5) against a float64 formula and torch.nn.Linear, PReLU against its
formula and torch.nn.PReLU, a whole-MLP gradient check by central finite differences,
initialisers, gradient accumulation and errors, on every backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from gradcheck import Box, host, numeric_grads, rel_err

import mlcore
from mlcore.arrays.namespace import writes_in_place
from mlcore.errors import (
    BackendMismatchError,
    DTypeError,
    InvalidParameterError,
    ShapeError,
    UnknownNameError,
)
from mlcore.init import initializer_names

RNG = np.random.default_rng(1234)


def _arr(backend: Any, shape: tuple[int, ...]) -> tuple[Any, np.ndarray]:
    x = RNG.standard_normal(shape)
    return backend.asarray(x), x


def test_dense_shapes_dtype_and_backend(backend: Any) -> None:
    layer = mlcore.Dense(3, 2, seed=0)
    assert layer.weight.shape == (2, 3) and layer.bias is not None and layer.bias.shape == (2,)
    assert backend.owns(layer.weight.value) and layer.weight.value.dtype == backend.xp.float32
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert mlcore.Dense(3, 2, bias=False).parameters()[0] is not None
    assert len(mlcore.Dense(3, 2, bias=False).parameters()) == 1


def test_dense_forward_is_x_wt_plus_b(backend: Any) -> None:
    layer = mlcore.Dense(3, 2, seed=0, dtype="float64")
    X, x = _arr(backend, (5, 3))
    W, b = host(backend, layer.weight.value), host(backend, layer.bias.value)  # type: ignore[union-attr]
    b = b + 0.5
    layer.bias.value = backend.asarray(b)  # type: ignore[union-attr]
    assert np.allclose(host(backend, layer(X)), x @ W.T + b, rtol=1e-13, atol=1e-13)


def test_dense_matches_torch_linear(backend: Any) -> None:
    torch = pytest.importorskip("torch")
    layer = mlcore.Dense(4, 3, seed=1, dtype="float64")
    lin = torch.nn.Linear(4, 3, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(host(backend, layer.weight.value)))
        lin.bias.copy_(torch.from_numpy(host(backend, layer.bias.value)))  # type: ignore[union-attr]
    X, x = _arr(backend, (6, 4))
    dY, dy = _arr(backend, (6, 3))
    Y, backprop = layer.forward(X)
    dX = backprop(dY)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = lin(xt)
    yt.backward(torch.from_numpy(dy))
    assert rel_err(host(backend, Y), yt.detach().numpy()) < 1e-12
    assert rel_err(host(backend, dX), xt.grad.numpy()) < 1e-12
    assert rel_err(host(backend, layer.weight.grad), lin.weight.grad.numpy()) < 1e-12
    assert rel_err(host(backend, layer.bias.grad), lin.bias.grad.numpy()) < 1e-12  # type: ignore[union-attr]


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "leaky_relu", "prelu"])
def test_whole_mlp_gradient_matches_finite_differences(backend: Any, activation: str) -> None:
    model = mlcore.MLP([3, 5, 4, 3], activation=activation, output_activation="softmax",
                       seed=3, dtype="float64")
    # data of its own generator: the module's RNG would make it depend on the test order
    # (with saturated softmax rows the gradients shrink to finite differences' noise)
    rng = np.random.default_rng(11)

    def draw(shape: tuple[int, ...]) -> Any:
        return backend.asarray(rng.standard_normal(shape))

    for p in model.parameters():  # non-zero biases: no pre-activation sits on ReLU's kink
        p.value = draw(p.shape)
    X, R = draw((6, 3)), draw((6, 3))
    xp = backend.xp

    def value() -> Any:
        return xp.sum(model(box.value) * R)

    box = Box(X)
    model.zero_grad()
    _, backprop = model.forward(X)
    dX = backprop(R)
    params = model.parameters()
    expected = numeric_grads(backend, value, params)
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        assert rel_err(host(backend, p.grad), want) < 1e-6, name
    assert rel_err(host(backend, dX), numeric_grads(backend, value, [box])[0]) < 1e-6


def test_gradients_accumulate_until_zero_grad(backend: Any) -> None:
    layer = mlcore.Dense(2, 2, seed=0, dtype="float64")
    X, _ = _arr(backend, (3, 2))
    dY, _ = _arr(backend, (3, 2))
    layer.forward(X)[1](dY)
    once = host(backend, layer.weight.grad)
    layer.forward(X)[1](dY)
    assert np.allclose(host(backend, layer.weight.grad), 2 * once)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None  # type: ignore[union-attr]


def test_first_layer_can_skip_the_input_gradient(backend: Any) -> None:
    layer = mlcore.Dense(2, 2, seed=0)
    X = backend.asarray(np.ones((1, 2), dtype=np.float32))
    Y, backprop = layer.forward(X, input_grad=False)
    assert backprop(Y) is None and layer.weight.grad is not None


@pytest.mark.parametrize("num", [1, 4])
def test_prelu_forward_and_gradients(backend: Any, num: int) -> None:
    layer = mlcore.PReLU(num, dtype="float64")
    alpha = RNG.uniform(0.1, 0.5, num)
    layer.alpha.value = backend.asarray(alpha)
    X, x = _arr(backend, (5, 4))
    assert np.allclose(host(backend, layer(X)), np.where(x > 0, x, alpha * x), atol=1e-14)
    R, _ = _arr(backend, (5, 4))
    box = Box(X)

    def value() -> Any:
        return backend.xp.sum(layer(box.value) * R)

    dX = layer.forward(X)[1](R)
    assert rel_err(host(backend, layer.alpha.grad), numeric_grads(backend, value,
                                                                  [layer.alpha])[0]) < 1e-6
    assert rel_err(host(backend, dX), numeric_grads(backend, value, [box])[0]) < 1e-6


def test_prelu_matches_torch(backend: Any) -> None:
    torch = pytest.importorskip("torch")
    layer = mlcore.PReLU(3, dtype="float64")
    ref = torch.nn.PReLU(3, dtype=torch.float64)
    X, x = _arr(backend, (4, 3))
    dY, dy = _arr(backend, (4, 3))
    Y, backprop = layer.forward(X)
    dX = backprop(dY)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref(xt).backward(torch.from_numpy(dy))
    assert rel_err(host(backend, Y), ref(xt).detach().numpy()) < 1e-12
    assert rel_err(host(backend, dX), xt.grad.numpy()) < 1e-12
    assert rel_err(host(backend, layer.alpha.grad), ref.weight.grad.numpy()) < 1e-12


def test_activation_layer_uses_the_registered_function(backend: Any) -> None:
    layer = mlcore.Activation("leaky_relu", alpha=0.2)
    fn = mlcore.activation("leaky_relu", alpha=0.2)
    X, _ = _arr(backend, (3, 4))
    dY, _ = _arr(backend, (3, 4))
    Y, backprop = layer.forward(X)
    assert np.array_equal(host(backend, Y), host(backend, fn.forward(X)))
    assert np.array_equal(host(backend, backprop(dY)), host(backend, fn.backward(X, Y, dY)))
    assert layer.parameters() == [] and layer.config()["params"] == {"alpha": 0.2}


def test_mlp_layout_and_default_initialisers(backend: Any) -> None:
    model = mlcore.MLP([2, 4, 1], activation="tanh", output_activation="sigmoid", seed=0)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "Activation", "Dense", "Activation"]
    assert [layer.name for layer in model.layers[1::2]] == ["tanh", "sigmoid"]  # type: ignore[attr-defined]
    relu = mlcore.MLP([400, 300, 10], seed=0)
    w = host(backend, relu.layers[0].weight.value)  # type: ignore[attr-defined]
    assert np.abs(w).max() <= math.sqrt(6 / 400) and np.abs(w).max() > math.sqrt(6 / 700)
    assert len(relu.layers) == 3  # no output activation: logits


@pytest.mark.parametrize("name", initializer_names())
def test_initialisers_have_the_documented_scale(backend: Any, name: str) -> None:
    w = host(backend, mlcore.Dense(300, 200, init=name, seed=0).weight.value)
    fan_in, fan_out = 300, 200
    std = {"glorot": math.sqrt(2 / (fan_in + fan_out)), "xavier": math.sqrt(2 / (fan_in + fan_out)),
           "he": math.sqrt(2 / fan_in), "kaiming": math.sqrt(2 / fan_in), "zeros": 0.0}
    assert w.std() == pytest.approx(std[name.split("_")[0]], rel=0.03, abs=1e-12)
    if name.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3) * std[name.split("_")[0]]


def test_same_seed_same_weights_on_every_backend() -> None:
    names = mlcore.backend_names(available_only=True)
    weights = []
    for name in names:
        with mlcore.use_backend(name) as b:
            model = mlcore.MLP([5, 7, 3], seed=42)
            weights.append([b.to_numpy(p.value) for p in model.parameters()])
    for other in weights[1:]:
        assert all(np.array_equal(a, c) for a, c in zip(weights[0], other, strict=True))


def test_wrong_feature_count_names_expected_and_received(backend: Any) -> None:
    layer = mlcore.Dense(784, 10)
    X = backend.asarray(np.zeros((32, 783), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"Dense expected input with 784 features, received "
                                         r"shape \(32, 783\)\."):
        layer(X)


def test_wrong_dtype_and_bad_sizes(backend: Any) -> None:
    layer = mlcore.Dense(2, 2)
    with pytest.raises(DTypeError, match="float32 weights but received"):
        layer(backend.asarray(np.zeros((1, 2))))
    with pytest.raises(InvalidParameterError, match="in_features must be a positive integer"):
        mlcore.Dense(0, 2)
    with pytest.raises(UnknownNameError, match="Known: glorot_normal"):
        mlcore.Dense(2, 2, init="glorot")
    with pytest.raises(DTypeError, match="float32 or float64"):
        mlcore.Dense(2, 2, dtype="int32")
    with pytest.raises(InvalidParameterError, match="at least an input and an output"):
        mlcore.MLP([3])
    with pytest.raises(InvalidParameterError, match="Wrap activations"):
        mlcore.Sequential([mlcore.Dense(2, 2), "relu"])  # type: ignore[list-item]
    with pytest.raises(ShapeError, match="one per feature"):
        mlcore.PReLU(3)(backend.asarray(np.zeros((2, 4), dtype=np.float32)))


def test_arrays_of_two_backends_never_mix() -> None:
    if "strict" not in mlcore.backend_names(available_only=True):
        pytest.skip("needs the strict backend")
    with mlcore.use_backend("strict"):
        layer = mlcore.Dense(2, 2)
    with pytest.raises(BackendMismatchError, match="X is a numpy array"):
        layer(np.zeros((1, 2), dtype=np.float32))


def test_parameter_set_copies_in_place_and_checks(backend: Any) -> None:
    layer = mlcore.Dense(5, 4, seed=0)
    w = layer.weight
    storage = w.value
    new, host_new = _arr(backend, (4, 5))
    new = backend.asarray(host_new.astype(np.float32))
    w.set(new)
    # same array, same (transposed) layout, where the backend writes in place (not JAX)
    assert (w.value is storage) == writes_in_place(storage)
    np.testing.assert_array_equal(host(backend, w.value), host_new.astype(np.float32))
    with pytest.raises(ShapeError, match=r"shape \(4, 5\), value has shape \(5,\)"):
        w.set(backend.asarray(np.ones(5, np.float32)))  # would broadcast: refused
    with pytest.raises(DTypeError, match="float64"):
        w.set(backend.asarray(np.ones((4, 5))))  # no silent cast
    other = "strict" if backend.name != "strict" else "numpy"
    with pytest.raises(BackendMismatchError):
        w.set(mlcore.get_backend(other).asarray(np.ones((4, 5), np.float32)))


def test_parameter_set_never_moves_a_parameter_to_another_device() -> None:
    import array_api_strict as xps

    from mlcore.errors import DeviceMismatchError

    with mlcore.use_backend("strict"):
        w = mlcore.Dense(5, 4).weight
    elsewhere = xps.asarray(np.ones((4, 5), np.float32), device=xps.Device("device1"))
    with pytest.raises(DeviceMismatchError, match="value"):
        w.set(elsewhere)
    assert w.value.device == xps.Device("CPU_DEVICE")


def test_parameter_set_on_a_read_only_array_takes_a_copy() -> None:
    with mlcore.use_backend("numpy"):
        p = mlcore.Dense(3, 2).weight
        frozen = np.zeros((2, 3), np.float32)
        frozen.flags.writeable = False
        p.value = frozen
        p.set(np.ones((2, 3), np.float32))
        assert p.value is not frozen and float(p.value.sum()) == 6.0 and frozen.sum() == 0


def test_load_state_dict_copies_into_the_parameters(backend: Any) -> None:
    """As PyTorch's load_state_dict: in place, so an optimiser built earlier keeps working
    on the same arrays, and the weights keep their storage layout."""
    model = mlcore.MLP([3, 4, 2], seed=0)
    source = mlcore.MLP([3, 4, 2], seed=1)
    before = [p.value for p in model.parameters()]
    model.load_state_dict(source.state_dict())
    for p, q, b in zip(model.parameters(), source.parameters(), before, strict=True):
        assert (p.value is b) == writes_in_place(b) and p.value is not q.value
        np.testing.assert_array_equal(host(backend, p.value), host(backend, q.value))


def test_dense_weight_is_stored_transposed_with_the_same_values(backend: Any) -> None:
    """transposed_storage changes the memory order only: the values are the initialiser's
    (the same seed gives the same weights as a plain (out, in) draw)."""
    from mlcore.init import get_initializer
    from mlcore.layers import transposed_storage

    layer = mlcore.Dense(6, 4, seed=3)
    plain = get_initializer("glorot_uniform")((4, 6), backend.xp.float32, backend.rng(3),
                                              backend)
    np.testing.assert_array_equal(host(backend, layer.weight.value), host(backend, plain))
    moved = transposed_storage(backend.xp, plain)
    np.testing.assert_array_equal(host(backend, moved), host(backend, plain))
    if backend.name == "numpy":
        assert moved.flags.f_contiguous and moved.T.flags.c_contiguous


# -- round 3 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("init", "match"), [(math.nan, "finite"), ("abc", "type str")])
def test_prelu_init_is_checked(init: Any, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"PReLU: init.*{match}"):
        mlcore.PReLU(init=init)


def test_layers_of_two_backends_in_one_sequential_are_refused() -> None:
    first = mlcore.Dense(3, 4)
    with mlcore.use_backend("strict" if first.backend.name != "strict" else "numpy"):
        second = mlcore.Dense(4, 2)
    with pytest.raises(InvalidParameterError, match="must share one backend"):
        mlcore.Sequential([first, mlcore.Activation("relu"), second])


def test_a_negative_seed_is_named() -> None:
    with pytest.raises(InvalidParameterError, match="seed must be an integer >= 0"):
        mlcore.MLP([2, 3, 1], seed=-1)
    with pytest.raises(InvalidParameterError, match="seed must be an integer >= 0"):
        mlcore.Dropout(0.5, seed=-1)
