"""The training step, written once: forward, loss, backward, then the optimiser's rule.

:class:`TrainStep` holds the one definition, in two pure halves over arrays:

``gradients(xp, params, buffers, batch) -> (grads, new_buffers, loss, output)``
    the forward pass through the layers (Dropout takes its mask from ``batch.noise``,
    BatchNorm updates its running statistics, returned as ``new_buffers``), the loss (the
    fused from-logits form where the model ends in softmax/sigmoid, eq. 1.15/1.16; the
    weighted mean with ``batch.w``, see :mod:`mlcore._weights`) and backpropagation;
``opt.update(xp, params, grads, state, lr) -> (new_params, new_state)``
    the optimiser's update rule with clipping and weight decay (:mod:`mlcore.optimizers`).

:meth:`TrainStep.step` is the two in a row. A distributed fit averages the gradients
between the halves; the eager executor's backward pass tells it (a :class:`BackwardHook`)
when each layer's gradients are complete, so their allreduce can start while backward goes
on through the earlier layers. Two executors run it and nothing else:

:class:`EagerStep`
    runs the halves on the :class:`~mlcore.layers.Parameter` objects' arrays and writes the
    results back (the optimiser's update in place through the backend's kernel where one is
    offered: :meth:`mlcore.optimizers.Optimizer.fast_update`);
:class:`CompiledStep`
    hands :meth:`TrainStep.step`, flattened to the hook's calling convention, to the
    backend's compiler (hook ``mlcore_compile_step``: ``jax.jit``, a CUDA graph) and writes
    what it returns back. The hook's step is ``step(params, state, X, y) -> (new_params,
    new_state, loss)`` over flat tuples of arrays; ``state`` is, in order: the learning rate
    (a 0-d array, so a schedule never retraces), the optimiser's slots (each one array per
    parameter, in :attr:`~mlcore.optimizers.Optimizer.slots` order) and its step count (a 0-d
    array, for counting optimisers), the model's buffers (BatchNorm's running statistics),
    the sample weights (a weighted fit), the Dropout noise (one uniform array per active
    Dropout layer, drawn outside the step from the layer's random source, so the same seed
    gives the same masks in both executors) and, for ``fit``, an output buffer that comes
    back holding the batch's output. The new state echoes the inputs it does not change.

One non-finite policy serves both (``fit(on_nonfinite=...)``, :mod:`mlcore.training.guards`):
``"raise"`` stops with :class:`~mlcore.errors.NonFiniteError`, the weights restored to the
last ones known to give finite losses; ``"warn"`` warns once and skips every update whose
loss is not finite; ``"ignore"`` applies it. The eager step checks the loss between the
halves; the compiled one keeps the old arrays for a non-finite loss (a select per array)
under ``"raise"`` and ``"warn"``.
"""



from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..arrays.loss_checks import values_unchecked
from ..layers.stack import chain, completed_by
from ..optimizers.base import Optimizer
from ..types import Array, Namespace
from .weights import weighted_loss

if TYPE_CHECKING:
    from ..hookspecs import LossFn
    from .lossplan import LossPlan

__all__ = ["Batch", "BackwardHook", "TrainStep", "Pure", "flat_step", "flat_halves"]

Pure = Callable[[tuple[Any, ...], tuple[Any, ...], Any, Any], tuple[Any, Any, Any]]


class Batch(NamedTuple):
    """What one step trains on: inputs, targets, sample weights (or None) and the Dropout
    noise (one array per active Dropout layer, in layer order)."""

    X: Array
    y: Array
    w: Array | None = None
    noise: tuple[Array, ...] = ()


class BackwardHook(Protocol):
    """Told by :meth:`TrainStep.backward` how far the backward pass has got (a distributed
    fit's :class:`~mlcore.distributed.DataParallel` starts each gradient bucket's allreduce
    as soon as its gradients are complete)."""

    def begin(self, params: Sequence[Any], rows: int) -> None:
        """Backward of a batch of ``rows`` rows begins (the ``grad`` of every parameter in
        ``params`` is cleared)."""

    def ready(self, indices: Sequence[int]) -> None:
        """The gradients of ``params[i]`` for ``i`` in ``indices`` are complete and backward
        goes on (called after each layer's backprop, last layer first, but the first
        layer's; ``indices`` may be empty)."""

    def finish(self) -> None:
        """Backward has ended: every gradient is complete."""


