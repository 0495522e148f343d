"""The PyTorch reference: the idiomatic eager-mode PyTorch user code, CPU or CUDA.

Same network, same initial weights, same data and same maths as the other competitors:
``nn.Linear`` (weight of shape (out, in), eq. 1.5), ReLU or tanh, ``F.cross_entropy`` from
logits or ``F.binary_cross_entropy_with_logits``, ``torch.optim.Adam`` or ``SGD``, gradients
set to None between steps. Activations and losses are timed forward plus autograd backward.
Imported only when PyTorch is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

__all__ = ["TorchMLP", "ACTIVATIONS", "LOSSES", "torch_dtype", "sync"]


def torch_dtype(dtype: Any) -> torch.dtype:
    return torch.float32 if np.dtype(dtype) == np.float32 else torch.float64


def sync(device: str) -> Callable[[], None]:
    """The clock-read barrier for ``device``: CUDA synchronize, or nothing on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


class TorchMLP:
    """``nn.Sequential`` of Linear + activation with a torch optimiser; ``step(X, y)``."""

    def __init__(self, weights: Sequence[np.ndarray], dtype: Any, device: str = "cpu",
                 hidden: str = "relu", loss: str = "softmax_ce", optimizer: str = "adam",
                 lr: float = 1e-3) -> None:
        layers: list[torch.nn.Module] = []
        pairs = list(zip(weights[0::2], weights[1::2], strict=True))
        for i, (w, b) in enumerate(pairs):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.asarray(w, np.float64)))
                lin.bias.copy_(torch.from_numpy(np.asarray(b, np.float64)))
            layers.append(lin)
            if i < len(pairs) - 1:
                layers.append(torch.nn.ReLU() if hidden == "relu" else torch.nn.Tanh())
        self.model = torch.nn.Sequential(*layers).to(device=device, dtype=torch_dtype(dtype))
        self.loss = loss
        params = list(self.model.parameters())
        self.opt: torch.optim.Optimizer = (
            torch.optim.Adam(params, lr=lr) if optimizer == "adam"
            else torch.optim.SGD(params, lr=lr))

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        out = self.model(X)
        if self.loss == "softmax_ce":
            loss = F.cross_entropy(out, y)
        else:
            loss = F.binary_cross_entropy_with_logits(out[:, 0], y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def params(self) -> list[np.ndarray]:
        """Host copies in the order ``[W0, b0, W1, b1, ...]``."""
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(X).argmax(dim=1)


Act = Callable[[torch.Tensor], torch.Tensor]
ACTIVATIONS: dict[str, Act] = {
    "identity": lambda x: x * 1,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
}
"""Activations by mlcore name (``step`` has no autograd gradient in PyTorch: left out)."""


def _ce_probs(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    eps = 1e-7 if p.dtype == torch.float32 else 1e-12
    return F.nll_loss(torch.log(p.clamp(min=eps)), t)


def _bce_probs(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(p, t)


def _kl(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    eps = 1e-7 if p.dtype == torch.float32 else 1e-12
    return F.kl_div(torch.log(p.clamp(min=eps)), t, reduction="batchmean")


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy(logits)": F.cross_entropy,
    "cross_entropy": _ce_probs,
    "binary_cross_entropy(logits)": F.binary_cross_entropy_with_logits,
    "binary_cross_entropy": _bce_probs,
    "kl_divergence": _kl,
    "mse": F.mse_loss,
    "mae": F.l1_loss,
}
"""Loss variants by benchmark name, mean reduction, differentiated by autograd."""
