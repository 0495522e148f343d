"""Dropout, LayerNorm and BatchNorm against torch.nn and finite differences, training and
inference modes, running statistics saved with the model, MLP(dropout=, norm=), summary()."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import Box, host, numeric_grads, rel_err

import mlcore
from mlcore.errors import DTypeError, InvalidParameterError, ShapeError

RNG = np.random.default_rng(21)


def _torch_layer(torch: Any, layer: Any) -> Any:
    if isinstance(layer, mlcore.LayerNorm):
        t = torch.nn.LayerNorm(layer.num_features, eps=layer.eps, dtype=torch.float64)
    else:
        t = torch.nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                 dtype=torch.float64)
    return t


@pytest.mark.parametrize("kind", ["layer", "batch", "batch-eval"])
def test_norms_match_torch(backend: Any, kind: str) -> None:
    torch = pytest.importorskip("torch")
    layer = (mlcore.LayerNorm(5, dtype="float64") if kind == "layer"
             else mlcore.BatchNorm(5, momentum=0.3, dtype="float64"))
    ref = _torch_layer(torch, layer)
    gamma, beta = RNG.uniform(0.5, 1.5, 5), RNG.standard_normal(5)
    layer.weight.value, layer.bias.value = backend.asarray(gamma), backend.asarray(beta)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    for _ in range(3):  # running statistics after a few training batches
        x = 2.0 + 3.0 * RNG.standard_normal((7, 5))
        layer.forward(backend.asarray(x))
        ref(torch.from_numpy(x))
    if kind == "batch-eval":
        layer.training = False
        ref.eval()
    x, dy = RNG.standard_normal((7, 5)), RNG.standard_normal((7, 5))
    xt = torch.from_numpy(x).requires_grad_(True)
    layer.zero_grad()
    y, backprop = layer.forward(backend.asarray(x))
    dx = backprop(backend.asarray(dy))
    yt = ref(xt)
    (yt * torch.from_numpy(dy)).sum().backward()
    assert rel_err(host(backend, y), yt.detach().numpy()) <= 1e-12
    assert rel_err(host(backend, dx), xt.grad.numpy()) <= 1e-10
    assert rel_err(host(backend, layer.weight.grad), ref.weight.grad.numpy()) <= 1e-10
    assert rel_err(host(backend, layer.bias.grad), ref.bias.grad.numpy()) <= 1e-12
    if kind != "layer":
        assert rel_err(host(backend, layer.running_mean.value), ref.running_mean.numpy()) < 1e-12
        assert rel_err(host(backend, layer.running_var.value), ref.running_var.numpy()) < 1e-12


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_gradients_by_finite_differences(backend: Any, norm: str) -> None:
    model = mlcore.MLP([3, 4, 2], activation="tanh", seed=0, dtype="float64", norm=norm)
    xp = backend.xp
    X = backend.asarray(RNG.standard_normal((6, 3)))
    R = backend.asarray(RNG.standard_normal((6, 2)))
    box = Box(X)

    def value() -> Any:
        return xp.sum(model.forward(box.value)[0] * R)  # forward: training mode

    model.zero_grad()
    dX = model.forward(X)[1](R)
    expected = numeric_grads(backend, value, model.parameters())
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        # a bias before BatchNorm has gradient 0 (the batch mean removes it): compare absolutely
        np.testing.assert_allclose(host(backend, p.grad), want, rtol=1e-6, atol=1e-8,
                                   err_msg=name)
    assert rel_err(host(backend, dX), numeric_grads(backend, value, [box])[0]) < 1e-6


def test_dropout_in_training_and_inference(backend: Any) -> None:
    layer = mlcore.Dropout(0.3, seed=4)
    x = backend.asarray(np.ones((200, 50)))
    y, backprop = layer.forward(x)
    yh = host(backend, y)
    np.testing.assert_allclose(np.unique(yh), [0.0, 1 / 0.7], rtol=1e-12)
    assert abs((yh == 0).mean() - 0.3) < 0.02
    dx = host(backend, backprop(backend.asarray(np.full((200, 50), 2.0))))
    np.testing.assert_allclose(dx, 2.0 * yh)  # the same mask, scaled alike
    again = host(backend, mlcore.Dropout(0.3, seed=4).forward(x)[0])
    np.testing.assert_array_equal(again, yh)
    layer.training = False
    np.testing.assert_array_equal(host(backend, layer.forward(x)[0]), host(backend, x))
    with pytest.raises(InvalidParameterError, match=r"rate must be a probability in \[0, 1\)"):
        mlcore.Dropout(1.0)


def test_dropout_matches_torch_statistics(backend: Any) -> None:
    torch = pytest.importorskip("torch")
    x = np.ones((400, 100))
    ours = host(backend, mlcore.Dropout(0.25, seed=0).forward(backend.asarray(x))[0])
    theirs = torch.nn.Dropout(0.25)(torch.from_numpy(x)).numpy()
    assert set(np.unique(ours)) == set(np.unique(theirs))
    assert abs(ours.mean() - theirs.mean()) < 0.02


def test_modes_fit_trains_predict_infers(backend: Any) -> None:
    X = RNG.standard_normal((64, 4))
    y = (X[:, 0] > 0).astype(np.float64)
    model = mlcore.MLP([4, 16, 1], activation="relu", output_activation="sigmoid", seed=1,
                       dropout=0.5, norm="batch")
    assert model.has_modes() and all(model.modes())
    model.eval()
    assert not any(model.modes())
    model.fit(X, y, loss="binary_cross_entropy", epochs=2, verbose=False)
    assert not any(model.modes())  # fit restores the mode it found
    p1, p2 = host(backend, model.predict(X)), host(backend, model(backend.asarray(
        X.astype(np.float32))))
    np.testing.assert_array_equal(p1, p2)  # inference: no dropout, running statistics
    model.train()
    np.testing.assert_array_equal(host(backend, model.predict(X)), p1)
    assert all(model.modes())
    Xa, ya = backend.asarray(X.astype(np.float32)), backend.asarray(y.reshape(-1, 1).astype(
        np.float32))
    model.eval()
    model.train_step(Xa, ya, "binary_cross_entropy", "sgd")
    assert all(model.modes())  # train_step trains


def test_running_statistics_are_saved_and_loaded(backend: Any, tmp_path: Any) -> None:
    X = RNG.standard_normal((32, 4)) * 3 + 1
    model = mlcore.MLP([4, 6, 2], seed=0, norm="batch", dropout=0.2, dtype="float64")
    model.fit(X, X[:, :2], loss="mse", epochs=2, verbose=False)
    names = [n for n, _ in model.named_buffers()]
    assert names == ["layers.1.running_mean", "layers.1.running_var"]
    model.save(tmp_path / "m.safetensors")
    loaded = mlcore.load(tmp_path / "m.safetensors")
    for (n, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers(), strict=True):
        np.testing.assert_array_equal(host(backend, a.value), host(backend, b.value), n)
    np.testing.assert_array_equal(host(backend, model.predict(X)),
                                  host(backend, loaded.predict(X)))
    assert repr(loaded) == repr(model)


def test_mlp_layout_and_errors(backend: Any) -> None:
    m = mlcore.MLP([3, 5, 5, 1], seed=0, dropout=0.1, norm="layer",
                   output_activation="sigmoid")
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["Dense", "LayerNorm", "Activation", "Dropout", "Dense", "LayerNorm",
                     "Activation", "Dropout", "Dense", "Activation"]
    with pytest.raises(InvalidParameterError, match="norm must be None, 'layer' or 'batch'"):
        mlcore.MLP([3, 1], norm="group")
    bn = mlcore.BatchNorm(3)
    with pytest.raises(ShapeError, match="at least 2 samples per batch"):
        bn.forward(backend.asarray(np.ones((1, 3), dtype=np.float32)))
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 3\)"):
        bn.forward(backend.asarray(np.ones((4, 2), dtype=np.float32)))
    with pytest.raises(DTypeError, match="float32 parameters but received .*float64 input"):
        mlcore.LayerNorm(3).forward(backend.asarray(np.ones((4, 3))))


def test_summary_table(backend: Any) -> None:
    m = mlcore.MLP([30, 16, 1], activation="relu", output_activation="sigmoid", seed=0,
                   norm="batch")
    text = m.summary(print_fn=None)
    lines = text.splitlines()
    assert "0: Dense(30, 16, bias=True)" in lines[4] and lines[4].rstrip().endswith("496")
    assert "(None, 16)" in lines[5] and lines[5].rstrip().endswith("32")
    assert "Trainable parameters: 545" in text
    assert "Non-trainable (BatchNorm statistics): 32" in text
    assert "Total: 577" in text
