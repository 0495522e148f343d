"""mlcore-layers-extra: each layer through the layer kit on every backend (the pytest
marker), and trained, saved, loaded and checkpointed in a model on numpy, strict, torch and
jax."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest
from mlcore_layers_extra import Embedding, GatedDense, GaussianNoise, Residual

import mlcore
from mlcore.callbacks import ModelCheckpoint
from mlcore.plugins import registry


def _indices(rng: np.random.Generator) -> Any:
    return rng.integers(0, 6, (5, 2))


def _residual(dtype: str = "float32") -> Residual:
    return Residual([mlcore.Dense(3, 3, seed=0, dtype=dtype), mlcore.Activation("tanh"),
                     mlcore.LayerNorm(3, dtype=dtype)])


def _normal(rng: np.random.Generator) -> Any:
    return rng.normal(size=(4, 3))


@pytest.mark.mlcore_layer(GatedDense, params={"in_features": 3, "out_features": 2, "seed": 0})
def test_gated_dense_kit(mlcore_layer_case: Any) -> None:
    mlcore_layer_case.run()


@pytest.mark.mlcore_layer(Embedding, params={"num_embeddings": 6, "embedding_dim": 3,
                                             "input_length": 2, "seed": 0}, inputs=_indices)
def test_embedding_kit(mlcore_layer_case: Any) -> None:
    mlcore_layer_case.run()


@pytest.mark.mlcore_layer(GaussianNoise, params={"stddev": 0.3, "seed": 0}, inputs=_normal)
def test_gaussian_noise_kit(mlcore_layer_case: Any) -> None:
    mlcore_layer_case.run()


@pytest.mark.mlcore_layer(_residual, inputs=_normal)
def test_residual_kit(mlcore_layer_case: Any) -> None:
    mlcore_layer_case.run()


def test_registered_and_listed() -> None:
    rec = next(r for r in registry().records if r.distribution == "mlcore-layers-extra")
    assert rec.status == "loaded"
    assert sorted(rec.provides["layers"]) == ["Embedding", "GatedDense", "GaussianNoise",
                                              "Residual"]


def _model() -> mlcore.Sequential:
    return mlcore.Sequential([
        Embedding(6, 4, input_length=2, seed=0),                 # (N, 2) indices -> (N, 8)
        GaussianNoise(0.05, seed=1),
        Residual([mlcore.Dense(8, 8, seed=2), mlcore.Activation("tanh")]),
        GatedDense(8, 3, seed=3),
    ])


@pytest.mark.parametrize("name", ["numpy", "strict", "torch", "jax"])
def test_trains_saves_loads_and_checkpoints(name: str, tmp_path: pathlib.Path) -> None:
    b = registry().backends.get(name)
    if b is None or not b.is_available():
        pytest.skip(f"{name} is not usable here")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 6, (96, 2))
    y = (X[:, 0] + X[:, 1]) % 3
    with mlcore.use_backend(name):
        model = _model()
        ck = ModelCheckpoint(str(tmp_path / "ck-{epoch}.safetensors"), monitor="loss")
        h = model.fit(X, y, loss="cross_entropy", lr=0.05, epochs=15, batch_size=32, seed=0,
                      verbose=False, callbacks=[ck])
        assert h["loss"][-1] < 0.5 * h["loss"][0]
        model.save(tmp_path / "m.safetensors")
        loaded = mlcore.load(tmp_path / "m.safetensors")
        np.testing.assert_allclose(b.to_numpy(loaded.predict(X)), b.to_numpy(model.predict(X)),
                                   rtol=1e-6, atol=1e-6)
        resumed = mlcore.load_checkpoint(tmp_path / "ck-15.safetensors")
        assert resumed.epoch == 15
        np.testing.assert_allclose(b.to_numpy(resumed.model.predict(X)),
                                   b.to_numpy(model.predict(X)), rtol=1e-6, atol=1e-6)
        resumed.model.fit(X, y, loss="cross_entropy", optimizer=resumed.optimizer, epochs=16,
                          initial_epoch=resumed.epoch, batch_size=32, seed=0, verbose=False)


def test_parameter_names_and_errors() -> None:
    model = _model()
    assert [n for n, _ in model.named_parameters()] == [
        "layers.0.weight", "layers.2.layers.0.weight", "layers.2.layers.0.bias",
        "layers.3.weight", "layers.3.bias", "layers.3.gate_weight", "layers.3.gate_bias"]
    with pytest.raises(mlcore.InvalidParameterError, match="Residual cannot hold Dropout"):
        Residual([mlcore.Dropout(0.5)])
    with pytest.raises(mlcore.ShapeError, match="must keep the shape"):
        Residual([mlcore.Dense(3, 2, seed=0)])(np.zeros((2, 3), dtype="float32"))
    with pytest.raises(mlcore.ShapeError, match=r"Embedding expected indices of shape \(N, 2\)"):
        Embedding(4, 2, input_length=2)(np.zeros((3, 3), dtype="float32"))
    with pytest.raises(mlcore.InvalidParameterError, match="stddev"):
        GaussianNoise(-1.0)