class TrainStep:
    """The training step of ``model`` with loss plan ``plan`` and optimiser ``opt``."""

    def __init__(self, model: Any, plan: LossPlan, opt: Optimizer, loss: str | LossFn, *,
                 weighted: bool = False) -> None:
        self.model, self.plan, self.opt = model, plan, opt
        self.layers = model.layers[: len(model.layers) - plan.trim]
        self.params = model.parameters()
        self.holders = [h for layer in self.layers for _, h in layer.named_buffers()]
        self.weighted = weighted
        self.value_and_grad = weighted_loss(plan, loss) if weighted else None
        self.noisy = [i for i, layer in enumerate(self.layers)
                      if callable(getattr(layer, "draw", None))]
        self._grad: Any = None  # the loss gradient between the forward and backward pass
        self._complete: list[list[int]] | None = None  # per layer: grads it completes

    # -- the noise, drawn outside the step -----------------------------------------------
    def draw(self, X: Array) -> tuple[Any, ...]:
        """The Dropout noise for a batch ``X``: each active Dropout layer draws from its own
        random source, shaped like its input."""
        if not self.noisy:
            return ()
        noise, width, rows = [], int(X.shape[1]) if X.ndim > 1 else 1, int(X.shape[0])
        for i, layer in enumerate(self.layers):
            if i in self.noisy:
                u = layer.draw((rows, width), X.dtype)
                if u is not None:
                    noise.append(u)
            width = getattr(layer, "out_features", None) or width
        return tuple(noise)

    # -- the two halves ------------------------------------------------------------------
    def backward(self, xp: Namespace, batch: Batch, *, checked: bool = True,
                 hook: BackwardHook | None = None) -> tuple[Any, Any]:
        """Forward, loss and backward on the layers' current arrays: ``(loss, output)``,
        each parameter's gradient in its ``grad`` (BatchNorm's new running statistics in
        its buffers). ``checked=False`` skips the loss's value checks (a traced step has
        no values to read). ``hook`` (a distributed fit's eager step) is told when backward
        begins, after each layer's backprop which gradients are complete, and when it ends.
        """
        for p in self.params:
            p.grad = None
        after = None
        if hook is not None:
            hook.begin(self.params, int(batch.X.shape[0]))
            after = self._telling(hook)
        if not self.noisy and checked and batch.w is None:  # the plain step, inline
            out, backprop = chain(self.layers, batch.X, xp, False, after)
            loss, grad = self.plan.value_and_grad(xp, out, batch.y)
            backprop(grad)
            if hook is not None:
                hook.finish()
            return loss, out
        if not self.noisy:
            loss, out, backprop = self._forward(xp, batch, checked, after)
        else:
            active = [self.layers[i] for i in self.noisy if self.layers[i].active]
            for layer, u in zip(active, batch.noise, strict=True):
                layer.noise = u
            try:
                loss, out, backprop = self._forward(xp, batch, checked, after)
            finally:
                for layer in active:
                    layer.noise = None
        backprop(self._grad)
        self._grad = None
        if hook is not None:
            hook.finish()
        return loss, out

    def _telling(self, hook: BackwardHook) -> Callable[[int], None]:
        """``after(i)`` for :func:`~mlcore.layers.stack.chain`: tells ``hook`` which
        gradients layer ``i``'s backprop completed."""
        complete = self._completed_by()

        def after(i: int) -> None:
            if i:  # layer 0's gradients are the last: finish follows
                hook.ready(complete[i])

        return after

    def _completed_by(self) -> list[list[int]]:
        """For each layer, the indices of the parameters whose gradient is complete once its
        backprop has run: the parameters of the layer that are in no earlier layer (a
        parameter shared by two layers is complete after the earlier one's)."""
        if self._complete is None:
            self._complete = completed_by(self.layers, self.params)
        return self._complete

    def _forward(self, xp: Namespace, batch: Batch, checked: bool,
                 after: Callable[[int], None] | None = None) -> tuple[Any, Any, Any]:
        if not checked:
            with values_unchecked():
                return self._forward(xp, batch, True, after)
        out, backprop = chain(self.layers, batch.X, xp, False, after)
        if batch.w is None:
            loss, self._grad = self.plan.value_and_grad(xp, out, batch.y)
        else:
            loss, self._grad = self.value_and_grad(xp, out, batch.y,  # type: ignore[misc]
                                                   batch.w)
        return loss, out, backprop

    def gradients(self, xp: Namespace, values: Sequence[Array], buffers: Sequence[Array],
                  batch: Batch,
                  *, checked: bool = True) -> tuple[list[Any], list[Any], Any, Any]:
        """:meth:`backward` as a pure function of the parameter arrays ``values`` and the
        buffer arrays ``buffers``: ``(grads, new_buffers, loss, output)``. The layers'
        parameters and buffers are set to the arguments for the passes and put back."""
        params, holders = self.params, self.holders
        saved = [(p.value, p.grad) for p in params]
        saved_buffers = [h.value for h in holders]
        try:
            for p, v in zip(params, values, strict=True):
                p.value = v
            for h, v in zip(holders, buffers, strict=True):
                h.value = v
            loss, out = self.backward(xp, batch, checked=checked)
            grads = [xp.zeros_like(p.value) if p.grad is None else p.grad for p in params]
            new_buffers = [h.value for h in holders]
        finally:
            for p, (v, g) in zip(params, saved, strict=True):
                p.value, p.grad = v, g
            for h, v in zip(holders, saved_buffers, strict=True):
                h.value = v
        return grads, new_buffers, loss, out

    def step(self, xp: Namespace, values: Sequence[Array], state: dict[str, Any], batch: Batch, *,
             checked: bool = True) -> tuple[tuple[Any, ...], dict[str, Any], Any, Any]:
        """One whole step: ``(new_params, new_state, loss, output)``; ``state`` holds
        ``"lr"``, the optimiser's ``"opt"`` state and the model's ``"buffers"``."""
        grads, buffers, loss, out = self.gradients(xp, values, state["buffers"], batch,
                                                   checked=checked)
        new_values, opt_state = self.opt.update(xp, values, grads, state["opt"], state["lr"])
        return new_values, {"lr": state["lr"], "opt": opt_state,
                            "buffers": tuple(buffers)}, loss, out


