"""Gradient-descent optimisers: SGD (momentum, Nesterov, weight decay), Adam and AdamW.

Every optimiser clips gradients when asked (``clip_value=``: each element into
``[-clip_value, clip_value]``, as ``torch.nn.utils.clip_grad_value_``; then ``clip_norm=``:
all gradients scaled together so their global L2 norm is at most ``clip_norm``, as
``torch.nn.utils.clip_grad_norm_``), on the device, and saves and restores its state
(:meth:`Optimizer.state_dict`, :meth:`Optimizer.load_state_dict`). RMSprop and Adagrad live
in :mod:`mlcore.optimizers`, which registers all of them through ``mlcore_optimizers``.

Each follows PyTorch's ``torch.optim`` update rule exactly (the tests compare several steps
in float64). Updates are written as augmented assignments on the stored arrays
(``p.value -= u``): on writeable arrays (NumPy, CuPy, array-api-strict) they run in place,
with no new parameter-sized buffers; on an immutable array type Python falls back to
``p.value = p.value - u``, so the same code serves both. The namespace is resolved once, from
the parameters, when the optimiser is built.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from ._array import device_of, namespace
from .errors import InvalidParameterError, UnknownNameError
from .layers import Parameter, on_device
from .plugins import canonical_name, kernel, registry

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer", "optimizer_names"]


def _check_range(name: str, value: Any, low: float, high: float = math.inf, *,
                 open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high)`` (``(low, high)`` with ``open_low``), finite.

    Python and NumPy numbers are accepted; strings, bools and arrays are refused.
    """
    interval = f"{'(' if open_low else '['}{low:g}, {high:g})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            f"{name} must be a number in {interval}, received {value!r} of type "
            f"{type(value).__name__}. Pass a Python float, such as {_EXAMPLE[name]}.",
            value)
    v = float(value)
    if not (math.isfinite(v) and (low < v if open_low else low <= v) and v < high):
        raise InvalidParameterError(
            f"{name} must be a finite number in {interval}, received {value!r}. "
            f"A typical value is {_EXAMPLE[name]}.", value)
    return v


_EXAMPLE = {"lr": "0.001", "momentum": "0.9", "weight_decay": "0.0001", "eps": "1e-08",
            "betas[0]": "0.9", "betas[1]": "0.999"}


def _check_betas(betas: Any) -> tuple[float, float]:
    if isinstance(betas, str) or not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidParameterError(
            f"betas must be a pair (beta1, beta2), each in [0, 1), such as (0.9, 0.999); "
            f"received {betas!r}.", betas)
    return (_check_range("betas[0]", betas[0], 0.0, 1.0),
            _check_range("betas[1]", betas[1], 0.0, 1.0))


