"""Keras, PyTorch and scikit-learn habits meet a helpful answer (issue 24)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import InvalidParameterError, UnknownNameError


@pytest.mark.parametrize(("name", "meant"), [
    ("sparse_categorical_crossentropy", "cross_entropy"),
    ("categorical_crossentropy", "cross_entropy"),
    ("CrossEntropyLoss", "cross_entropy"),
    ("BCEWithLogitsLoss", "binary_cross_entropy(from_logits=True)"),
    ("binary_crossentropy", "binary_cross_entropy"),
    ("MSELoss", "mse"),
])
def test_other_libraries_loss_names_suggest_ours_by_meaning(name: str, meant: str) -> None:
    with pytest.raises(UnknownNameError, match="another library's name") as err:
        mlcore.loss(name)
    assert f"mlcore calls it {meant}" in str(err.value)


def test_fit_with_a_keras_loss_name_says_which_of_ours(backend: Any) -> None:
    model = mlcore.MLP([2, 3], output_activation="softmax", seed=0)
    with pytest.raises(UnknownNameError, match="mlcore calls it cross_entropy"):
        model.fit(np.zeros((4, 2)), np.zeros(4, dtype=int),
                  loss="sparse_categorical_crossentropy")


def test_keras_metric_name_suggests_ours() -> None:
    with pytest.raises(UnknownNameError, match="mlcore calls it accuracy"):
        mlcore.metric("sparse_categorical_accuracy")


def test_a_misspelling_still_gets_the_closest_name() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'binary_cross_entropy'"):
        mlcore.loss("binary_crosentropy")


@pytest.mark.parametrize(("given", "ours"), [("learning_rate", "lr"), ("max_iter", "epochs"),
                                             ("random_state", "seed")])
def test_fit_names_lr_for_learning_rate(given: str, ours: str) -> None:
    model = mlcore.MLP([2, 1], seed=0)
    with pytest.raises(InvalidParameterError, match=f"fit\\(\\) takes {ours}="):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), loss="mse", **{given: 1})


def test_summary_prints_and_can_return_the_text(capsys: Any) -> None:
    model = mlcore.MLP([4, 8, 2], seed=0)
    assert model.summary() is None
    printed = capsys.readouterr().out
    text = model.summary(print_fn=None)
    assert printed == text + "\n" and "Dense(4, 8" in text
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert lines == [text]


def test_verbose_2_prints_one_line_per_epoch(capsys: Any) -> None:
    model = mlcore.MLP([2, 4, 1], seed=0)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    model.fit(x, x[:, :1], loss="mse", epochs=3, batch_size=16, verbose=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all("loss=" in line for line in err)


def test_batchnorm_warns_on_a_keras_momentum() -> None:
    with pytest.warns(UserWarning, match="Keras' momentum=0.99 is mlcore's momentum=0.01"):
        mlcore.BatchNorm(4, momentum=0.99)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlcore.BatchNorm(4, momentum=0.1)
