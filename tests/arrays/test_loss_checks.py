"""One meaning per loss: a name and the object built from it train alike; probability
inputs are validated (range, rows summing to 1, NaN never passing); cross-entropy refuses one
output and multi-hot rows; KL checks both inputs; the kit's defaults respect each domain and
it catches a loss that loses relative precision."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import InvalidParameterError, InvalidValueError, ShapeError
from mlcore.testing import check_loss


def _task(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > X[:, 1]).astype(np.int64) + (X[:, 2] > 0.5)


def _arr(backend: Any, rows: Any, dtype: str = "float32") -> Any:
    return backend.asarray(np.asarray(rows, dtype=dtype))


@pytest.mark.parametrize("output", [None, "softmax"])
def test_a_name_and_its_object_train_alike(backend: Any, output: str | None) -> None:
    X, y = _task()
    results = []
    for loss in ("cross_entropy", mlcore.loss("cross_entropy"), " Cross_Entropy "):
        model = mlcore.MLP([4, 16, 3], output_activation=output, seed=0)
        h = model.fit(X, y, loss=loss, epochs=10, seed=0, lr=0.01, verbose=False)
        results.append((h["loss"], h["accuracy"]))
    assert results[0] == results[1] == results[2]
    assert results[0][1][-1] > 0.8


def test_binary_name_and_object_train_alike(backend: Any) -> None:
    X, y = _task()
    y = (y > 0).astype(np.float32)
    runs = [mlcore.MLP([4, 8, 1], seed=0).fit(X, y, loss=loss, epochs=5, seed=0,
                                              verbose=False)
            for loss in ("binary_cross_entropy", mlcore.loss("binary_cross_entropy"))]
    assert runs[0] == runs[1]


def test_explicit_probabilities_on_a_logits_model_are_refused(backend: Any) -> None:
    X, y = _task()
    model = mlcore.MLP([4, 8, 3], seed=0)
    with pytest.raises(InvalidValueError, match=r"pred rows must be probability distributions"
                                                r".*from_logits=True.*output_activation="
                                                r"'softmax'"):
        model.fit(X, y, loss=mlcore.loss("cross_entropy", from_logits=False), verbose=False)


def test_logits_loss_on_a_softmax_model_is_refused(backend: Any) -> None:
    X, y = _task()
    model = mlcore.MLP([4, 8, 3], output_activation="softmax", seed=0)
    with pytest.raises(InvalidParameterError, match="softmax would be applied twice"):
        model.fit(X, y, loss=mlcore.loss("cross_entropy", from_logits=True), verbose=False)


def test_cross_entropy_on_logits_is_refused_with_the_fix(backend: Any) -> None:
    z = _arr(backend, [[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]])
    labels = backend.asarray(np.array([0, 1]))
    with pytest.raises(InvalidValueError, match="look like logits.*from_logits=True"):
        mlcore.loss("cross_entropy").forward(z, labels)
    value = mlcore.loss("cross_entropy", from_logits=True).forward(z, labels)
    assert float(value) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_rows_pass_within_the_dtype_tolerance(backend: Any, dtype: str) -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((8, 1000)) * 5
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    value = mlcore.loss("cross_entropy").forward(_arr(backend, p, dtype),
                                                 backend.asarray(rng.integers(0, 1000, 8)))
    assert np.isfinite(float(value))


def test_one_output_cross_entropy_names_binary_cross_entropy(backend: Any) -> None:
    X, y = _task()
    model = mlcore.MLP([4, 8, 1], output_activation="sigmoid", seed=0)
    with pytest.raises(ShapeError, match="2 or more classes.*binary_cross_entropy"):
        model.fit(X, (y > 0).astype(np.int64), loss="cross_entropy", verbose=False)
    with pytest.raises(ShapeError, match="binary_cross_entropy"):
        mlcore.loss("cross_entropy").forward(_arr(backend, [[1.0], [1.0]]),
                                             backend.asarray(np.array([0, 0])))


def test_multi_hot_targets_are_refused(backend: Any) -> None:
    X, _ = _task()
    Y = np.zeros((300, 3), np.float32)
    Y[:, 0] = 1
    Y[::2, 1] = 1
    with pytest.raises(InvalidValueError, match="multi-hot.*binary_cross_entropy"):
        mlcore.MLP([4, 8, 3], seed=0).fit(X, Y, loss="cross_entropy", verbose=False)
    with pytest.raises(InvalidValueError, match="target rows must be probability"):
        mlcore.loss("cross_entropy").forward(_arr(backend, np.full((2, 3), 1 / 3)),
                                             _arr(backend, [[1, 1, 0], [0, 1, 1]]))


@pytest.mark.parametrize(("pred", "target", "match"), [
    ([[0.2, 0.1, 0.1]], [[0.5, 0.25, 0.25]], "pred rows must be"),
    ([[0.5, 0.25, 0.25]], [[0.2, 0.1, 0.1]], "target rows must be"),
    ([[1.5, -0.5, 0.0]], [[0.5, 0.25, 0.25]], "pred rows must be"),
    ([[np.nan, 0.5, 0.5]], [[0.5, 0.25, 0.25]], "received NaN"),
    ([[0.5, 0.25, 0.25]], [[np.nan, 0.5, 0.5]], "received NaN"),
])
def test_kl_divergence_checks_both_inputs(backend: Any, pred: Any, target: Any,
                                          match: str) -> None:
    with pytest.raises(InvalidValueError, match=match):
        mlcore.loss("kl_divergence").forward(_arr(backend, pred), _arr(backend, target))


@pytest.mark.parametrize(("pred", "target", "label"), [
    ([[np.nan], [0.5]], [[1.0], [0.0]], "pred"),
    ([[0.3], [0.5]], [[np.nan], [0.0]], "target"),
    ([[1.2], [0.5]], [[1.0], [0.0]], "pred"),
])
def test_nan_never_passes_a_range_check(backend: Any, pred: Any, target: Any,
                                        label: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"expected {label}.*in \[0, 1\], received"):
        mlcore.loss("binary_cross_entropy").forward(_arr(backend, pred), _arr(backend, target))
    with pytest.raises(InvalidValueError, match="NaN|values from"):
        mlcore.loss("cross_entropy").forward(
            _arr(backend, [[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), backend.asarray(np.array([0, 1])))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_unit_interval_check_is_exact_at_its_ends(backend: Any, dtype: str) -> None:
    """[0, 1] is tested as min(x, 1 - x) >= 0: the next value above 1, a tiny negative one
    (normal: XLA flushes subnormals) and infinities fail; 0 and 1 pass."""
    bce = mlcore.loss("binary_cross_entropy")
    above, below = np.nextafter(np.ones(1, dtype), 2)[0], -np.finfo(dtype).smallest_normal
    bce.forward(_arr(backend, [0.0, 1.0, 0.5], dtype), _arr(backend, [1.0, 0.0, 1.0], dtype))
    for bad in (above, below, np.inf, -np.inf):
        with pytest.raises(InvalidValueError, match=r"expected pred.*in \[0, 1\]"):
            bce.forward(_arr(backend, [0.5, bad], dtype), _arr(backend, [1.0, 0.0], dtype))
        with pytest.raises(InvalidValueError, match=r"expected target in \[0, 1\]"):
            bce.backward(_arr(backend, [0.5, 0.5], dtype), _arr(backend, [1.0, bad], dtype))


@pytest.mark.parametrize(("name", "pred", "target", "match"), [
    ("binary_cross_entropy", [[1.5], [0.5]], [[2.0], [0.0]], r"expected target in \[0, 1\]"),
    ("binary_cross_entropy", [[np.nan], [0.5]], [[-1.0], [0.0]], "received values from -1"),
    ("kl_divergence", [[0.2, 0.1, 0.1]], [[0.9, 0.9, 0.9]], "target rows must be"),
    ("kl_divergence", [[np.nan, 0.5, 0.5]], [[-0.5, 1.0, 0.5]], "target rows .* -0.5"),
])
def test_target_is_named_first_when_both_inputs_are_bad(backend: Any, name: str, pred: Any,
                                                        target: Any, match: str) -> None:
    """Both inputs are checked in one pass; the message is still the target's, as before."""
    for method in ("forward", "backward", "value_and_grad"):
        with pytest.raises(InvalidValueError, match=match):
            getattr(mlcore.loss(name), method)(_arr(backend, pred), _arr(backend, target))