def _check_clip(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidParameterError(
            f"{name} must be a positive number or None, received {value!r}.", value)
    return float(value)


class Optimizer:
    """Base class: holds the parameters, ``step()`` updates them from their ``grad``.

    Subclasses name their per-parameter state in ``slots`` (lists of arrays, None until the
    first step) and ``counters`` (lists of ints); :meth:`state_dict` saves exactly those.
    """

    slots: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        self.params = list(params)
        if not self.params or not all(isinstance(p, Parameter) for p in self.params):
            raise InvalidParameterError(
                "An optimiser needs a non-empty iterable of mlcore Parameters, such as "
                "model.parameters().", params)
        self.lr = _check_range("lr", lr, 0.0, open_low=True)
        self.xp = namespace(*(p.value for p in self.params))
        self._on_device = on_device(device_of(self.params[0].value))
        self.clip_norm = _check_clip("clip_norm", clip_norm)
        self.clip_value = _check_clip("clip_value", clip_value)

    def zero_grad(self) -> None:
        """Clear the gradients of the parameters."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient (on the parameters' device)."""
        with self._on_device:
            if self.clip_value is not None or self.clip_norm is not None:
                self._clip()
            self._step()

    def _step(self) -> None:
        raise NotImplementedError

    def _clip(self) -> None:
        """Clip the gradients in place of ``grad`` (no value is read back to the host)."""
        xp, grads = self.xp, [p for p in self.params if p.grad is not None]
        if self.clip_value is not None:
            for p in grads:
                p.grad = xp.clip(p.grad, -self.clip_value, self.clip_value)
        if self.clip_norm is not None and grads:
            total = xp.sqrt(sum(xp.sum(p.grad * p.grad) for p in grads))
            coef = xp.minimum(self.clip_norm / (total + 1e-6), 1.0)  # PyTorch's 1e-6
            for p in grads:
                p.grad = p.grad * coef

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state: ``lr``, its ``counters`` (lists of ints) and one entry
        ``"<slot>.<i>"`` per state array of parameter ``i`` (the arrays themselves)."""
        state: dict[str, Any] = {"type": type(self).__name__, "lr": self.lr}
        for name in self.counters:
            state[name] = list(getattr(self, name))
        for name in self.slots:
            for i, value in enumerate(getattr(self, name)):
                if value is not None:
                    state[f"{name}.{i}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (arrays of this optimiser's backend, copied)."""
        if state.get("type") != type(self).__name__:
            raise InvalidParameterError(
                f"This state is from a {state.get('type')!r} optimiser; this one is a "
                f"{type(self).__name__}. Build the optimiser the state came from.", state)
        n = len(self.params)
        for name in self.counters:
            values = [int(v) for v in state.get(name, [0] * n)]
            if len(values) != n:
                raise InvalidParameterError(
                    f"Optimizer state {name!r} covers {len(values)} parameters; this "
                    f"optimiser has {n}.", state)
            setattr(self, name, values)
        for name in self.slots:
            setattr(self, name, [self._slot(state, f"{name}.{i}", p) for i, p in
                                 enumerate(self.params)])
        self.lr = _check_range("lr", state["lr"], 0.0)

    def _slot(self, state: dict[str, Any], key: str, p: Parameter) -> Any:
        value = state.get(key)
        if value is None:
            return None
        namespace(value, p.value, names=(key, "parameter"))
        if tuple(value.shape) != p.shape:
            raise InvalidParameterError(f"Optimizer state {key!r} has shape "
                                        f"{tuple(value.shape)}; the parameter is {p.shape}.",
                                        state)
        return self.xp.asarray(value, copy=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters)"


class SGD(Optimizer):
    """Stochastic gradient descent: p ← p - lr·g, with PyTorch's momentum and Nesterov.

    ``g = grad + weight_decay·p``; with momentum μ: ``b ← μ b + g`` (``b = g`` at the first
    step), then ``g = b``, or ``g = g + μ b`` with ``nesterov=True``.
    """

    slots = ("buffers",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 clip_norm: float | None = None, clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, bool):
            raise InvalidParameterError(f"nesterov must be True or False, received {nesterov!r}.",
                                        nesterov)
        if nesterov and self.momentum == 0.0:
            raise InvalidParameterError("nesterov=True needs momentum > 0.", nesterov)
        self.nesterov = nesterov
        self.buffers: list[Any] = [None] * len(self.params)
        self._fused = kernel("sgd_update", self.xp)  # the backend's fused update, if any

    def _step(self) -> None:
        lr, mu, wd, bufs = self.lr, self.momentum, self.weight_decay, self.buffers
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if wd:
                g = g + wd * p.value
            if mu:
                if bufs[i] is None:
                    bufs[i] = self.xp.asarray(g, copy=True)
                else:
                    bufs[i] *= mu
                    bufs[i] += g
                g = g + mu * bufs[i] if self.nesterov else bufs[i]
            if self._fused is not None:
                self._fused(p.value, g, lr)
            else:
                p.value -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as in ``torch.optim.Adam``.

    m ← β1 m + (1-β1) g; v ← β2 v + (1-β2) g²;
    p ← p - lr/(1-β1ᵗ) · m / (√v / √(1-β2ᵗ) + ε), with ``g = grad + weight_decay·p`` (L2).

    Computed in ten passes over each parameter (three temporaries): the moments are kept
    scaled, ``m = m/(1-β1)`` and ``v = v/(1-β2)`` (so ``m ← β1 m + g``), and the bias
    corrections fold into two scalars; equal to PyTorch's formula in exact arithmetic.
    """

    decoupled = False
    slots = ("m", "v")
    counters = ("steps",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.betas = _check_betas(betas)
        self.eps = _check_range("eps", eps, 0.0, open_low=True)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        n = len(self.params)
        self.steps = [0] * n
        self.m: list[Any] = [None] * n  # first moments, scaled by 1/(1-β1)
        self.v: list[Any] = [None] * n  # second moments, scaled by 1/(1-β2)
        self._cached: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)
        self._fused = kernel("adam_update", self.xp)  # the backend's fused update, if any

    def _step(self) -> None:
        (b1, b2), wd, m, v, steps = self.betas, self.weight_decay, self.m, self.v, self.steps
        sqrt, fused = self.xp.sqrt, self._fused
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if m[i] is None:
                m[i], v[i] = self.xp.zeros_like(p.value), self.xp.zeros_like(p.value)
            g = self._decay(p, g) if wd else g
            steps[i] += 1
            eps, scale = self._scalars(steps[i])
            if fused is not None:  # the same passes, fused by the backend (hookspecs)
                fused(p.value, g, m[i], v[i], b1, b2, eps, scale)
                continue
            m[i] *= b1
            m[i] += g
            v[i] *= b2
            v[i] += g * g
            r = sqrt(v[i])
            r += eps
            r *= scale
            p.value -= m[i] / r

    def _decay(self, p: Parameter, g: Any) -> Any:
        """Weight decay: decoupled (AdamW, on the parameter) or L2 (Adam, on the gradient)."""
        if self.decoupled:
            p.value *= 1.0 - self.lr * self.weight_decay
            return g
        return g + self.weight_decay * p.value

    def _scalars(self, t: int) -> tuple[float, float]:
        """ε and the step scale for the scaled moments at step ``t`` (cached for the last t
        and lr: a schedule may change ``lr`` between steps)."""
        cached = self._cached
        if cached[0] != t or cached[1] != self.lr:
            (b1, b2), lr = self.betas, self.lr
            s = math.sqrt((1.0 - b2) / (1.0 - b2**t))  # √(v/(1-β2ᵗ)) = s·√v_scaled
            cached = self._cached = (t, lr, self.eps / s, (1.0 - b1**t) * s / (lr * (1.0 - b1)))
        return cached[2], cached[3]


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019) as in ``torch.optim.AdamW``: decoupled decay
    ``p ← p (1 - lr·weight_decay)`` before the Adam step; ``weight_decay`` defaults to 0.01."""

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, clip_norm=clip_norm,
                         clip_value=clip_value)


