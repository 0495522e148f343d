"""Models (mlcore.models): Sequential's structure, the chain rule across layers, configs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import ModelFileError
from mlcore.layers import chain, layer_from_config


def test_parameters_are_named_by_position() -> None:
    model = mlcore.Sequential([mlcore.Dense(3, 4), mlcore.Activation("relu"),
                               mlcore.Dense(4, 2, bias=False)])
    assert [n for n, _ in model.named_parameters()] == ["layers.0.weight", "layers.0.bias",
                                                        "layers.2.weight"]
    assert model.out_features == 2 and model.parameters()[0] is model.layers[0].weight


def test_chain_backpropagates_in_reverse_order(backend: Any) -> None:
    calls: list[str] = []

    class Scale(mlcore.Layer):
        def __init__(self, name: str, k: float) -> None:
            self.name, self.k = name, k

        def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> Any:
            def backprop(dY: Any) -> Any:
                calls.append(self.name)
                return dY * self.k

            return X * self.k, backprop

    X = backend.asarray(np.ones((2, 3)))
    Y, backprop = chain([Scale("a", 2.0), Scale("b", 3.0)], X, backend.xp, True)
    dX = backprop(backend.asarray(np.ones((2, 3))))
    assert calls == ["b", "a"]
    assert np.all(backend.to_numpy(Y) == 6.0) and np.all(backend.to_numpy(dX) == 6.0)


def test_config_round_trip_rebuilds_the_architecture() -> None:
    model = mlcore.MLP([4, 8, 3], activation="leaky_relu", output_activation="softmax")
    rebuilt = layer_from_config(model.config())
    assert repr(rebuilt) == repr(model) and rebuilt.config() == model.config()


@pytest.mark.parametrize("cfg", [{"type": "os.system"}, ["Dense"], {"type": "Dense"}])
def test_a_malformed_config_is_a_model_file_error(cfg: Any) -> None:
    with pytest.raises(ModelFileError):
        layer_from_config(cfg)
