"""More ways to be wrong: overflow, a fixed array library, loose parameters, a loss that
broadcasts mismatched shapes silently, and a 'mean' gradient that forgets the 1/N."""

from typing import Any

import numpy as np
from array_api_compat import array_namespace


class NaiveSoftplus:
    """log(1 + e^x) as written: e^x overflows to inf for large x."""

    def forward(self, x: Any) -> Any:
        xp = array_namespace(x)
        return xp.log(1.0 + xp.exp(x))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = array_namespace(x)
        return dy * xp.exp(x) / (1.0 + xp.exp(x))


class NumpyTanh:
    """Calls NumPy whatever the input: fine on numpy, wrong on every other backend."""

    def forward(self, x: Any) -> Any:
        return np.tanh(np.asarray(x))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        return np.asarray(dy) * (1.0 - np.asarray(y) ** 2)


class LooseParams:
    """Accepts any keyword, so a typo such as alhpa=0.1 is silently ignored."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        return dy


class BroadcastingMSE:
    """Squared error with no shape check: target (1, 3) is broadcast against pred (4, 3)."""

    def __init__(self, *, reduction: str = "mean") -> None:
        self.reduction = reduction

    def forward(self, pred: Any, target: Any) -> Any:
        xp = array_namespace(pred, target)
        values = xp.mean((pred - target) ** 2, axis=1)
        return values if self.reduction == "none" else (
            xp.mean(values) if self.reduction == "mean" else xp.sum(values))

    def backward(self, pred: Any, target: Any) -> Any:
        grad = 2.0 * (pred - target) / pred.shape[1]
        return grad / pred.shape[0] if self.reduction == "mean" else grad


class ForgetfulMeanMSE(BroadcastingMSE):
    """Checks shapes, but its 'mean' gradient is that of the sum (no 1/N)."""

    def forward(self, pred: Any, target: Any) -> Any:
        if pred.shape != target.shape:
            raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
        return super().forward(pred, target)

    def backward(self, pred: Any, target: Any) -> Any:
        if pred.shape != target.shape:
            raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
        return 2.0 * (pred - target) / pred.shape[1]  # wrong for reduction="mean"
