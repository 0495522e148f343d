"""fit's options object (:class:`mlcore.training.FitOptions`): the same names and defaults as
``fit``, each option refused with ``fit``'s message, and ``fit``'s signature unchanged."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.callbacks import Callback
from mlcore.errors import InvalidParameterError, MlcoreError
from mlcore.training import FitOptions
from mlcore.training.fit import fit

_EMPTY = inspect.Parameter.empty
KW = inspect.Parameter.KEYWORD_ONLY
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD

FIT_SIGNATURE = [  # (name, kind, default, annotation), as fit had them before FitOptions
    ("model", POS, _EMPTY, "LayerStack"),
    ("X", POS, _EMPTY, "ArrayLike"),
    ("y", POS, None, "ArrayLike"),
    ("loss", KW, _EMPTY, "str | LossFn"),
    ("optimizer", KW, "adam", "str | Optimizer"),
    ("lr", KW, None, "float | None"),
    ("epochs", KW, 1, "int"),
    ("batch_size", KW, 32, "int"),
    ("shuffle", KW, True, "bool"),
    ("seed", KW, None, "int | None"),
    ("validation_data", KW, None, "tuple[ArrayLike, ArrayLike] | None"),
    ("validation_split", KW, 0.0, "float"),
    ("callbacks", KW, None, "Sequence[Callback] | None"),
    ("metrics", KW, None, "Sequence[str | Metric[Any]] | None"),
    ("sample_weight", KW, None, "ArrayLike"),
    ("class_weight", KW, None, "dict[int, float] | None"),
    ("initial_epoch", KW, 0, "int"),
    ("steps_per_epoch", KW, None, "int | None"),
    ("verbose", KW, "auto", "bool | int | str"),
    ("distributed", KW, False, "bool | DataParallel"),
    ("on_nonfinite", KW, "raise", "str"),
    ("jit_compile", KW, None, "bool | None"),
]


def test_fit_signature_is_unchanged() -> None:
    sig = inspect.signature(fit)
    got = [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()]
    assert got == FIT_SIGNATURE
    assert sig.return_annotation == "dict[str, list[float]]"


def test_sequential_fit_forwards_every_option() -> None:
    params = list(inspect.signature(mlcore.Sequential.fit).parameters.values())
    assert [(p.name, p.kind) for p in params] == [
        ("self", POS), ("X", POS), ("y", POS), ("loss", KW),
        ("options", inspect.Parameter.VAR_KEYWORD)]


def test_fit_options_has_fit_s_options_with_the_same_defaults() -> None:
    fields = [(p.name, p.default) for p in inspect.signature(FitOptions).parameters.values()]
    assert fields == [(name, default) for name, kind, default, _ in FIT_SIGNATURE
                      if kind is KW]


_X = np.random.default_rng(0).standard_normal((8, 2))
_Y = _X[:, :1] * 2.0

BAD = {
    "epochs": {"epochs": 0},
    "batch_size": {"batch_size": 1.5},
    "initial_epoch negative": {"initial_epoch": -1},
    "initial_epoch not below epochs": {"initial_epoch": 3, "epochs": 2},
    "callbacks a string": {"callbacks": "EarlyStopping"},
    "callbacks not Callback": {"callbacks": [object()]},
    "seed": {"seed": -1},
    "validation_split range": {"validation_split": 1.5},
    "validation_split a bool": {"validation_split": True},
    "validation_split with validation_data": {"validation_split": 0.25,
                                              "validation_data": (_X, _Y)},
    "steps_per_epoch": {"steps_per_epoch": 0},
    "on_nonfinite": {"on_nonfinite": "skip"},
    "distributed": {"distributed": "yes"},
    "jit_compile": {"jit_compile": 1},
    "metrics a string": {"metrics": "mae"},
    "metrics unknown": {"metrics": ["no_such_metric"]},
    "verbose": {"verbose": 3},
}


@pytest.mark.parametrize("bad", BAD.values(), ids=list(BAD))
def test_fit_options_refuses_a_bad_option_with_fit_s_message(bad: dict[str, Any]) -> None:
    with pytest.raises(MlcoreError) as by_options:
        FitOptions(loss="mse", **bad)
    model = mlcore.MLP([2, 3, 1], seed=0)
    before = [np.asarray(p.value).copy() for p in model.parameters()]
    with pytest.raises(MlcoreError) as by_fit:
        fit(model, _X, _Y, loss="mse", **{"verbose": False, **bad})
    assert type(by_fit.value) is type(by_options.value)
    assert str(by_fit.value) == str(by_options.value)
    assert all(np.array_equal(np.asarray(p.value), b)
               for p, b in zip(model.parameters(), before, strict=True))


def test_options_are_checked_before_the_data() -> None:
    with pytest.raises(InvalidParameterError, match="epochs must be a positive integer"):
        fit(mlcore.MLP([2, 3, 1], seed=0), "not data", [1, 2], loss="mse", epochs=0)


def test_fit_options_stores_options_normalised_and_is_frozen() -> None:
    cb = Callback()
    opts = FitOptions(loss="mse", epochs=np.int64(3), batch_size=np.int32(4),
                      initial_epoch=np.int64(0), steps_per_epoch=np.int64(2),
                      validation_split=np.float64(0.25), callbacks=(cb,), metrics=["mae"])
    assert (type(opts.epochs), type(opts.batch_size), type(opts.initial_epoch),
            type(opts.steps_per_epoch), type(opts.validation_split)) == (int,) * 4 + (float,)
    assert opts.callbacks == [cb] and [m.name for m in opts.found_metrics] == ["mae"]
    assert FitOptions(loss="mse").callbacks == [] and FitOptions(loss="mse").found_metrics == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.epochs = 5  # type: ignore[misc]
    assert dataclasses.replace(opts, epochs=7).epochs == 7
