"""Extra activations for mlcore, each forward next to its gradient.

A plugin distribution like any stranger's: ``pyproject.toml`` declares this module in the
``mlcore`` entry-point group, and mlcore calls :func:`mlcore_activations` when it first needs
an activation. Each class is written on :class:`mlcore.plugin.ActivationBase`, as mlcore's
own activations are: it gives the bare formulas ``forward_unchecked(xp, x)`` and
``backward_unchecked(xp, x, y, dy)`` (``dy · f'(x)``; ``y`` is ``forward(x)``) in the
namespace ``xp`` of the input, so it runs on every mlcore backend, and inside a model it takes
the path a built-in takes. Results keep the input's namespace, device, shape and floating
dtype (Python scalars never upcast float32) and are finite for every finite input (checked at
±1e4 by mlcore's conformance kit).
"""

from __future__ import annotations

import math
from typing import Any

from mlcore.errors import InvalidParameterError
from mlcore.plugin import ActivationBase, hookimpl, number_param, sigmoid, softplus

from ._special import erf, erfc

__all__ = ["GELU", "SiLU", "Swish", "ELU", "SELU", "Softplus", "Mish", "HardSigmoid",
           "mlcore_activations", "erf", "erfc"]
__version__ = "0.1.0"



_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def _number(owner: str, name: str, value: Any, positive: bool = False) -> float:
    return number_param(f"Activation {owner!r}", name, value, above=0.0 if positive else None)


class GELU(ActivationBase):
    """Gaussian error linear unit (Hendrycks and Gimpel, 2016).

    ``approximate="none"``: ``f(x) = x Φ(x)`` with ``Φ(x) = erfc(-x/√2) / 2`` (erfc keeps
    full precision in the negative tail); ``f'(x) = Φ(x) + x φ(x)``, ``φ`` the standard
    normal density. ``approximate="tanh"``: ``f(x) = x sigmoid(2u)`` with
    ``u = √(2/π)(x + 0.044715 x³)``, which is ``0.5 x (1 + tanh(u))`` without cancellation;
    ``f'(x) = sigmoid(2u) + 2 x sigmoid(2u) sigmoid(-2u) u'``. Both match
    ``torch.nn.functional.gelu``.
    """

    name = "gelu"

    def __init__(self, *, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise InvalidParameterError(
                f"gelu parameter approximate must be 'none' or 'tanh', received "
                f"{approximate!r}.", approximate)
        self.approximate = approximate

    def _u(self, x: Any) -> Any:
        return _SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        if self.approximate == "tanh":
            return x * sigmoid(xp, 2.0 * self._u(x))
        return x * (0.5 * erfc(xp, -_INV_SQRT_2 * x))

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        if self.approximate == "tanh":
            s = sigmoid(xp, 2.0 * self._u(x))
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * (x * x))
            return dy * (s + 2.0 * x * s * (1.0 - s) * du)
        cdf = 0.5 * erfc(xp, -_INV_SQRT_2 * x)
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * (x * x))
        return dy * (cdf + x * pdf)


class Swish(ActivationBase):
    """Swish (Ramachandran et al., 2017): ``f(x) = x sigmoid(βx)``;
    ``f'(x) = sigmoid(βx) (1 + βx (1 - sigmoid(βx)))``. ``beta`` defaults to 1 (then it is SiLU)."""

    name = "swish"

    def __init__(self, *, beta: float = 1.0) -> None:
        self.beta = _number(self.name, "beta", beta)

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return x * sigmoid(xp, self.beta * x)

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        s = sigmoid(xp, self.beta * x)
        return dy * (s * (1.0 + self.beta * x * (1.0 - s)))


class SiLU(Swish):
    """Sigmoid linear unit: ``f(x) = x sigmoid(x)`` (swish with ``beta = 1``, PyTorch's ``silu``);
    ``f'(x) = sigmoid(x) (1 + x (1 - sigmoid(x)))``."""

    name = "silu"

    def __init__(self) -> None:
        super().__init__(beta=1.0)

    def __repr__(self) -> str:
        return "activation('silu')"


