"""Public entry points validate their arguments with mlcore's errors, naming what the user
passed; lists work wherever arrays do; NumPy integers work where ints do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import (
    BackendMismatchError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    UnknownNameError,
)


def _params() -> list[mlcore.Parameter]:
    return mlcore.MLP([2, 3, 1], seed=0).parameters()


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (mlcore.Adam, {"lr": "0.01"}, r"lr must be a number in \(0, inf\), received '0.01' of "
                                  r"type str"),
    (mlcore.Adam, {"lr": 0.0}, r"lr must be a finite number in \(0, inf\)"),
    (mlcore.SGD, {"lr": -1.0}, r"lr must be a finite number in \(0, inf\)"),
    (mlcore.SGD, {"lr": float("nan")}, "lr must be a finite number"),
    (mlcore.SGD, {"lr": float("inf")}, "lr must be a finite number"),
    (mlcore.SGD, {"lr": True}, "lr must be a number"),
    (mlcore.Adam, {"betas": 0.9}, r"betas must be a pair \(beta1, beta2\)"),
    (mlcore.Adam, {"betas": (0.9,)}, r"betas must be a pair"),
    (mlcore.Adam, {"betas": "ab"}, r"betas must be a pair"),
    (mlcore.Adam, {"betas": (0.9, 1.0)}, r"betas\[1\] must be a finite number in \[0, 1\)"),
    (mlcore.AdamW, {"betas": (-0.1, 0.9)}, r"betas\[0\] must be a finite number in \[0, 1\)"),
    (mlcore.Adam, {"eps": 0.0}, r"eps must be a finite number in \(0, inf\)"),
    (mlcore.Adam, {"eps": -1e-8}, r"eps must be a finite number"),
    (mlcore.SGD, {"momentum": 1.0}, r"momentum must be a finite number in \[0, 1\)"),
    (mlcore.SGD, {"momentum": "0.9"}, "momentum must be a number"),
    (mlcore.SGD, {"momentum": 0.9, "nesterov": "yes"}, "nesterov must be True or False"),
    (mlcore.SGD, {"weight_decay": float("nan")}, "weight_decay must be a finite number"),
])
def test_optimiser_arguments_are_checked(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        cls(_params(), **kwargs)


def test_numpy_numbers_are_accepted() -> None:
    opt = mlcore.Adam(_params(), lr=np.float32(0.01), betas=[np.float64(0.8), 0.99],
                      eps=np.float64(1e-7))
    assert opt.betas == (0.8, 0.99) and isinstance(opt.lr, float)
    X = np.zeros((8, 2), np.float32)
    h = mlcore.MLP([2, 2, 1], seed=0).fit(X, np.zeros(8, np.float32), loss="mse",
                                          batch_size=np.int64(4), epochs=np.int32(2),
                                          verbose=False)
    assert len(h["loss"]) == 2
    assert mlcore.Dense(np.int64(3), np.int16(2)).in_features == 3
    assert mlcore.MLP(np.array([2, 3, 1]), seed=0).sizes == [2, 3, 1]


@pytest.mark.parametrize("sizes", [[2.7, 3.9, 1], [2, 0, 1], [2, -3, 1], [2, True, 1],
                                   ["2", 3], [4], 5, None])
def test_mlp_sizes_must_be_positive_integers(sizes: Any) -> None:
    with pytest.raises(InvalidParameterError, match="MLP"):
        mlcore.MLP(sizes)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"batch_size": "16"}, "batch_size must be a positive integer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"optimizer": mlcore.Adam}, r"optimizer is the class Adam; pass its name"),
    ({"optimizer": "adamm"}, "Unknown optimiser 'adamm'"),
])
def test_fit_arguments_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((InvalidParameterError, UnknownNameError), match=match):
        mlcore.MLP([2, 1], seed=0).fit([[0.0, 1.0]], [1.0], loss="mse", verbose=False,
                                       **kwargs)


def test_validation_data_is_named() -> None:
    model = mlcore.MLP([2, 2], seed=0)
    X, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
    with pytest.raises(InvalidParameterError, match=r"validation_data must be a pair \(X_val, "
                                                    r"y_val\), received numpy array"):
        model.fit(X, y, loss="cross_entropy", validation_data=X, verbose=False)
    with pytest.raises(InvalidParameterError, match="a tuple of 3 items"):
        model.fit(X, y, loss="cross_entropy", validation_data=(X, y, y), verbose=False)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidValueError, match=r"validation_data\[0\] \(X_val\) contains 1 NaN"):
        model.fit(X, y, loss="cross_entropy", validation_data=(bad, y), verbose=False)
    with pytest.raises(mlcore.ShapeError, match=r"validation_data\[0\] \(X_val\) and "
                                                r"validation_data\[1\] \(y_val\) must hold"):
        model.fit(X, y, loss="cross_entropy", validation_data=(X, y[:2]), verbose=False)


def test_lists_work_wherever_arrays_do(backend: Any) -> None:
    model = mlcore.MLP([4, 3, 2], seed=0)
    rows = [[0.1, 0.2, 0.3, 0.4]]
    direct = backend.to_numpy(model(rows))
    assert np.allclose(direct, backend.to_numpy(model.predict(rows)))
    assert backend.to_numpy(mlcore.Activation("relu")([[-1.0, 2.0]])).tolist() == [[0.0, 2.0]]
    assert mlcore.Dense(2, 3, seed=0)([[1.0, 2.0]]).shape == (1, 3)
    model.fit(rows, [1], loss="cross_entropy", verbose=False)
    assert "loss" in model.evaluate(rows, [1])


def test_complex_input_is_refused_not_truncated(backend: Any) -> None:
    model = mlcore.MLP([2, 1], seed=0)
    X = np.ones((3, 2), np.complex64) + 1j
    for call in (lambda: model.predict(X), lambda: model.fit(X, [1.0, 0.0, 1.0], loss="mse",
                                                             verbose=False)):
        with pytest.raises(DTypeError, match=r"real numbers.*X\.real"):
            call()


def test_float16_numpy_on_strict_says_how_to_convert() -> None:
    with mlcore.use_backend("strict"):
        model = mlcore.MLP([2, 1], seed=0)
        with pytest.raises(DTypeError, match=r"float16, which the strict backend cannot hold.*"
                                             r"X\.astype\('float32'\)"):
            model.predict(np.ones((2, 2), np.float16))


def test_use_backend_takes_a_backend_object() -> None:
    strict = mlcore.get_backend("strict")
    with mlcore.use_backend(strict) as chosen:
        assert chosen is strict and mlcore.get_backend().name == "strict"
    with pytest.raises(InvalidParameterError, match="chosen by name"):
        mlcore.use_backend(3)  # type: ignore[arg-type]


def test_arrays_of_another_backend_are_still_refused() -> None:
    strict = mlcore.get_backend("strict")
    model = mlcore.MLP([2, 1], seed=0)
    with pytest.raises(BackendMismatchError):
        model.forward(strict.asarray([[1.0, 2.0]], dtype=strict.xp.float32))


# -- round 3: raw errors made clear ------------------------------------------------------------
def test_a_python_list_given_to_a_loss_or_parameter_set_is_named() -> None:
    with pytest.raises(mlcore.InvalidParameterError, match="pred is a list, not an array"):
        mlcore.loss("mse").forward([1.0, 2.0], [1.0, 2.0])
    p = mlcore.Dense(2, 1).weight
    with pytest.raises(mlcore.InvalidParameterError, match="value is a list, not an array"):
        p.set([[1.0, 2.0]])


def test_values_beyond_float32_are_named_as_overflow() -> None:
    model = mlcore.MLP([3, 2], seed=0)
    with pytest.raises(mlcore.InvalidValueError, match=r"beyond the range of the model's "
                                                       r"dtype float32"):
        model.predict(np.full((2, 3), 1e39))


def test_binary_cross_entropy_on_several_outputs_with_one_label_each() -> None:
    model = mlcore.MLP([3, 4, 3], output_activation="sigmoid", seed=0)
    X = np.ones((4, 3), np.float32)
    with pytest.raises(mlcore.ShapeError, match=r"y of shape \(4,\) does not fit the model's "
                                                r"3 outputs"):
        model.fit(X, np.array([0, 1, 0, 1]), loss="binary_cross_entropy", verbose=False)


def test_a_torch_tensor_on_another_device_is_named() -> None:
    torch = pytest.importorskip("torch")
    with mlcore.use_backend("torch"):
        model = mlcore.MLP([3, 2], seed=0)
    with pytest.raises(mlcore.DeviceMismatchError, match="X is on meta"):
        model.predict(torch.zeros((2, 3), device="meta"))


def test_batches_take_a_numpy_batch_size() -> None:
    X = np.ones((10, 2), np.float32)
    assert len(mlcore.data.batches(X, np.zeros(10), batch_size=np.int64(4))) == 3
