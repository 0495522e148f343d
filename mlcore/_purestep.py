"""The training step as a pure function, for backends that compile it.

The eager step (:func:`mlcore.train._compile`) updates the parameters and the optimiser's
state where they are. A backend that can compile a whole step (JAX's ``jax.jit``, CUDA
graphs on CuPy, ``torch.compile``) is handed the same step written as a pure function
(hook :func:`mlcore.hookspecs.mlcore_compile_step`)::

    step(params: tuple, state: tuple, X, y) -> (new_params: tuple, new_state: tuple, loss)

``params`` are the parameters' arrays in ``model.parameters()`` order; ``state`` is the
optimiser's state (:class:`SGD`: the momentum buffers; :class:`Adam`/:class:`AdamW`: the
step count as a 0-d array, then the scaled moments ``m``, then ``v``); with ``metrics``, two
0-d sums for an epoch's history follow (the loss times the batch size, and the correct
predictions; ``fit`` does not use them yet: it trains eagerly). Nothing in it reads a
value back to the host, so a backend may trace it once
per batch shape. :class:`PureStep` runs the compiled callable and writes its results back
into the :class:`~mlcore.layers.Parameter` objects and the optimiser, so eager and compiled
steps can follow one another and give the same weights to float tolerance.

Only the built-in optimisers have a pure form (:func:`optimizer_rule`); a subclass that
overrides the update runs eagerly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InvalidParameterError, PluginWarning
from .optim import SGD, Adam, AdamW, Optimizer

__all__ = ["PureStep", "build", "compiled_step", "optimizer_rule"]

Pure = Callable[[tuple[Any, ...], tuple[Any, ...], Any, Any], tuple[Any, Any, Any]]


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
               state: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        opt, new_p, new_b = self.opt, [], []
        lr, mu, wd = opt.lr, opt.momentum, opt.weight_decay
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if wd:
                g = g + wd * p
            if mu:
                b = mu * state[i] + g
                new_b.append(b)
                g = g + mu * b if opt.nesterov else b
            new_p.append(p - lr * g)
        return tuple(new_p), tuple(new_b)

    def write(self, state: tuple[Any, ...]) -> None:
        if self.opt.momentum:
            self.opt.buffers[:] = list(state)


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
               state: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        opt, n = self.opt, len(params)
        (b1, b2), lr, wd, eps = opt.betas, opt.lr, opt.weight_decay, opt.eps
        t = state[0] + 1.0
        c1, c2 = -xp.expm1(t * math.log(b1)), -xp.expm1(t * math.log(b2))  # 1 - β^t
        s = xp.sqrt((1.0 - b2) / c2)  # √(v/(1-β2ᵗ)) = s·√v_scaled, as Adam._scalars
        eps_t, scale = eps / s, c1 * s / (lr * (1.0 - b1))
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, state[1:1 + n], state[1 + n:], strict=True):
            if wd and opt.decoupled:
                p = p * (1.0 - lr * wd)
            elif wd:
                g = g + wd * p
            m, v = b1 * m + g, b2 * v + g * g
            new_p.append(p - m / ((xp.sqrt(v) + eps_t) * scale))
            new_m.append(m)
            new_v.append(v)
        return tuple(new_p), (t, *new_m, *new_v)

    def write(self, state: tuple[Any, ...]) -> None:
        opt, n = self.opt, len(self.opt.params)
        opt.m[:], opt.v[:] = list(state[1:1 + n]), list(state[1 + n:])
        opt.steps[:] = [s + 1 for s in opt.steps]  # the host's count, never read back
        self._t = (opt.steps[0], state[0])


def optimizer_rule(opt: Optimizer) -> _SGDRule | _AdamRule | None:
    """The pure form of a built-in optimiser, or None (a subclass, or uneven step counts)."""
    if type(opt) is SGD:
        return _SGDRule(opt)
    if type(opt) in (Adam, AdamW) and len(set(opt.steps)) == 1:  # type: ignore[attr-defined]
        return _AdamRule(opt)  # type: ignore[arg-type]
    return None


class PureStep:
    """A compiled training step bound to a model and optimiser: ``step(X, y) -> loss``.

    Reads the parameters and optimiser state, runs the backend's compiled function and
    writes the results back (the arrays passed in may have been donated to the compiled
    function). With ``metrics``, the state also carries the epoch's two sums, read with
    :meth:`take_sums`.
    """

    def __init__(self, params: Sequence[Any], rule: Any, compiled: Pure, xp: Any,
                 metrics: bool) -> None:
        self.params, self.rule, self.compiled, self.xp = list(params), rule, compiled, xp
        self.metrics = metrics
        self._sums: tuple[Any, ...] = ()

    def __call__(self, X: Any, y: Any) -> Any:
        values = tuple(p.value for p in self.params)
        state = self.rule.state(self.xp) + self._sums
        new_params, new_state, loss = self.compiled(values, state, X, y)
        for p, v in zip(self.params, new_params, strict=True):
            p.value, p.grad = v, None
        if self.metrics:
            self._sums, new_state = tuple(new_state[-2:]), tuple(new_state[:-2])
        self.rule.write(new_state)
        return loss

    def run_epoch(self, data: Any, batches: Sequence[tuple[int, int]], bar: Any,
                  guard: Callable[[Any], None] | None, count_dtype: Any) -> tuple[Any, Any]:
        """One epoch over ``batches`` of ``data`` (``fit``'s ``_Data``); returns the sums
        (loss times rows, correct predictions). ``guard(loss)`` checks each step's loss."""
        self.start_sums(data.X, count_dtype)
        for start, stop in batches:
            value = self(data.X[start:stop, ...], data.targets[start:stop, ...])
            if guard is not None:
                guard(value)
            bar.update(1)
        return self.take_sums()

    def start_sums(self, like: Any, count_dtype: Any) -> None:
        """Start the epoch's sums at zero (``fit`` does, before each epoch)."""
        dev = getattr(like, "device", None)
        self._sums = (self.xp.zeros((), dtype=like.dtype, device=dev),
                      self.xp.zeros((), dtype=count_dtype, device=dev))

    def take_sums(self) -> tuple[Any, Any]:
        """The epoch's (loss times rows, correct predictions) so far."""
        return self._sums[0], self._sums[1]


def compiled_step(model: Any, plan: Any, opt: Optimizer, metrics: bool,
                  jit_compile: bool | None) -> PureStep | None:
    """The backend's compiled training step for ``model`` (see :func:`build`), or None."""
    if jit_compile is False:
        return None
    from .model import chain
    from .plugins import registry

    return build(model, plan, opt, metrics, jit_compile, chain,
                 registry().pm.hook.mlcore_compile_step)


def build(model: Any, plan: Any, opt: Optimizer, metrics: bool, jit_compile: bool | None,
          chain: Callable[..., Any], compile_hook: Callable[..., Any]) -> PureStep | None:
    """The model's compiled training step, or None to keep the eager one.

    ``jit_compile=False`` never compiles; ``None`` compiles when the backend offers it and
    the optimiser has a pure form; ``True`` requires both (else InvalidParameterError).
    """
    if jit_compile is False:
        return None
    rule = optimizer_rule(opt)
    backend = model.backend
    compiled = None if rule is None else _ask(
        compile_hook, backend, _pure(model, plan, opt.xp, rule, metrics, chain))
    if compiled is None and jit_compile:
        why = (f"the {type(opt).__name__} optimiser has no pure form (only SGD, Adam and "
               f"AdamW do)" if rule is None else
               f"backend {backend.name!r} does not compile training steps")
        raise InvalidParameterError(
            f"jit_compile=True but {why}. Leave jit_compile unset to use the eager step "
            f"where no compiled one exists.", jit_compile)
    return None if compiled is None else PureStep(model.parameters(), rule, compiled, opt.xp,
                                                  metrics)


def _ask(compile_hook: Callable[..., Any], backend: Any, step: Pure) -> Pure | None:
    """The backend's compiled ``step``, or None; a failing plugin warns and is skipped."""
    try:
        compiled = compile_hook(backend=backend, step=step)
    except Exception as exc:  # noqa: BLE001 - a broken compile plugin must not stop training
        warnings.warn(f"mlcore_compile_step failed for backend {backend.name!r} ({exc!r}); "
                      f"using the eager training step.", PluginWarning, stacklevel=4)
        return None
    return compiled if callable(compiled) else None


def _pure(model: Any, plan: Any, xp: Any, rule: Any, metrics: bool,
          chain: Callable[..., Any]) -> Pure:
    """The pure step: forward, loss, backward through the layers, then ``rule``'s update.

    The layers read their parameters' ``value``; the step sets them to its arguments for
    the forward and backward passes (once per trace, for a tracing backend) and puts the
    stored arrays back before returning.
    """
    layers = model.layers[: len(model.layers) - plan.trim]
    params = model.parameters()

    def step(values: tuple[Any, ...], state: tuple[Any, ...], X: Any,
             y: Any) -> tuple[Any, Any, Any]:
        saved = [(p.value, p.grad) for p in params]
        try:
            for p, v in zip(params, values, strict=True):
                p.value, p.grad = v, None
            out, backprop = chain(layers, X, xp, False)
            loss, grad = plan.value_and_grad(xp, out, y)
            backprop(grad)
            grads = [p.grad for p in params]
        finally:
            for p, (v, g) in zip(params, saved, strict=True):
                p.value, p.grad = v, g
        opt_state = state[:-2] if metrics else state
        new_values, new_state = rule.update(xp, values, grads, opt_state)
        if metrics:
            total, correct = state[-2:]
            if plan.task is not None:
                correct = correct + _correct(xp, plan, out, y)
            new_state = (*new_state, total + loss * X.shape[0], correct)
        return new_values, new_state, loss

    return step


def _correct(xp: Any, plan: Any, out: Any, y: Any) -> Any:
    """Correct predictions, with the labels read from the loss targets (fit's targets keep
    them: class indices, or rows whose argmax is the label; binary targets above 0.5)."""
    if plan.task == "multiclass":
        labels = y if y.ndim == 1 else xp.argmax(y, axis=1)
    else:
        labels = y > 0.5
    return plan.correct(xp, out, labels)