def optimizer_names() -> list[str]:
    """The names :func:`get_optimizer` accepts: the built-ins and every plugin's."""
    return registry().names("optimizers")


def get_optimizer(optimizer: str | Optimizer, params: Iterable[Parameter],
                  lr: float | None = None) -> Optimizer:
    """An optimiser by name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``
    or a plugin's, hook ``mlcore_optimizers``) over ``params``.

    ``lr=None`` keeps the optimiser's default (SGD 0.01, Adam/AdamW 0.001). An
    :class:`Optimizer` instance is returned as it is (then ``lr`` must be None).
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise InvalidParameterError(
                "lr applies when optimizer is a name; this optimiser instance already has "
                f"lr={optimizer.lr}. Set it when building the optimiser.", lr)
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise InvalidParameterError(
            f"optimizer is the class {optimizer.__name__}; pass its name "
            f"(optimizer={optimizer.__name__.lower()!r}) or an instance "
            f"(optimizer=mlcore.{optimizer.__name__}(model.parameters())).", optimizer)
    cls = (registry().lookup("optimizers", canonical_name(optimizer))
           if isinstance(optimizer, str) else None)
    if cls is None:
        raise UnknownNameError(
            f"Unknown optimiser {optimizer!r}. Known: {', '.join(optimizer_names())}, or pass "
            f"an mlcore.optim.Optimizer instance.", optimizer)
    return cls(list(params)) if lr is None else cls(list(params), lr=lr)  # type: ignore[no-any-return]
