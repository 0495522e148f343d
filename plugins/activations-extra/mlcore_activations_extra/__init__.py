"""Extra activations for mlcore, each forward next to its gradient.

A plugin distribution like any stranger's: ``pyproject.toml`` declares this module in the
``mlcore`` entry-point group, and mlcore calls :func:`mlcore_activations` when it first needs
an activation. Every function is written against the Array API namespace of its input
(``array_api_compat.array_namespace``), so it runs on every mlcore backend; it keeps the
input's namespace, device, shape and floating dtype (Python scalars never upcast float32),
and is finite for every finite input (checked at ±1e4 by mlcore's conformance kit).

``backward(x, y, dy)`` returns ``dy · f'(x)``; ``y`` is ``forward(x)``.
"""

from __future__ import annotations

import math
from typing import Any

import pluggy
from array_api_compat import array_namespace

from mlcore.errors import DTypeError, InvalidParameterError

from ._special import erf, erfc, sigmoid, softplus

__all__ = ["GELU", "SiLU", "Swish", "ELU", "SELU", "Softplus", "Mish", "HardSigmoid",
           "mlcore_activations", "erf", "erfc"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def _xp(x: Any) -> Any:
    """The namespace of ``x``, after checking it is a floating-point array."""
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise DTypeError(f"x must be a floating-point array, received dtype {x.dtype}. "
                         f"Convert it with astype(float32) or astype(float64).", x)
    return xp


def _number(owner: str, name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a finite float (positive if asked), or an InvalidParameterError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive" if positive else "a finite"
        raise InvalidParameterError(
            f"{owner} parameter {name} must be {kind} real number, received {value!r}.", value)
    return float(value)


class _Activation:
    name = ""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"activation({self.name!r}{', ' if params else ''}{params})"


class GELU(_Activation):
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

    def forward(self, x: Any) -> Any:
        xp = _xp(x)
        if self.approximate == "tanh":
            return x * sigmoid(xp, 2.0 * self._u(x))
        return x * (0.5 * erfc(xp, -_INV_SQRT_2 * x))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = _xp(x)
        if self.approximate == "tanh":
            s = sigmoid(xp, 2.0 * self._u(x))
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * (x * x))
            return dy * (s + 2.0 * x * s * (1.0 - s) * du)
        cdf = 0.5 * erfc(xp, -_INV_SQRT_2 * x)
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * (x * x))
        return dy * (cdf + x * pdf)


class Swish(_Activation):
    """Swish (Ramachandran et al., 2017): ``f(x) = x sigmoid(βx)``;
    ``f'(x) = sigmoid(βx) (1 + βx (1 - sigmoid(βx)))``. ``beta`` defaults to 1 (then it is SiLU)."""

    name = "swish"

    def __init__(self, *, beta: float = 1.0) -> None:
        self.beta = _number(self.name, "beta", beta)

    def forward(self, x: Any) -> Any:
        return x * sigmoid(_xp(x), self.beta * x)

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        s = sigmoid(_xp(x), self.beta * x)
        return dy * (s * (1.0 + self.beta * x * (1.0 - s)))


class SiLU(Swish):
    """Sigmoid linear unit: ``f(x) = x sigmoid(x)`` (swish with ``beta = 1``, PyTorch's ``silu``);
    ``f'(x) = sigmoid(x) (1 + x (1 - sigmoid(x)))``."""

    name = "silu"

    def __init__(self) -> None:
        super().__init__(beta=1.0)

    def __repr__(self) -> str:
        return "activation('silu')"


class ELU(_Activation):
    """Exponential linear unit (Clevert et al., 2015): ``f(x) = x`` if ``x > 0`` else
    ``alpha (e^x - 1)``; ``f'(x) = 1`` if ``x > 0`` else ``alpha e^x``. ``alpha`` > 0,
    default 1. ``e^x`` is taken of ``min(x, 0)``, so large positive inputs never overflow."""

    name = "elu"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = _number(self.name, "alpha", alpha, positive=True)

    def forward(self, x: Any) -> Any:
        xp = _xp(x)
        return xp.where(x > 0.0, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = _xp(x)
        return dy * xp.where(x > 0.0, 1.0, self.alpha * xp.exp(xp.minimum(x, 0.0)))


class SELU(ELU):
    """Scaled ELU (Klambauer et al., 2017): ``f(x) = scale · elu(x, alpha)`` with the fixed
    self-normalising constants ``alpha = 1.6732632423543772``, ``scale = 1.0507009873554805``;
    ``f'(x) = scale`` if ``x > 0`` else ``scale · alpha e^x``. No parameters."""

    name = "selu"
    SCALE = 1.0507009873554804934193349852946

    def __init__(self) -> None:
        super().__init__(alpha=1.6732632423543772848170429916717)

    def forward(self, x: Any) -> Any:
        return self.SCALE * super().forward(x)

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        return self.SCALE * super().backward(x, y, dy)

    def __repr__(self) -> str:
        return "activation('selu')"


class Softplus(_Activation):
    """``f(x) = log(1 + e^(βx)) / β``, and ``x`` where ``βx > threshold`` (as PyTorch does);
    ``f'(x) = sigmoid(βx)``, and 1 above the threshold. Evaluated as
    ``(max(βx, 0) + log1p(e^(-|βx|))) / β``: finite for every finite input. ``beta`` > 0
    (default 1), ``threshold`` default 20."""

    name = "softplus"

    def __init__(self, *, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = _number(self.name, "beta", beta, positive=True)
        self.threshold = _number(self.name, "threshold", threshold)

    def forward(self, x: Any) -> Any:
        xp = _xp(x)
        z = self.beta * x
        return xp.where(z > self.threshold, x, softplus(xp, z) / self.beta)

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = _xp(x)
        z = self.beta * x
        return dy * xp.where(z > self.threshold, 1.0, sigmoid(xp, z))


class Mish(_Activation):
    """Mish (Misra, 2019): ``f(x) = x tanh(softplus(x))``;
    ``f'(x) = tanh(sp) + x (1 - tanh(sp)²) sigmoid(x)`` with ``sp = softplus(x)``."""

    name = "mish"

    def forward(self, x: Any) -> Any:
        xp = _xp(x)
        return x * xp.tanh(softplus(xp, x))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = _xp(x)
        t = xp.tanh(softplus(xp, x))
        return dy * (t + x * (1.0 - t * t) * sigmoid(xp, x))


class HardSigmoid(_Activation):
    """Piecewise-linear sigmoid, PyTorch's ``hardsigmoid``: ``f(x) = clip(x/6 + 1/2, 0, 1)``;
    ``f'(x) = 1/6`` for ``-3 < x < 3``, else 0 (0 at the kinks, as PyTorch)."""

    name = "hard_sigmoid"

    def forward(self, x: Any) -> Any:
        return _xp(x).clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = _xp(x)
        inside = xp.astype((x > -3.0) & (x < 3.0), dy.dtype)
        return dy * (inside / 6.0)


_ACTIVATIONS: dict[str, Any] = {
    cls.name: cls for cls in (GELU, SiLU, Swish, ELU, SELU, Softplus, Mish, HardSigmoid)
}


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    """The activations this distribution provides, by name."""
    return dict(_ACTIVATIONS)
