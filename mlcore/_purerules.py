"""The built-in optimisers as pure updates, for the compiled training step.

:mod:`mlcore._purestep` builds the step; a rule gives what it needs from an optimiser:
``state(xp)`` (the arrays the step takes: SGD's momentum buffers; Adam's step count as a
0-d array and its moments), ``update(xp, params, grads, state, hyper, lr)`` (the new
parameters and state as new arrays, the same arithmetic as :mod:`mlcore.optim`),
``hyper()`` (the hyperparameters a trace holds as constants: all but ``lr``, which is an
argument), ``write(state)`` (the new state back into the optimiser) and ``undo()`` (take
back the count of a step that changed nothing). Only SGD, Adam and AdamW themselves have a
rule (:func:`optimizer_rule`); a subclass that overrides the update trains eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .optim import SGD, Adam, AdamW, Optimizer

__all__ = ["optimizer_rule"]


class _SGDRule:
    """:class:`mlcore.optim.SGD` as a pure update; state: the momentum buffers (zeros at
    first: ``μ·0 + g`` is exactly the eager first step's ``b = g``)."""

    def __init__(self, opt: SGD) -> None:
        self.opt = opt

    def state(self, xp: Any) -> tuple[Any, ...]:
        opt = self.opt
        if not opt.momentum:
            return ()
        return tuple(xp.zeros_like(p.value) if b is None else b
                     for p, b in zip(opt.params, opt.buffers, strict=True))

    def update(self, xp: Any, params: Sequence[Any], grads: Sequence[Any],
               state: tuple[Any, ...], hyper: tuple[Any, ...], lr: Any,
               ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The new parameters and state, with the hyperparameters ``hyper`` (:meth:`hyper`
        when the step was built: a traced step holds them as constants) and the learning
        rate ``lr`` (a 0-d array: an argument of the step)."""
        new_p, new_b = [], []
        mu, nesterov, wd = hyper
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if wd:
                g = g + wd * p
            if mu:
                b = mu * state[i] + g
                new_b.append(b)
                g = g + mu * b if nesterov else b
            new_p.append(p - lr * g)
        return tuple(new_p), tuple(new_b)

    def hyper(self) -> tuple[Any, ...]:
        """The hyperparameters the compiled step holds as constants (all but ``lr``)."""
        opt = self.opt
        return (opt.momentum, opt.nesterov, opt.weight_decay)

    def write(self, state: tuple[Any, ...]) -> None:
        if self.opt.momentum:
            self.opt.buffers[:] = list(state)

    def undo(self) -> None:
        """A step that changed nothing (a non-finite loss): no count to take back."""


class _AdamRule:
    """:class:`mlcore.optim.Adam` / :class:`~mlcore.optim.AdamW` as a pure update.

    State: ``(t, *m, *v)``, ``t`` the step count as a 0-d array of the parameters' dtype.
    The bias corrections are computed from ``t`` inside the step (never baked in), as
    ``1 - β^t = -expm1(t log β)``, which keeps them accurate in float32.
    """

    def __init__(self, opt: Adam) -> None:
        self.opt = opt
        self._t: tuple[int, Any] = (-1, None)  # (host count, the step's own 0-d array)

    def state(self, xp: Any) -> tuple[Any, ...]:
        opt = self.opt
        count, t = self._t
        if count == opt.steps[0] and all(a is not None for a in opt.m):
            return (t, *opt.m, *opt.v)  # as the last step left it: no host-to-device copy
        first = opt.params[0].value
        t = xp.asarray(float(opt.steps[0]), dtype=first.dtype, device=getattr(first, "device",
                                                                              None))
        zeros = [xp.zeros_like(p.value) for p in opt.params]
        m = [z if a is None else a for z, a in zip(zeros, opt.m, strict=True)]
        v = [xp.zeros_like(p.value) if a is None else a for p, a in zip(opt.params, opt.v,
                                                                           strict=True)]
        return (t, *m, *v)

    def update(self, xp: Any, params: Sequence[Any], grads: Sequence[Any],
               state: tuple[Any, ...], hyper: tuple[Any, ...], lr: Any,
               ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The new parameters and state, with the hyperparameters ``hyper`` and ``lr``."""
        n = len(params)
        (b1, b2), eps, wd, decoupled = hyper
        t = state[0] + 1.0
        c1, c2 = -xp.expm1(t * math.log(b1)), -xp.expm1(t * math.log(b2))  # 1 - β^t
        s = xp.sqrt((1.0 - b2) / c2)  # √(v/(1-β2ᵗ)) = s·√v_scaled, as Adam._scalars
        eps_t, scale = eps / s, c1 * s / (lr * (1.0 - b1))
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, state[1:1 + n], state[1 + n:], strict=True):
            if wd and decoupled:
                p = p * (1.0 - lr * wd)
            elif wd:
                g = g + wd * p
            m, v = b1 * m + g, b2 * v + g * g
            new_p.append(p - m / ((xp.sqrt(v) + eps_t) * scale))
            new_m.append(m)
            new_v.append(v)
        return tuple(new_p), (t, *new_m, *new_v)

    def hyper(self) -> tuple[Any, ...]:
        """The hyperparameters the compiled step holds as constants (all but ``lr``)."""
        opt = self.opt
        return (tuple(opt.betas), opt.eps, opt.weight_decay, opt.decoupled)

    def write(self, state: tuple[Any, ...]) -> None:
        opt, n = self.opt, len(self.opt.params)
        opt.m[:], opt.v[:] = list(state[1:1 + n]), list(state[1 + n:])
        opt.steps[:] = [s + 1 for s in opt.steps]  # the host's count, never read back
        self._t = (opt.steps[0], state[0])

    def undo(self) -> None:
        """Take back the count of a step that changed nothing (a non-finite loss)."""
        opt = self.opt
        opt.steps[:] = [s - 1 for s in opt.steps]
        self._t = (-1, None)  # rebuild t from the count next time


def optimizer_rule(opt: Optimizer) -> _SGDRule | _AdamRule | None:
    """The pure form of a built-in optimiser, or None (a subclass, or uneven step counts)."""
    if type(opt) is SGD:
        return _SGDRule(opt)
    if type(opt) in (Adam, AdamW) and len(set(opt.steps)) == 1:  # type: ignore[attr-defined]
        return _AdamRule(opt)  # type: ignore[arg-type]
    return None
