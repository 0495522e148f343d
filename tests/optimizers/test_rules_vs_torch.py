"""Optimisers against torch.optim: same initial parameters and gradients, several steps,
float64, on every backend; in-place updates; errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import host, rel_err

import mlcore
from mlcore.arrays.namespace import writes_in_place
from mlcore.errors import InvalidParameterError, UnknownNameError
from mlcore.layers import Parameter
from mlcore.optimizers import get_optimizer

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.2}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.02, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "centered": True, "eps": 1e-6}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.2}),
]
SHAPES = [(3, 4), (4,), (1,)]
STEPS = 6


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=lambda c: str(c))
def test_optimiser_matches_torch(backend: Any, name: str, kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    start = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    ours = [Parameter(backend.asarray(v)) for v in start]
    theirs = [torch.tensor(v, requires_grad=True) for v in start]
    opt = getattr(mlcore, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    for step_grads in grads:
        for p, t, g in zip(ours, theirs, step_grads, strict=True):
            p.grad = backend.asarray(g)
            t.grad = torch.from_numpy(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs, strict=True):
        assert rel_err(host(backend, p.value), t.detach().numpy()) <= 1e-5
        assert rel_err(host(backend, p.value), t.detach().numpy()) <= 1e-12  # in fact exact


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_updates_happen_in_place_and_skip_missing_gradients(backend: Any, name: str) -> None:
    p, q = Parameter(backend.asarray(np.ones(3))), Parameter(backend.asarray(np.ones(2)))
    opt = get_optimizer(name, [p, q], lr=0.1)
    before = p.value
    p.grad = backend.asarray(np.full(3, 2.0))
    opt.step()
    # written into the same array where the backend allows it (JAX's arrays are immutable)
    assert (p.value is before) == writes_in_place(before)
    assert np.all(host(backend, p.value) < 1.0) and np.all(host(backend, q.value) == 1.0)
    opt.zero_grad()
    assert p.grad is None


def test_named_optimisers_take_their_default_learning_rate(backend: Any) -> None:
    params = [Parameter(backend.asarray(np.ones(2)))]
    assert get_optimizer("sgd", params).lr == 0.01
    assert get_optimizer("adam", params).lr == 0.001
    assert get_optimizer("AdamW", params, lr=0.5).lr == 0.5
    opt = mlcore.SGD(params, lr=0.3)
    assert get_optimizer(opt, params) is opt


def test_optimiser_errors(backend: Any) -> None:
    params = [Parameter(backend.asarray(np.ones(2)))]
    with pytest.raises(InvalidParameterError, match="non-empty iterable of mlcore Parameters"):
        mlcore.Adam([])
    with pytest.raises(InvalidParameterError, match="lr must be a finite number in"):
        mlcore.SGD(params, lr=-1.0)
    with pytest.raises(InvalidParameterError, match="nesterov=True needs momentum"):
        mlcore.SGD(params, nesterov=True)
    with pytest.raises(InvalidParameterError, match=r"betas\[1\] must be a finite number in"):
        mlcore.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(UnknownNameError, match="Known: adagrad, adam, adamw, rmsprop, sgd"):
        get_optimizer("lamb", params)
    with pytest.raises(InvalidParameterError, match="lr applies when optimizer is a name"):
        get_optimizer(mlcore.SGD(params), params, lr=0.1)
