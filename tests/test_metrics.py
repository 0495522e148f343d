"""Metrics against scikit-learn on every backend, accumulated over batches, and the hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import InvalidValueError, ShapeError, UnknownNameError

sk = pytest.importorskip("sklearn.metrics")

RNG = np.random.default_rng(11)
N = 97
P_BIN = RNG.random((N, 1))
P_BIN[::7] = 0.5  # ties, and values on the threshold
Y_BIN = (RNG.random(N) < 0.4).astype(np.float64)
P_MULTI = RNG.dirichlet(np.ones(4), size=N)
Y_MULTI = RNG.integers(0, 4, N)
P_REG = RNG.standard_normal((N, 3))
Y_REG = P_REG + 0.5 * RNG.standard_normal((N, 3))

BINARY = {
    "accuracy": lambda y, p: sk.accuracy_score(y, p[:, 0] > 0.5),
    "binary_accuracy": lambda y, p: sk.accuracy_score(y, p[:, 0] > 0.5),
    "precision": lambda y, p: sk.precision_score(y, p[:, 0] > 0.5),
    "recall": lambda y, p: sk.recall_score(y, p[:, 0] > 0.5),
    "f1": lambda y, p: sk.f1_score(y, p[:, 0] > 0.5),
    "auc": lambda y, p: sk.roc_auc_score(y, p[:, 0]),
    "mae": lambda y, p: sk.mean_absolute_error(y, p[:, 0]),
    "mse": lambda y, p: sk.mean_squared_error(y, p[:, 0]),
}
MULTI = {
    "accuracy": lambda y, p: sk.accuracy_score(y, p.argmax(1)),
    "precision": lambda y, p: sk.precision_score(y, p.argmax(1), average="macro",
                                                 zero_division=0),
    "recall": lambda y, p: sk.recall_score(y, p.argmax(1), average="macro", zero_division=0),
    "f1": lambda y, p: sk.f1_score(y, p.argmax(1), average="macro", zero_division=0),
}
REGRESSION = {
    "mae": sk.mean_absolute_error,
    "mse": sk.mean_squared_error,
    "rmse": lambda y, p: np.sqrt(sk.mean_squared_error(y, p)),
    "r2": sk.r2_score,
}


def _batched(backend: Any, name: str, p: np.ndarray, y: np.ndarray, size: int) -> float:
    m, state = mlcore.metric(name), None
    for s in range(0, len(p), size):
        state = m.update(state, backend.asarray(p[s:s + size]), backend.asarray(y[s:s + size]))
    return m.result(state)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_metrics_match_sklearn(backend: Any, name: str) -> None:
    want = BINARY[name](Y_BIN, P_BIN)
    assert mlcore.metric(name)(backend.asarray(P_BIN), backend.asarray(Y_BIN)) == \
        pytest.approx(want, abs=1e-12)
    assert _batched(backend, name, P_BIN, Y_BIN, 10) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("name", sorted(MULTI))
def test_multiclass_metrics_match_sklearn(backend: Any, name: str) -> None:
    want = MULTI[name](Y_MULTI, P_MULTI)
    assert _batched(backend, name, P_MULTI, Y_MULTI, 16) == pytest.approx(want, abs=1e-12)
    onehot = np.eye(4)[Y_MULTI]
    assert _batched(backend, name, P_MULTI, onehot, 50) == pytest.approx(want, abs=1e-12)


def test_macro_average_skips_classes_never_seen(backend: Any) -> None:
    p, y = np.eye(4)[[0, 1, 1, 0]], np.array([0, 1, 0, 0])  # classes 2 and 3 absent
    want = sk.precision_score(y, p.argmax(1), average="macro", zero_division=0)
    assert mlcore.metric("precision")(backend.asarray(p), backend.asarray(y)) == \
        pytest.approx(want)


@pytest.mark.parametrize("name", sorted(REGRESSION))
def test_regression_metrics_match_sklearn(backend: Any, name: str) -> None:
    want = REGRESSION[name](Y_REG, P_REG)
    assert _batched(backend, name, P_REG, Y_REG, 13) == pytest.approx(want, rel=1e-10)
    p32, y32 = P_REG.astype(np.float32), Y_REG.astype(np.float32)
    assert _batched(backend, name, p32, y32, 8) == pytest.approx(want, rel=1e-5)


def test_r2_of_a_constant_target(backend: Any) -> None:
    y = np.ones((5, 1))
    assert mlcore.metric("r2")(backend.asarray(y), backend.asarray(y)) == 1.0
    assert mlcore.metric("r2")(backend.asarray(y * 2), backend.asarray(y)) == 0.0


def test_metric_errors(backend: Any) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'auc'"):
        mlcore.metric("aucc")
    with pytest.raises(InvalidValueError, match="needs both classes"):
        mlcore.metric("auc")(backend.asarray(P_BIN[:5]), backend.asarray(np.ones(5)))
    with pytest.raises(ShapeError, match="class indices of shape"):
        mlcore.metric("auc")(backend.asarray(P_MULTI), backend.asarray(Y_MULTI[:, None]))
    with pytest.raises(ShapeError, match="does not fit"):
        mlcore.metric("mse")(backend.asarray(P_REG), backend.asarray(Y_REG[:, :2]))


def test_builtin_metric_names() -> None:
    assert set(mlcore.metric_names()) >= {"accuracy", "binary_accuracy", "precision", "recall",
                                          "f1", "auc", "mae", "mse", "rmse", "r2"}


def test_a_plugin_registers_a_metric(make_dist: Any) -> None:
    make_dist("mlcore-maxerr", "maxerr_plugin", """
        from mlcore import hookimpl
        from mlcore.metrics import Metric
        from array_api_compat import array_namespace

        class MaxError(Metric):
            name = "max_error"

            def update(self, state, y_pred, y_true):
                xp = array_namespace(y_pred)
                e = xp.max(xp.abs(y_pred - xp.reshape(y_true, y_pred.shape)))
                return e if state is None else xp.maximum(state, e)

            def result(self, state):
                return float(state)

        @hookimpl
        def mlcore_metrics():
            return {"max_error": MaxError}
    """)
    assert "max_error" in mlcore.metric_names()
    model = mlcore.MLP([2, 1], seed=0)
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.0, 1.0])
    h = model.fit(X, y, loss="mse", metrics=["max_error"], epochs=1, verbose=False)
    assert h["max_error"][0] >= 0.0


@pytest.mark.parametrize("name", ["accuracy", "binary_accuracy", "precision", "recall", "f1",
                                  "auc", "mae", "mse", "rmse", "r2"])
def test_builtin_metrics_pass_the_kit(name: str) -> None:
    from mlcore.testing import check_metric

    refs = {"auc": lambda p, y: sk.roc_auc_score(y, p[:, 0]),
            "f1": lambda p, y: sk.f1_score(y, p[:, 0] > 0.5),
            "mse": lambda p, y: sk.mean_squared_error(y, p[:, 0])}
    check_metric(name, reference=refs.get(name))


def test_the_kit_catches_a_metric_that_forgets_batches(backend: Any) -> None:
    from mlcore.metrics import MAE
    from mlcore.testing import check_metric

    class LastBatchOnly(MAE):
        name = "last_only"

        def update(self, state: Any, y_pred: Any, y_true: Any) -> Any:
            return super().update(None, y_pred, y_true)

    with pytest.raises(AssertionError, match="7 batches give"):
        check_metric(LastBatchOnly, backend)


# -- round 3: garbage in is refused, as scikit-learn refuses it --------------------------------
@pytest.mark.parametrize("name", ["accuracy", "precision", "recall", "f1", "auc",
                                  "binary_accuracy"])
def test_classification_metrics_refuse_nan_predictions(name: str) -> None:
    p = np.full((N, 1), np.nan)
    with pytest.raises(InvalidValueError, match="y_pred holds 97 NaN or infinite"):
        mlcore.metric(name)(p, Y_BIN)


@pytest.mark.parametrize("name", ["accuracy", "precision", "auc", "f1"])
def test_classification_metrics_refuse_a_continuous_target(name: str) -> None:
    with pytest.raises(InvalidValueError, match=r"not class labels.*'mae', 'mse'"):
        mlcore.metric(name)(P_BIN, P_BIN[:, 0] * 3.0)
    with pytest.raises(InvalidValueError, match="not class labels"):
        mlcore.metric("accuracy")(P_MULTI, Y_MULTI + 0.5)


def test_multiclass_auc_is_sklearns_one_vs_rest_macro(backend: Any) -> None:
    sk = pytest.importorskip("sklearn.metrics")
    expected = sk.roc_auc_score(Y_MULTI, P_MULTI, multi_class="ovr", average="macro")
    auc = mlcore.metric("auc")
    got = auc(backend.asarray(P_MULTI), backend.asarray(Y_MULTI))
    assert got == pytest.approx(expected, rel=1e-6)
    onehot = np.eye(4)[Y_MULTI]
    assert auc(backend.asarray(P_MULTI), backend.asarray(onehot)) == pytest.approx(expected,
                                                                                   rel=1e-6)
    labels = (RNG.random((N, 3)) > 0.5).astype(np.float64)  # multilabel: macro over labels
    scores = RNG.random((N, 3))
    assert auc(backend.asarray(scores), backend.asarray(labels)) == pytest.approx(
        sk.roc_auc_score(labels, scores, average="macro"), rel=1e-6)
