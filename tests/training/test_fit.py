"""Training: fused loss gradients against finite differences of the registered losses,
fit/predict/evaluate, the conversion boundary, determinism, progress and errors, on every
backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import host, numeric_grads, rel_err

import mlcore
from mlcore.errors import (
    BackendMismatchError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    ShapeError,
)

RNG = np.random.default_rng(99)


def _blobs(n: int = 60, classes: int = 3, features: int = 4, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, features)) * 4
    return (centres[y] + rng.standard_normal((n, features))).astype(np.float32), y


def _sgd_gradients(backend: Any, model: Any, loss: Any, X: Any, y: Any) -> list[np.ndarray]:
    """The gradient one train_step applied, read back from a plain SGD step of lr 1."""
    before = [host(backend, p.value) for p in model.parameters()]
    model.train_step(X, y, loss, mlcore.SGD(model.parameters(), lr=1.0))
    return [b - host(backend, p.value) for b, p in zip(before, model.parameters(), strict=True)]


@pytest.mark.parametrize(("output", "loss_name", "target"), [
    ("softmax", "cross_entropy", "labels"),
    ("softmax", "cross_entropy", "rows"),
    (None, "cross_entropy", "labels"),
    ("sigmoid", "binary_cross_entropy", "binary"),
    (None, "mse", "regression"),
])
def test_train_step_gradient_matches_finite_differences(
        backend: Any, output: str | None, loss_name: str, target: str) -> None:
    out = 1 if target == "binary" else 3
    model = mlcore.MLP([4, 5, out], activation="tanh", output_activation=output, seed=2,
                       dtype="float64")
    X = backend.asarray(RNG.standard_normal((7, 4)))
    labels = RNG.integers(0, 3, 7)
    y = {"labels": backend.asarray(labels),
         "rows": backend.asarray(np.eye(3)[labels]),
         "binary": backend.asarray(RNG.integers(0, 2, (7, 1)).astype(np.float64)),
         "regression": backend.asarray(RNG.standard_normal((7, 3)))}[target]
    logits = output is None and loss_name != "mse"
    fn = mlcore.loss(loss_name, from_logits=True) if logits else mlcore.loss(loss_name)
    expected = numeric_grads(backend, lambda: fn.forward(model(X), y), model.parameters())
    got = _sgd_gradients(backend, model, loss_name, X, y)
    for g, want in zip(got, expected, strict=True):
        assert rel_err(g, want) < 1e-6


def test_label_smoothing_loss_object_is_fused_and_exact(backend: Any) -> None:
    model = mlcore.MLP([4, 3], output_activation="softmax", seed=0, dtype="float64")
    X = backend.asarray(RNG.standard_normal((5, 4)))
    y = backend.asarray(RNG.integers(0, 3, 5))
    fn = mlcore.loss("cross_entropy", label_smoothing=0.1)
    expected = numeric_grads(backend, lambda: fn.forward(model(X), y), model.parameters())
    for g, want in zip(_sgd_gradients(backend, model, fn, X, y), expected, strict=True):
        assert rel_err(g, want) < 1e-6


def test_fit_learns_and_reports_history(backend: Any) -> None:
    X, y = _blobs()
    model = mlcore.MLP([4, 16, 3], output_activation="softmax", seed=0)
    history = model.fit(X, y, loss="cross_entropy", lr=0.02, epochs=15, batch_size=16, seed=0,
                        validation_data=(X[:20], y[:20]), verbose=False)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 15 for v in history.values())
    assert history["loss"][-1] < history["loss"][0] and history["accuracy"][-1] > 0.9
    result = model.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"} and result["accuracy"] > 0.9
    probs = model.predict(X)
    assert backend.owns(probs) and tuple(probs.shape) == (60, 3)
    assert np.allclose(host(backend, probs).sum(axis=1), 1.0, atol=1e-5)
    manual = float(np.mean(host(backend, probs).argmax(axis=1) == y))
    assert result["accuracy"] == pytest.approx(manual)


def test_evaluate_matches_the_registered_loss(backend: Any) -> None:
    X, y = _blobs(n=30)
    model = mlcore.MLP([4, 8, 3], output_activation="softmax", seed=1, dtype="float64")
    probs = model.predict(X)
    want = float(mlcore.loss("cross_entropy").forward(probs, backend.asarray(y)))
    assert model.evaluate(X, y, loss="cross_entropy")["loss"] == pytest.approx(want, rel=1e-10)
    assert model.evaluate(X, y, loss="cross_entropy", batch_size=7)["loss"] == pytest.approx(
        want, rel=1e-10)


def test_regression_and_optimizer_instances(backend: Any) -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    y = 2 * x + 1
    model = mlcore.MLP([1, 8, 1], activation="tanh", seed=0)
    opt = mlcore.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = model.fit(x, y, loss="mse", optimizer=opt, epochs=30, batch_size=16, seed=0,
                        verbose=False)
    assert set(history) == {"loss"} and history["loss"][-1] < 0.01 * history["loss"][0]


def test_same_seed_same_backend_is_reproducible(backend: Any) -> None:
    X, y = _blobs()
    runs = []
    for _ in range(2):
        model = mlcore.MLP([4, 8, 3], output_activation="softmax", seed=5)
        history = model.fit(X, y, loss="cross_entropy", epochs=3, batch_size=8, seed=11,
                            verbose=False)
        runs.append((history, [backend.to_numpy(p.value) for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_predict_converts_host_data_and_batches(backend: Any) -> None:
    model = mlcore.MLP([3, 4, 2], seed=0)
    data = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # a list of ints: converted to float32
    full = model.predict(data)
    assert backend.owns(full) and full.dtype == backend.xp.float32
    batched = model.predict(data, batch_size=2)  # BLAS may round other shapes differently
    assert np.allclose(host(backend, full), host(backend, batched), rtol=1e-6, atol=1e-6)
    direct = model(backend.asarray(np.asarray(data, dtype=np.float32)))
    assert np.array_equal(host(backend, full), host(backend, direct))


def test_numpy_data_is_converted_once_at_the_boundary(backend: Any) -> None:
    X, y = _blobs(n=16)  # NumPy arrays, whatever the backend
    model = mlcore.MLP([4, 3], output_activation="softmax", seed=0)
    model.fit(X.astype(np.float64), y, loss="cross_entropy", epochs=1, verbose=False)
    out = model.predict(X)
    assert backend.owns(out) and out.dtype == backend.xp.float32
    assert set(model.evaluate(X, y)) == {"loss", "accuracy"}


def test_train_step_returns_a_device_scalar_and_caches(backend: Any) -> None:
    X, y = _blobs(n=8)
    model = mlcore.MLP([4, 3], output_activation="softmax", seed=0)
    opt = mlcore.Adam(model.parameters())
    Xb, yb = backend.asarray(X), backend.asarray(y)
    first = model.train_step(Xb, yb, "cross_entropy", opt)
    assert backend.owns(first) and first.shape == ()
    step = model._step_cache
    model.train_step(Xb, yb, "cross_entropy", opt)
    assert model._step_cache is step and opt.steps == [2, 2]


def test_progress_bar_only_when_asked(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    X, y = _blobs(n=16)
    model = mlcore.MLP([4, 3], output_activation="softmax", seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=2, batch_size=8)  # "auto": not a terminal
    assert capsys.readouterr().err == ""
    model.fit(X, y, loss="cross_entropy", epochs=2, batch_size=8, verbose=True)
    assert "4/4" in capsys.readouterr().err


def test_data_errors(backend: Any) -> None:
    X, y = _blobs(n=64)
    model = mlcore.MLP([4, 3], output_activation="softmax", seed=0)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidValueError, match="X contains 1 NaN"):
        model.fit(bad, y, loss="cross_entropy", verbose=False)
    with pytest.raises(InvalidValueError, match=r"class indices in \[0, 2\].*from 1 to 3"):
        model.fit(X, np.where(y == 0, 3, y), loss="cross_entropy", verbose=False)
    with pytest.raises(DTypeError, match="must be integer class indices"):
        model.fit(X, y.astype(np.float32), loss="cross_entropy", verbose=False)
    with pytest.raises(ShapeError, match="same number"):
        model.fit(X, y[:-1], loss="cross_entropy", verbose=False)
    with pytest.raises(InvalidParameterError, match="epochs must be a positive integer"):
        model.fit(X, y, loss="cross_entropy", epochs=0)
    with pytest.raises(InvalidParameterError, match="verbose must be"):
        model.fit(X, y, loss="cross_entropy", verbose="loud")
    with pytest.raises(InvalidParameterError, match="evaluate needs a loss"):
        mlcore.MLP([4, 3], seed=0).evaluate(X, y)
    with pytest.raises((DTypeError, InvalidValueError), match="X"):  # backends differ here
        model.predict([["a", "b", "c", "d"]])
    with pytest.raises(InvalidValueError, match="rectangular list or array of numbers"):
        model.predict([[1, 2, 3, 4], [5]])


def test_wrong_feature_count_in_fit(backend: Any) -> None:
    model = mlcore.MLP([784, 10], output_activation="softmax", seed=0)
    X = np.zeros((64, 783), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"Dense expected input with 784 features, received "
                                         r"shape \(32, 783\)\."):
        model.fit(X, np.zeros(64, dtype=np.int64), loss="cross_entropy", batch_size=32,
                  verbose=False)


def test_binary_targets_and_nan_targets(backend: Any) -> None:
    model = mlcore.MLP([2, 1], output_activation="sigmoid", seed=0)
    X = [[0, 0], [0, 1], [1, 0], [1, 1]]
    with pytest.raises(InvalidValueError, match=r"target in \[0, 1\]"):
        model.fit(X, [0, 2, 1, 0], loss="binary_cross_entropy", verbose=False)
    with pytest.raises(InvalidValueError, match="y contains 1 NaN"):
        model.fit(X, [0, float("nan"), 1, 0], loss="mse", verbose=False)


def test_train_step_never_converts_between_backends() -> None:
    if "strict" not in mlcore.backend_names(available_only=True):
        pytest.skip("needs the strict backend")
    with mlcore.use_backend("strict"):
        model = mlcore.MLP([2, 1], seed=0)
    step = mlcore.make_train_step(model, "mse", "sgd")
    with pytest.raises(BackendMismatchError, match="X is a numpy array"):
        step(np.zeros((1, 2), dtype=np.float32), np.zeros((1, 1), dtype=np.float32))


def _logits_oracle(name: str, z: Any, t: Any) -> tuple[float, Any]:
    """Mean loss from logits and its gradient in float64, written here (eq. 1.15/1.16)."""
    if name == "cross_entropy":
        shifted = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1))
        rows = np.arange(len(t))
        p = np.exp(shifted - lse[:, None])
        y = np.eye(z.shape[1])[t]
        return float(np.mean(lse - shifted[rows, t])), (p - y) / len(t)
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return float(np.mean(np.maximum(z, 0) - z * t + np.log1p(e))), (sig - t) / z.size


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy"])
def test_training_loss_from_logits_matches_a_float64_formula_even_at_extremes(
        backend: Any, name: str, dtype: str) -> None:
    from mlcore.training.lossplan import resolve_loss

    output = "softmax" if name == "cross_entropy" else "sigmoid"
    plan = resolve_loss(mlcore.MLP([2, 3], output_activation=output, dtype=dtype), name)
    assert plan.fused and plan.trim == 1  # the output activation folds into the loss
    z = RNG.standard_normal((6, 3)) * 5
    z[0, :] = [1e4, -1e4, 0.0]
    z[1, :] = [-1e4, -1e4, 1e4]
    t64 = RNG.integers(0, 3, 6) if name == "cross_entropy" else RNG.integers(0, 2, (6, 3))
    t = backend.asarray(t64 if name == "cross_entropy" else t64.astype(dtype))
    logits = backend.asarray(z.astype(dtype))
    value, grad = plan.value_and_grad(backend.xp, logits, t)
    assert value.dtype == logits.dtype and grad.dtype == logits.dtype
    want_value, want_grad = _logits_oracle(name, z.astype(dtype).astype(np.float64), t64)
    tol = 1e-6 if dtype == "float32" else 1e-13
    assert rel_err(host(backend, value), want_value) < tol
    assert np.allclose(host(backend, grad), want_grad, rtol=tol, atol=tol)