def _unpack_opt(opt: Optimizer, flat: Sequence[Array], at: int,
                n: int) -> tuple[dict[str, Any], int]:
    """The optimiser state laid out flat from ``flat[at]`` on, and the index after it."""
    state: dict[str, Any] = {}
    for name in opt.slots:
        state[name], at = tuple(flat[at: at + n]), at + n
    if opt.counted:
        state["step"], at = flat[at], at + 1
    return state, at


def _pack_opt(opt: Optimizer, state: dict[str, Any]) -> list[Any]:
    """The optimiser state as flat arrays: each slot's arrays, then the step count."""
    flat = [a for name in opt.slots for a in state[name]]
    if opt.counted:
        flat.append(state["step"])
    return flat


def flat_step(ts: TrainStep, xp: Namespace, *, outputs: bool, finite_only: bool) -> Pure:
    """:meth:`TrainStep.step` in the hook's calling convention (see the module): flat
    tuples in and out, nothing read back to the host."""
    opt = ts.opt
    n, n_buf = len(ts.params), len(ts.holders)

    def step(values: tuple[Array, ...], flat: tuple[Array, ...], X: Array,
             y: Array) -> tuple[Any, Any, Any]:
        opt_state, at = _unpack_opt(opt, flat, 1, n)
        buffers, at = tuple(flat[at: at + n_buf]), at + n_buf
        w = None
        if ts.weighted:
            w, at = flat[at], at + 1
        noise = tuple(flat[at: len(flat) - 1 if outputs else len(flat)])
        state = {"lr": flat[0], "opt": opt_state, "buffers": buffers}
        new_values, new, loss, out = ts.step(xp, values, state, Batch(X, y, w, noise),
                                             checked=False)
        new_opt, old_opt = _pack_opt(opt, new["opt"]), _pack_opt(opt, opt_state)
        new_buffers = list(new["buffers"])
        if finite_only:
            ok = xp.isfinite(loss)

            def keep(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
                return [xp.where(ok, x, z) for x, z in zip(a, b, strict=True)]
            new_values = tuple(keep(new_values, values))
            new_opt, new_buffers = keep(new_opt, old_opt), keep(new_buffers, buffers)
        rest = (*new_opt, *new_buffers, *flat[len(new_opt) + 1 + n_buf:])
        if outputs:
            rest = (*rest[:-1], out)
        return tuple(new_values), (flat[0], *rest), loss

    return step


def flat_halves(ts: TrainStep, xp: Namespace, *, outputs: bool) -> tuple[Pure, Pure]:
    """The step's two halves in the hook's calling convention, for a distributed fit (the
    gradients are averaged over the processes between them):

    ``gradients(params, (lr, *buffers, [w], *noise, *grads, [output]), X, y)`` gives the
    parameters unchanged and ``(lr, *new_buffers, [w], *noise, *grads, [output])``;
    ``apply(params, (lr, *optimizer_state, *grads), X, y)`` gives the new parameters and
    ``(lr, *new_optimizer_state, *grads)`` (its loss is a zero: the first half had it).
    """
    opt = ts.opt
    n, n_buf = len(ts.params), len(ts.holders)

    def gradients(values: tuple[Array, ...], flat: tuple[Array, ...], X: Array,
                  y: Array) -> tuple[Any, Any, Any]:
        end = len(flat) - n - (1 if outputs else 0)
        at = 1 + n_buf
        w = flat[at] if ts.weighted else None
        noise = tuple(flat[at + (1 if ts.weighted else 0): end])
        grads, buffers, loss, out = ts.gradients(xp, values, flat[1: 1 + n_buf],
                                                 Batch(X, y, w, noise), checked=False)
        rest = (*buffers, *flat[1 + n_buf: end], *grads, *((out,) if outputs else ()))
        return tuple(values), (flat[0], *rest), loss

    def apply(values: tuple[Array, ...], flat: tuple[Array, ...], X: Array,
              y: Array) -> tuple[Any, Any, Any]:
        opt_state, at = _unpack_opt(opt, flat, 1, n)
        grads = flat[at:]
        new_values, new = opt.update(xp, values, grads, opt_state, flat[0])
        return tuple(new_values), (flat[0], *_pack_opt(opt, new), *grads), flat[0] * 0.0

    return gradients, apply
