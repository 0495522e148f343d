"""mlcore-losses-extra against PyTorch (per-sample values and gradients, float32 and float64,
every backend), parameter and input errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import InvalidParameterError, InvalidValueError, ShapeError

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _sigmoid_focal(z: Any, t: Any, gamma: float = 2.0, alpha: float | None = 0.25) -> Any:
    """torchvision.ops.sigmoid_focal_loss (reduction='none'), written out in torch."""
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    return loss if alpha is None else (alpha * t + (1 - alpha) * (1 - t)) * loss


def _softmax_focal(z: Any, t: Any, gamma: float = 2.0, alpha: Any = None) -> Any:
    logp = F.log_softmax(z, dim=1)
    y = F.one_hot(t, z.shape[1]).to(z.dtype)
    w = y if alpha is None else y * torch.tensor(alpha, dtype=z.dtype)
    return -(w * (1 - logp.exp()) ** gamma * logp).sum(1)


def _regression(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 2.0, (64, 5)), rng.normal(0.0, 1.0, (64, 5))


def _binary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z = np.concatenate([rng.normal(0.0, 3.0, (60, 5)), np.resize([-1e4, 1e4, -50, 50, 0], (4, 5))])
    return z, rng.integers(0, 2, (64, 5)).astype(float)


def _labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 3.0, (64, 4)), rng.integers(0, 4, 64)


def _signs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.5, (64, 5)), rng.choice([-1.0, 1.0], (64, 5))


def _counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.5, (64, 5)), rng.poisson(3.0, (64, 5)).astype(float)


def _rates(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.05, 6.0, (64, 5)), rng.poisson(3.0, (64, 5)).astype(float)


# (name, params, data, torch per-element or per-sample function of (pred, target))
LOSSES: list[tuple[str, dict[str, Any], Any, Callable[[Any, Any], Any]]] = [
    ("huber", {}, _regression, lambda p, t: F.huber_loss(p, t, reduction="none")),
    ("huber", {"delta": 0.4}, _regression,
     lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.4)),
    ("binary_focal", {}, _binary, _sigmoid_focal),
    ("binary_focal", {"gamma": 0.5, "alpha": None}, _binary,
     lambda z, t: _sigmoid_focal(z, t, 0.5, None)),
    ("focal", {}, _labels, _softmax_focal),
    ("focal", {"gamma": 0.0}, _labels, lambda z, t: F.cross_entropy(z, t, reduction="none")),
    ("focal", {"gamma": 1.5, "alpha": [0.1, 0.2, 0.3, 0.4]}, _labels,
     lambda z, t: _softmax_focal(z, t, 1.5, [0.1, 0.2, 0.3, 0.4])),
    ("hinge", {}, _signs, lambda p, t: torch.clamp(1 - t * p, min=0)),
    ("squared_hinge", {"margin": 2.0}, _signs, lambda p, t: torch.clamp(2 - t * p, min=0) ** 2),
    ("cosine_similarity", {}, _regression, lambda p, t: 1 - F.cosine_similarity(p, t, dim=1)),
    ("poisson_nll", {}, _counts, lambda p, t: F.poisson_nll_loss(p, t, reduction="none")),
    ("poisson_nll", {"log_input": False, "full": True}, _rates,
     lambda p, t: F.poisson_nll_loss(p, t, log_input=False, full=True, reduction="none")),
]


def _per_sample(values: Any) -> Any:
    return values if values.ndim == 1 else values.mean(dim=tuple(range(1, values.ndim)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "params", "data", "fn"), LOSSES,
                         ids=[f"{n}{p or ''}" for n, p, _, _ in LOSSES])
def test_loss_matches_torch(backend: Any, agree: Any, dtype: str, name: str, params: dict[str, Any],
                            data: Any, fn: Callable[[Any, Any], Any]) -> None:
    pred, target = data(np.random.default_rng(11))
    pred = pred.astype(dtype)
    target = target.astype(dtype) if target.dtype.kind == "f" else target
    tp = torch.tensor(pred, requires_grad=True)
    want = _per_sample(fn(tp, torch.tensor(target)))
    want.mean().backward()
    pb, tb = backend.asarray(pred), backend.asarray(target)
    values = mlcore.loss(name, reduction="none", **params).forward(pb, tb)
    grad = mlcore.loss(name, **params).backward(pb, tb)
    agree(backend.to_numpy(values), want.detach().numpy(), dtype, f"{name} values")
    agree(backend.to_numpy(grad).ravel(), tp.grad.numpy().ravel(), dtype, f"{name} gradient")


# -- parameters and errors ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "match"), [
    ("huber", {"delta": -1}, "delta must be .* greater than 0"),
    ("focal", {"gamma": -2}, "gamma must be >= 0"),
    ("poisson_nll", {"log_input": "yes"}, "True or False"),
    ("hinge", {"reduction": "avg"}, "mean, sum, none"),
])
def test_bad_loss_parameters(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        mlcore.loss(name, **params)


def test_input_errors(xp: Any) -> None:
    pred, target = xp.zeros((4, 3)), xp.zeros((4, 2))
    with pytest.raises(ShapeError, match=r"pred \(4, 3\) and target \(4, 2\)"):
        mlcore.loss("huber").forward(pred, target)
    with pytest.raises(ShapeError, match=r"pred has 4 samples but target has 3 labels"):
        mlcore.loss("focal").backward(pred, xp.asarray([0, 1, 2]))
    with pytest.raises(InvalidValueError, match=r"class indices in \[0, 2\]"):
        mlcore.loss("focal").forward(pred, xp.asarray([0, 1, 2, 3]))