class ELU(ActivationBase):
    """Exponential linear unit (Clevert et al., 2015): ``f(x) = x`` if ``x > 0`` else
    ``alpha (e^x - 1)``; ``f'(x) = 1`` if ``x > 0`` else ``alpha e^x``. ``alpha`` > 0,
    default 1. Computed as ``max(x, 0) + alpha (e^min(x, 0) - 1)``, without ``where``, so
    large positive inputs never overflow."""

    name = "elu"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = _number(self.name, "alpha", alpha, positive=True)

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return xp.maximum(x, 0.0) + self.alpha * xp.expm1(xp.minimum(x, 0.0))

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        positive = xp.astype(x > 0.0, x.dtype)
        return dy * (positive + (1.0 - positive) * (self.alpha * xp.exp(xp.minimum(x, 0.0))))


class SELU(ELU):
    """Scaled ELU (Klambauer et al., 2017): ``f(x) = scale · elu(x, alpha)`` with the fixed
    self-normalising constants ``alpha = 1.6732632423543772``, ``scale = 1.0507009873554805``;
    ``f'(x) = scale`` if ``x > 0`` else ``scale · alpha e^x``. No parameters."""

    name = "selu"
    SCALE = 1.0507009873554804934193349852946

    def __init__(self) -> None:
        super().__init__(alpha=1.6732632423543772848170429916717)

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return self.SCALE * super().forward_unchecked(xp, x)

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        return self.SCALE * super().backward_unchecked(xp, x, y, dy)

    def __repr__(self) -> str:
        return "activation('selu')"


class Softplus(ActivationBase):
    """``f(x) = log(1 + e^(βx)) / β``, and ``x`` where ``βx > threshold`` (as PyTorch does);
    ``f'(x) = sigmoid(βx)``, and 1 above the threshold. Evaluated as
    ``(max(βx, 0) + log1p(e^(-|βx|))) / β``: finite for every finite input. ``beta`` > 0
    (default 1), ``threshold`` default 20."""

    name = "softplus"

    def __init__(self, *, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = _number(self.name, "beta", beta, positive=True)
        self.threshold = _number(self.name, "threshold", threshold)

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        z = self.beta * x
        linear = xp.astype(z > self.threshold, x.dtype)
        return linear * x + (1.0 - linear) * (softplus(xp, z) / self.beta)

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        z = self.beta * x
        linear = xp.astype(z > self.threshold, x.dtype)
        return dy * (linear + (1.0 - linear) * sigmoid(xp, z))


class Mish(ActivationBase):
    """Mish (Misra, 2019): ``f(x) = x tanh(softplus(x))``;
    ``f'(x) = tanh(sp) + x (1 - tanh(sp)²) sigmoid(x)`` with ``sp = softplus(x)``."""

    name = "mish"

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return x * xp.tanh(softplus(xp, x))

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        t = xp.tanh(softplus(xp, x))
        return dy * (t + x * (1.0 - t * t) * sigmoid(xp, x))


class HardSigmoid(ActivationBase):
    """Piecewise-linear sigmoid, PyTorch's ``hardsigmoid``: ``f(x) = clip(x/6 + 1/2, 0, 1)``;
    ``f'(x) = 1/6`` for ``-3 < x < 3``, else 0 (0 at the kinks, as PyTorch)."""

    name = "hard_sigmoid"

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return xp.clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        inside = xp.astype((x > -3.0) & (x < 3.0), dy.dtype)
        return dy * (inside / 6.0)


_ACTIVATIONS: dict[str, Any] = {
    cls.name: cls for cls in (GELU, SiLU, Swish, ELU, SELU, Softplus, Mish, HardSigmoid)
}


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    """The activations this distribution provides, by name."""
    return dict(_ACTIVATIONS)
