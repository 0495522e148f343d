"""Training that diverges stops loudly: a NaN or infinite loss during ``fit`` is an error
naming the epoch, the batch and the likely cause, and the model keeps finite weights."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import InvalidParameterError, NonFiniteError


def _data(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _finite(model: mlcore.Sequential, X: Any) -> bool:
    b = model.backend
    weights = all(np.isfinite(b.to_numpy(p.value)).all() for p in model.parameters())
    return weights and bool(np.isfinite(b.to_numpy(model.predict(X))).all())


@pytest.fixture(autouse=True)
def _quiet_numpy() -> Any:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@pytest.mark.parametrize(("lr", "batch_size"), [(1e4, 32), (1e3, 64), (3e2, 200)])
def test_a_huge_learning_rate_stops_with_finite_weights(backend: Any, lr: float,
                                                        batch_size: int) -> None:
    X, y = _data()
    model = mlcore.MLP([4, 16, 2], seed=0)
    with pytest.raises(NonFiniteError, match=rf"loss became (nan|inf|-inf) at epoch \d+, "
                                             rf"batch \d+\. Likely cause: lr={lr:g} is too"):
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=lr, epochs=30,
                  batch_size=batch_size, verbose=False)
    assert _finite(model, X)


def test_huge_inputs_are_named_before_any_update(backend: Any) -> None:
    X, _ = _data()
    model = mlcore.MLP([4, 8, 1], seed=0)
    before = [backend.to_numpy(p.value).copy() for p in model.parameters()]
    with pytest.raises(NonFiniteError, match=r"epoch 1, batch 1, before any update.*"
                                             r"\|X\| = 3\.\d+e\+30: standardise"):
        model.fit(X * 1e30, X[:, :1] * 1e30, loss="mse", epochs=2, verbose=False)
    after = [backend.to_numpy(p.value) for p in model.parameters()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_error_carries_the_loss(backend: Any) -> None:
    X, y = _data()
    with pytest.raises(NonFiniteError) as info:
        mlcore.MLP([4, 16, 2], seed=0).fit(X, y, loss="cross_entropy", optimizer="sgd",
                                           lr=1e4, epochs=5, seed=0, verbose=False)
    # The loss overflows to inf or becomes nan depending on the batch order: either is carried.
    assert not np.isfinite(info.value.obj) and isinstance(info.value, FloatingPointError)


def test_warn_trains_on_and_ignore_does_not_check(backend: Any) -> None:
    X, y = _data()
    with pytest.warns(RuntimeWarning, match="Training goes on"):
        h = mlcore.MLP([4, 16, 2], seed=0).fit(X, y, loss="cross_entropy", optimizer="sgd",
                                               lr=1e4, epochs=3, verbose=False,
                                               on_nonfinite="warn")
    assert np.isnan(h["loss"][-1])
    h = mlcore.MLP([4, 16, 2], seed=0).fit(X, y, loss="cross_entropy", optimizer="sgd",
                                           lr=1e4, epochs=3, verbose=False,
                                           on_nonfinite="ignore")
    assert np.isnan(h["loss"][-1])
    with pytest.raises(InvalidParameterError, match="on_nonfinite must be one of"):
        mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy", on_nonfinite="skip")


def test_the_guard_changes_nothing_when_training_is_finite(backend: Any) -> None:
    X, y = _data()
    runs = []
    for mode in ("raise", "ignore"):
        model = mlcore.MLP([4, 8, 2], seed=0)
        h = model.fit(X, y, loss="cross_entropy", epochs=3, seed=1, verbose=False,
                      on_nonfinite=mode)
        runs.append((h, [backend.to_numpy(p.value) for p in model.parameters()]))
    if backend.name == "jax":  # compiled: "raise" adds a select per array (a batch with a
        # non-finite loss keeps the old arrays), which XLA fuses into another program, so
        # the results agree to rounding rather than bit for bit
        np.testing.assert_allclose(runs[0][0]["loss"], runs[1][0]["loss"], rtol=1e-6)
        for a, b in zip(runs[0][1], runs[1][1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        return
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_a_nonfinite_validation_loss_stops_training(backend: Any) -> None:
    X, _ = _data()
    model = mlcore.MLP([4, 8, 1], seed=0)
    big = np.full((4, 4), 3e38, dtype=np.float32)
    with pytest.raises(NonFiniteError, match="validation loss became .* validation_data"):
        model.fit(X, X[:, :1], loss="mse", epochs=2, verbose=False,
                  validation_data=(big, np.zeros((4, 1), np.float32)))


def test_adam_with_eps_zero_is_refused_not_nan() -> None:
    with pytest.raises(InvalidParameterError, match=r"eps must be a finite number in \(0"):
        mlcore.Adam(mlcore.MLP([2, 2], seed=0).parameters(), eps=0.0)


# -- round 3: the guard's advice ------------------------------------------------------------
class _Opt:
    def __init__(self, lr: float, eps: float | None = None) -> None:
        self.lr = lr
        if eps is not None:
            self.eps = eps


def _guard_message(opt: Any, losses: list[float], nan_weight: bool = False) -> str:
    from mlcore.training.guards import NonFiniteGuard

    X, _ = _data()
    model = mlcore.MLP([4, 8, 2], seed=0)
    guard = NonFiniteGuard(model, model.backend.asarray(X.astype(np.float32)), 0.01, "raise")
    guard.optimizer = opt
    guard.start_epoch(0)
    for value in losses:
        guard(value)
    if nan_weight:
        xp = model.namespace(model.parameters()[0].value)
        p = model.parameters()[-1]
        p.set(xp.full(p.shape, math.nan, dtype=p.value.dtype))
    with pytest.raises(NonFiniteError) as info:
        guard(math.nan)
    return str(info.value)


def test_the_guard_names_the_scheduled_rate_at_the_failing_batch() -> None:
    opt = _Opt(0.01)
    from mlcore.training.guards import NonFiniteGuard

    assert NonFiniteGuard.__init__.__code__.co_varnames[1:5] == ("model", "X", "lr", "mode")
    opt.lr = 1e4  # a schedule raised it after fit started
    text = _guard_message(opt, [0.7, 5.0, 900.0])
    assert "lr=10000 is too large" in text and "lr=0.01" not in text


def test_the_guard_blames_eps_zero_not_the_rate() -> None:
    text = _guard_message(_Opt(0.01, eps=0.0), [0.7, 0.6])
    assert "eps=0" in text and "too large" not in text


def test_a_nan_from_moderate_weights_is_not_blamed_on_the_rate() -> None:
    text = _guard_message(_Opt(0.01), [0.7, 0.6, 0.5], nan_weight=True)
    assert "0/0" in text and "too large" not in text