@pytest.mark.parametrize("labels", [[0, 4], [-1, 0], [0, 2**62], [-(2**63), 0], [2**63 - 1]])
def test_int64_labels_out_of_range_are_refused(backend: Any, labels: list[int]) -> None:
    """int64 labels are checked by one reduction (labels | (m - 1 - labels)): the first
    label outside [0, 3] either way, and the extremes of int64, are refused."""
    pred = _arr(backend, np.full((len(labels), 4), 0.25))
    with pytest.raises(InvalidValueError, match=r"class indices in \[0, 3\]"):
        mlcore.loss("cross_entropy").forward(pred, backend.asarray(np.array(labels, np.int64)))
    ok = backend.asarray(np.array([0, 3][:len(labels)], np.int64))
    mlcore.loss("cross_entropy").forward(pred[:ok.shape[0], ...], ok)


def test_from_logits_defaults_to_the_model_deciding() -> None:
    assert mlcore.loss("cross_entropy").from_logits is None
    assert mlcore.loss("binary_cross_entropy").from_logits is None
    with pytest.raises(InvalidParameterError, match="from_logits must be True or False"):
        mlcore.loss("cross_entropy", from_logits="yes")


# -- the conformance kit -----------------------------------------------------------------
@pytest.mark.mlcore_conformance("mlcore.losses")
def test_builtin_losses_pass_the_kit_with_its_default_inputs(mlcore_case: Any) -> None:
    mlcore_case.run()


