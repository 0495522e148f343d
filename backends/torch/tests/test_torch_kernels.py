"""mlcore-torch's ``affine`` kernel (torch.addmm): Dense's forward within the bound
hookspecs.KERNELS states of the plain ``X @ W.T`` then ``+= b``, on every dtype."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import mlcore
from mlcore.hookspecs import KERNELS
from mlcore.layers import core


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 32, 257])
def test_dense_forward_through_addmm_is_the_formula(dtype: str, batch: int) -> None:
    assert "affine" in KERNELS
    with mlcore.use_backend("torch"):
        layer = mlcore.Dense(70, 33, dtype=dtype, seed=0)
        assert layer._affine is not None
        tdt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(batch)
        layer.bias.set(torch.randn(33, generator=gen, dtype=tdt) * 3)
        X = torch.randn(batch, 70, generator=gen, dtype=tdt) * 5
        X[0, :4] = torch.tensor([1e30, -1e30, 0.0, -0.0], dtype=tdt)
        if batch > 1:
            X[1, 0] = float("nan")
            X[-1, 1] = float("inf")
        Y, backprop = layer.forward(X)
        W, b = layer.weight.value, layer.bias.value
        plain = X @ W.T
        plain += b
        assert Y.dtype == plain.dtype and Y.shape == plain.shape
        finite = torch.isfinite(plain)
        assert torch.equal(finite, torch.isfinite(Y))
        assert torch.equal(torch.isnan(plain), torch.isnan(Y))
        assert torch.equal(Y[~finite & ~torch.isnan(Y)], plain[~finite & ~torch.isnan(plain)])
        eps = torch.finfo(tdt).eps
        bound = 4 * eps * (X.abs() @ W.abs().T + b.abs())
        assert bool(((Y - plain).abs() <= bound)[finite].all())
        dX = backprop(torch.ones_like(Y))
        assert dX.shape == X.shape


def test_a_dense_without_bias_asks_for_no_kernel() -> None:
    with mlcore.use_backend("torch"):
        layer: Any = mlcore.Dense(4, 3, bias=False)
        assert layer._affine is None
        X = torch.ones(2, 4)
        assert torch.equal(layer.forward(X)[0], X @ layer.weight.value.T)


def test_numpy_has_no_affine_kernel() -> None:
    import array_api_compat.numpy as xp

    assert core._affine_kernel(xp) is None
    assert mlcore.Dense(3, 2)._affine is None
    assert np.asarray(mlcore.Dense(3, 2)(np.ones((1, 3), np.float32))).shape == (1, 2)