class _CancellingLogCosh:
    """log(cosh(d)) as |d| + log1p(exp(-2|d|)) - log 2: cancels near d = 0."""

    name = "log_cosh_cancelling"

    def forward(self, pred: Any, target: Any) -> Any:
        from array_api_compat import array_namespace

        xp = array_namespace(pred, target)
        a = xp.abs(pred - target)
        return xp.mean(a + xp.log1p(xp.exp(-2.0 * a)) - float(np.log(2.0)))

    def backward(self, pred: Any, target: Any) -> Any:
        from array_api_compat import array_namespace

        xp = array_namespace(pred, target)
        return xp.tanh(pred - target) / float(np.prod(pred.shape))


def _log_cosh(pred: Any, target: Any) -> Any:
    d = pred - target
    big = np.abs(d) + np.log1p(np.exp(-2 * np.abs(d))) - np.log(2.0)
    return np.mean(np.where(np.abs(d) < 1e-3, d * d / 2 - d**4 / 12, big))


def test_the_kit_catches_lost_relative_precision() -> None:
    with pytest.raises(AssertionError, match=r"relative error .* at .*x 1e-08|x 1e-08.*relative"):
        check_loss(_CancellingLogCosh, "numpy", reference=_log_cosh, checks=("reference",))
    check_loss(_CancellingLogCosh, "numpy", reference=_log_cosh, checks=("reference",),
               magnitudes=())  # declared: no magnitude sweep


def test_the_kit_says_how_reference_meets_reduction() -> None:
    def per_sample(pred: Any, target: Any, **params: Any) -> Any:
        return np.mean((pred - target) ** 2, axis=1)

    check_loss("mse", "numpy", reference=per_sample, checks=("reference",))
    with pytest.raises(AssertionError, match="compared as built.*what forward returns"):
        check_loss("mse", "numpy", params={"reduction": "mean"}, reference=per_sample,
                   checks=("reference",))
