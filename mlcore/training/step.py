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
between the halves. Two executors run it and nothing else:

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

import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..arrays.loss_checks import values_unchecked
from ..arrays.namespace import namespace
from ..errors import (
    CompiledStepWarning,
    InvalidParameterError,
    MlcoreError,
    NonFiniteError,
    PluginWarning,
)
from ..layers.stack import chain
from ..optimizers.base import Optimizer
from ..plugins import registry
from .materialize import settler
from .weights import weighted_loss

__all__ = ["Batch", "TrainStep", "EagerStep", "CompiledStep", "CompiledHalves",
           "compiled_executor", "flat_step", "flat_halves",
           "check_jit_compile", "compiles", "CACHE_SIZE"]

Pure = Callable[[tuple[Any, ...], tuple[Any, ...], Any, Any], tuple[Any, Any, Any]]


class Batch(NamedTuple):
    """What one step trains on: inputs, targets, sample weights (or None) and the Dropout
    noise (one array per active Dropout layer, in layer order)."""

    X: Any
    y: Any
    w: Any = None
    noise: tuple[Any, ...] = ()


class TrainStep:
    """The training step of ``model`` with loss plan ``plan`` and optimiser ``opt``."""

    def __init__(self, model: Any, plan: Any, opt: Optimizer, loss: Any, *,
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

    # -- the noise, drawn outside the step -----------------------------------------------
    def draw(self, X: Any) -> tuple[Any, ...]:
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
    def backward(self, xp: Any, batch: Batch, *, checked: bool = True) -> tuple[Any, Any]:
        """Forward, loss and backward on the layers' current arrays: ``(loss, output)``,
        each parameter's gradient in its ``grad`` (BatchNorm's new running statistics in
        its buffers). ``checked=False`` skips the loss's value checks (a traced step has
        no values to read)."""
        for p in self.params:
            p.grad = None
        if not self.noisy and checked and batch.w is None:  # the plain step, inline
            out, backprop = chain(self.layers, batch.X, xp, False)
            loss, grad = self.plan.value_and_grad(xp, out, batch.y)
            backprop(grad)
            return loss, out
        if not self.noisy:
            loss, out, backprop = self._forward(xp, batch, checked)
        else:
            active = [self.layers[i] for i in self.noisy if self.layers[i].active]
            for layer, u in zip(active, batch.noise, strict=True):
                layer.noise = u
            try:
                loss, out, backprop = self._forward(xp, batch, checked)
            finally:
                for layer in active:
                    layer.noise = None
        backprop(self._grad)
        self._grad = None
        return loss, out

    def _forward(self, xp: Any, batch: Batch, checked: bool) -> tuple[Any, Any, Any]:
        if not checked:
            with values_unchecked():
                return self._forward(xp, batch, True)
        out, backprop = chain(self.layers, batch.X, xp, False)
        if batch.w is None:
            loss, self._grad = self.plan.value_and_grad(xp, out, batch.y)
        else:
            loss, self._grad = self.value_and_grad(xp, out, batch.y,  # type: ignore[misc]
                                                   batch.w)
        return loss, out, backprop

    def gradients(self, xp: Any, values: Sequence[Any], buffers: Sequence[Any], batch: Batch,
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

    def step(self, xp: Any, values: Sequence[Any], state: dict[str, Any], batch: Batch, *,
             checked: bool = True) -> tuple[tuple[Any, ...], dict[str, Any], Any, Any]:
        """One whole step: ``(new_params, new_state, loss, output)``; ``state`` holds
        ``"lr"``, the optimiser's ``"opt"`` state and the model's ``"buffers"``."""
        grads, buffers, loss, out = self.gradients(xp, values, state["buffers"], batch,
                                                   checked=checked)
        new_values, opt_state = self.opt.update(xp, values, grads, state["opt"], state["lr"])
        return new_values, {"lr": state["lr"], "opt": opt_state,
                            "buffers": tuple(buffers)}, loss, out


class EagerStep:
    """The eager executor: ``step(X, y, xp=None, w=None) -> (loss, output)``.

    ``guard(loss) -> bool`` (fit's non-finite policy) runs between the halves: False skips
    the update, an error stops before it. ``sync(params, rows)`` (a distributed fit)
    replaces each parameter's ``grad`` by the mean over the processes, between the halves.
    A lazy backend's ``materialize`` runs after the update (:mod:`mlcore._materialize`).
    In a distributed fit a process whose loss is skipped under ``"warn"`` still takes part
    in the average, with no rows: every process takes the same update.
    """

    def __init__(self, ts: TrainStep, *, guard: Any = None,
                 sync: Callable[[list[Any], int], None] | None = None) -> None:
        self.ts, self.opt, self.guard, self.sync = ts, ts.opt, guard, sync
        self.settle = settler(ts.model.backend, ts.params, ts.opt)
        self.names = ("X", "y", "model parameters")

    def __call__(self, X: Any, y: Any, xp: Any = None, w: Any = None) -> tuple[Any, Any]:
        ts = self.ts
        params = ts.params
        if xp is None:
            xp = namespace(X, y, params[0].value, names=self.names)
        if self.sync is not None and X.shape[0] == 0:  # this process's share is empty
            for p in params:
                p.grad = xp.zeros_like(p.value)
            self._apply(0)
            return xp.zeros((), dtype=X.dtype), None
        batch = Batch(X, y, w, ts.draw(X) if ts.noisy else ())
        if self.guard is None and not ts.holders and self.sync is None:  # the plain path
            loss, out = ts.backward(xp, batch)
            self.opt.step()
            if self.settle is not None:
                self.settle()
            return loss, out
        buffers = [h.value for h in ts.holders]
        try:
            loss, out = ts.backward(xp, batch)
            applied = self.guard is None or self.guard(loss) is not False
        except NonFiniteError:
            self._restore(buffers)
            raise
        if applied:
            self._apply(X.shape[0])
            return loss, out
        self._restore(buffers)  # a non-finite loss under on_nonfinite="warn": skipped
        if self.sync is not None:  # left out of the processes' average: no rows, no gradient
            for p in params:
                p.grad = xp.zeros_like(p.value)
            self._apply(0)
        return loss, out

    def _restore(self, buffers: list[Any]) -> None:
        for h, v in zip(self.ts.holders, buffers, strict=True):
            h.value = v

    def _apply(self, rows: int) -> None:
        """The update from the gradients in ``grad`` (averaged over the processes with
        ``sync``): ``optimizer.step()``, the rule, in place through the backend's kernel
        where offered (a subclass's own ``step`` is honoured)."""
        if self.sync is not None:
            self.sync(self.ts.params, rows)
        self.opt.step()
        if self.settle is not None:
            self.settle()


def _unpack_opt(opt: Optimizer, flat: Sequence[Any], at: int,
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


def flat_step(ts: TrainStep, xp: Any, *, outputs: bool, finite_only: bool) -> Pure:
    """:meth:`TrainStep.step` in the hook's calling convention (see the module): flat
    tuples in and out, nothing read back to the host."""
    opt = ts.opt
    n, n_buf = len(ts.params), len(ts.holders)

    def step(values: tuple[Any, ...], flat: tuple[Any, ...], X: Any,
             y: Any) -> tuple[Any, Any, Any]:
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


def flat_halves(ts: TrainStep, xp: Any, *, outputs: bool) -> tuple[Pure, Pure]:
    """The step's two halves in the hook's calling convention, for a distributed fit (the
    gradients are averaged over the processes between them):

    ``gradients(params, (lr, *buffers, [w], *noise, *grads, [output]), X, y)`` gives the
    parameters unchanged and ``(lr, *new_buffers, [w], *noise, *grads, [output])``;
    ``apply(params, (lr, *optimizer_state, *grads), X, y)`` gives the new parameters and
    ``(lr, *new_optimizer_state, *grads)`` (its loss is a zero: the first half had it).
    """
    opt = ts.opt
    n, n_buf = len(ts.params), len(ts.holders)

    def gradients(values: tuple[Any, ...], flat: tuple[Any, ...], X: Any,
                  y: Any) -> tuple[Any, Any, Any]:
        end = len(flat) - n - (1 if outputs else 0)
        at = 1 + n_buf
        w = flat[at] if ts.weighted else None
        noise = tuple(flat[at + (1 if ts.weighted else 0): end])
        grads, buffers, loss, out = ts.gradients(xp, values, flat[1: 1 + n_buf],
                                                 Batch(X, y, w, noise), checked=False)
        rest = (*buffers, *flat[1 + n_buf: end], *grads, *((out,) if outputs else ()))
        return tuple(values), (flat[0], *rest), loss

    def apply(values: tuple[Any, ...], flat: tuple[Any, ...], X: Any,
              y: Any) -> tuple[Any, Any, Any]:
        opt_state, at = _unpack_opt(opt, flat, 1, n)
        grads = flat[at:]
        new_values, new = opt.update(xp, values, grads, opt_state, flat[0])
        return tuple(new_values), (flat[0], *_pack_opt(opt, new), *grads), flat[0] * 0.0

    return gradients, apply


class CompiledStep:
    """The compiled executor: ``step(X, y) -> loss``; ``run(X, y, w)`` gives ``(loss,
    output)``. Packs the live parameters, optimiser state and buffers, runs the backend's
    compiled :func:`flat_step` and writes the results back (the arrays passed in may have
    been donated). The optimiser's hyperparameters are constants of a compiled step: when
    :meth:`~mlcore.optimizers.Optimizer.hyper` changes, ``recompile()`` gives a new one first.

    ``check(X, y)`` runs once, eagerly, before the first compiled step (the value checks of
    the loss). ``guard`` is fit's non-finite policy (run after the step). ``eager`` is the
    eager executor: when the compiled step fails with an error that is not mlcore's, a
    :class:`~mlcore.errors.CompiledStepWarning` says so and ``eager`` trains from then on,
    unless ``strict`` (``jit_compile=True``).
    """

    def __init__(self, ts: TrainStep, compiled: Pure, xp: Any, outputs: int,
                 recompile: Callable[[], Pure | None], *, eager: EagerStep,
                 check: Callable[[Any, Any], Any] | None = None, guard: Any = None,
                 strict: bool = False, modal: bool = False) -> None:
        self.ts, self.opt, self.xp = ts, ts.opt, xp
        self.compiled: Any = compiled  # None once it fell back to the eager step
        self._failure: Exception = RuntimeError()
        self.outputs, self.recompile = outputs, recompile
        self.check, self.guard, self.eager, self.strict = check, guard, eager, strict
        self.modal = modal
        self.output: Any = None
        self._hyper = ts.opt.hyper()
        self._lr: tuple[float, Any] = (math.nan, None)  # (optimizer.lr, its 0-d array)
        self._t: tuple[int, Any] = (-1, None)  # (host step count, the step's 0-d array)

    def __call__(self, X: Any, y: Any) -> Any:
        if self.modal:
            self.ts.model.train()
        return self.run(X, y)[0]

    def run(self, X: Any, y: Any, w: Any = None) -> tuple[Any, Any]:
        """One step: ``(loss, output)`` (output None without ``outputs``)."""
        if self.compiled is None:  # fell back to the eager step
            return self.eager(X, y, None, w)
        compiled, ts = self._ready(X, y), self.ts
        flat = (self._lr_array(ts.params[0].value), *self._opt_state(),
                *[h.value for h in ts.holders], *((w,) if ts.weighted else ()),
                *ts.draw(X), *((self._output_buffer(X),) if self.outputs else ()))
        result = self._invoke(compiled, flat, X, y)
        if result is None:
            return self._fall_back(X, y, w)
        new_params, new_flat, loss = result
        self._write(new_params, new_flat)
        if self.guard is not None:
            try:
                applied = self.guard(loss)
            except NonFiniteError:
                self._undo()  # the step kept the weights and state: not counted
                raise
            if applied is False:
                self._undo()
        return loss, self.output

    def _opt_state(self) -> list[Any]:
        opt = self.opt
        live = opt.gather()
        arrays = [a for name in opt.slots for a in live[name]]
        if opt.counted:
            count, t = self._t
            if count != opt.state["step"] or t is None:
                first = self.ts.params[0].value
                t = self.xp.asarray(float(opt.state["step"]), dtype=first.dtype,
                                    device=getattr(first, "device", None))
                self._t = (opt.state["step"], t)
            arrays.append(t)
        return arrays

    def _write(self, new_params: Sequence[Any], new_flat: Sequence[Any]) -> None:
        self._write_params(new_params)
        self._write_buffers(new_flat, self._write_opt(new_flat, 1))
        self._lr = (self._lr[0], new_flat[0])  # the step's own array (the old one donated)
        if self.outputs:
            self.output = new_flat[-1]

    def _write_params(self, new_params: Sequence[Any]) -> None:
        for p, v in zip(self.ts.params, new_params, strict=True):
            p.value = v
            p.grad = None

    def _write_opt(self, new_flat: Sequence[Any], at: int) -> int:
        opt, n = self.opt, len(self.ts.params)
        for name in opt.slots:
            opt.state[name] = list(new_flat[at: at + n])
            at += n
        if opt.counted:
            opt.state["step"] += 1  # the host's count, never read back
            self._t = (opt.state["step"], new_flat[at])
            at += 1
        return at

    def _write_buffers(self, new_flat: Sequence[Any], at: int) -> int:
        for h in self.ts.holders:
            h.value = new_flat[at]
            at += 1
        return at

    def _undo(self) -> None:
        if self.opt.counted:
            self.opt.state["step"] -= 1
            self._t = (-1, None)

    def _fall_back(self, X: Any, y: Any, w: Any) -> tuple[Any, Any]:
        self.compiled, exc = None, self._failure
        warnings.warn(CompiledStepWarning(
            f"The compiled training step failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); training goes on with the eager "
            f"step. A loss, activation or layer that reads a value back to the host (float(), "
            f"bool(), int() of an array) cannot be compiled. Pass jit_compile=False to skip "
            f"compiling, or jit_compile=True to raise instead."), stacklevel=4)
        return self.eager(X, y, None, w)

    def _lr_array(self, like: Any) -> Any:
        """``optimizer.lr`` as a 0-d array of the parameters' dtype, made when it changes (a
        schedule's new value is one small host-to-device copy, never a new trace)."""
        lr = self.opt.lr
        if lr != self._lr[0] or self._lr[1] is None:
            self._lr = (lr, self.xp.asarray(lr, dtype=like.dtype,
                                            device=getattr(like, "device", None)))
        return self._lr[1]

    def _output_buffer(self, X: Any) -> Any:
        rows = X.shape[0]
        if self.output is None or self.output.shape != (rows, self.outputs):
            self.output = self.xp.zeros((rows, self.outputs), dtype=X.dtype,
                                        device=getattr(X, "device", None))
        return self.output

    def _ready(self, X: Any, y: Any) -> Any:
        """The compiled step to run now: the loss's first-batch check done, compiled again
        if the optimiser's hyperparameters changed."""
        if self.check is not None:
            self.check(X, y)
            self.check = None
        hyper = self.opt.hyper()
        if hyper != self._hyper:
            found = self.recompile()
            if found is None:
                raise RuntimeError("the backend compiled this training step once but declined "
                                   "to compile it again after a hyperparameter change")
            self.compiled, self._hyper = found, hyper
        return self.compiled

    def _invoke(self, fn: Pure, flat: tuple[Any, ...], X: Any, y: Any) -> Any:
        """``fn(params, flat, X, y)``; None when it failed with an error that is not
        mlcore's (kept for the warning), unless ``strict``."""
        try:
            return fn(tuple([p.value for p in self.ts.params]), flat, X, y)
        except MlcoreError:
            raise
        except Exception as exc:
            if self.strict:
                raise
            self._failure = exc
            return None

    def fit_step(self) -> Callable[..., tuple[Any, Any]]:
        """``fit``'s step, ``step(X, T, xp, w=None) -> (loss, output)``."""
        def step(X: Any, T: Any, xp: Any = None, w: Any = None) -> tuple[Any, Any]:
            return self.run(X, T, w)

        return step


class CompiledHalves(CompiledStep):
    """The compiled executor of a distributed fit: the two halves (:func:`flat_halves`)
    compiled, the gradients averaged over the processes between them (``sync``, as in the
    eager step). A process whose batch gives a non-finite loss under
    ``on_nonfinite="warn"`` is left out of that average (it contributes no rows), so every
    process takes the same update and none waits on another. A process with no rows (an
    empty share) runs the eager step."""

    def __init__(self, ts: TrainStep, halves: tuple[Pure, Pure], xp: Any, outputs: int,
                 recompile: Callable[[], Any], *, sync: Callable[[list[Any], int], None],
                 **kw: Any) -> None:
        super().__init__(ts, halves, xp, outputs, recompile, **kw)  # type: ignore[arg-type]
        self.sync = sync
        self._grads: list[Any] | None = None  # the last gradients: the next input buffers

    def run(self, X: Any, y: Any, w: Any = None) -> tuple[Any, Any]:
        if self.compiled is None or X.shape[0] == 0:
            return self.eager(X, y, None, w)
        (gradients, apply), ts = self._ready(X, y), self.ts
        params, n = ts.params, len(ts.params)
        grads_in = self._grads or [self.xp.zeros_like(p.value) for p in params]
        flat = (self._lr_array(params[0].value), *[h.value for h in ts.holders],
                *((w,) if ts.weighted else ()), *ts.draw(X), *grads_in,
                *((self._output_buffer(X),) if self.outputs else ()))
        result = self._invoke(gradients, flat, X, y)
        if result is None:
            return self._fall_back(X, y, w)
        values, gflat, loss = result
        self._write_params(values)
        end = len(gflat) - (1 if self.outputs else 0)
        grads = list(gflat[end - n: end])
        if self.outputs:
            self.output = gflat[-1]
        rows = X.shape[0]
        if self.guard is None or self.guard(loss) is not False:
            self._write_buffers(gflat, 1)
        else:  # this process's non-finite batch is left out of the average
            grads, rows = [self.xp.zeros_like(g) for g in grads], 0
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.sync(params, rows)
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        values, new_flat, _ = apply(tuple([p.value for p in params]),
                                    (gflat[0], *self._opt_state(), *grads), X, y)
        self._write_params(values)
        self._write_opt(new_flat, 1)
        self._lr = (self._lr[0], new_flat[0])
        self._grads = list(new_flat[len(new_flat) - n:])
        return loss, self.output


def check_jit_compile(value: Any) -> None:
    """``jit_compile`` must be None, True or False (1 or "yes" would mean something else)."""
    if value is not None and not isinstance(value, bool):
        raise InvalidParameterError(
            f"jit_compile must be None (compile where the backend can), True or False, "
            f"received {value!r}.", value)


def _probe(params: tuple[Any, ...], state: tuple[Any, ...], X: Any,
           y: Any) -> tuple[Any, Any, Any]:
    return params, state, X  # never called: only shown to the hook


_COMPILES: dict[tuple[Any, ...], tuple[bool, tuple[Any, ...]]] = {}


def compiles(backend: Any, compile_hook: Any = None) -> bool:
    """Whether a plugin compiles training steps for ``backend`` (asked once per backend and
    set of compiling plugins, with a step that is never run)."""
    hook = registry().pm.hook.mlcore_compile_step if compile_hook is None else compile_hook
    plugins = tuple(i.plugin for i in _impls(hook))
    key = (backend.name, repr(backend), *map(id, plugins))
    found = _COMPILES.get(key)
    if found is None:  # the plugins are kept with the answer: their ids stay theirs
        found = _COMPILES[key] = (_ask(hook, backend, _probe) is not None, plugins)
    return found[0]


def compiled_executor(ts: TrainStep, jit_compile: bool | None, *, eager: EagerStep,
                      outputs: bool = False, guard: Any = None, modal: bool = False,
                      sync: Callable[[list[Any], int], None] | None = None,
                      ) -> CompiledStep | None:
    """The backend's compiled executor for ``ts``, or None to keep the eager one.

    ``jit_compile=False`` never compiles; ``None`` compiles when the backend does (and the
    optimiser is written as a rule); ``True`` requires it (else InvalidParameterError).
    ``outputs``: fit's form (the batch's output comes back); ``guard``: fit's non-finite
    policy (a non-finite batch leaves the arrays as they were unless it is None);
    ``sync``: a distributed fit's gradient average (the two halves are compiled).
    """
    check_jit_compile(jit_compile)
    if jit_compile is False:
        return None
    model, opt = ts.model, ts.opt
    backend, hook = model.backend, registry().pm.hook.mlcore_compile_step
    width = (model.out_features or 0) if outputs else 0
    why = ("" if compiles(backend, hook) else
           f"backend {backend.name!r} does not compile training steps")
    if not why and not opt.has_rule:
        why = (f"the {type(opt).__name__} optimiser has no update rule (it overrides the old "
               f"_step; write rule() instead, see mlcore.plugin.OptimizerBase)")
    if not why and outputs and not width:
        why = "the model ends in no Dense layer (fit needs the output width)"
    if why:
        if jit_compile:
            raise InvalidParameterError(
                f"jit_compile=True but {why}. Leave jit_compile unset to use the eager step "
                f"where no compiled one exists.", jit_compile)
        return None
    finite_only = guard is not None

    def compile_anew() -> Any:
        # A new function for new hyperparameters: a tracing compiler may cache traces by
        # the function (JAX does), and an old trace holds the old ones. The same model
        # structure, loss, optimiser and settings find their compiled step in _COMPILED
        # (a later fit, a scikit-learn clone): no second trace.
        key = _cache_key(ts, width, finite_only, hook)
        key = None if key is None else (*key, sync is not None)
        hit = None if key is None else _COMPILED.get(key)
        if key is not None and hit is not None:
            _COMPILED.move_to_end(key)
            return hit[0]
        if sync is None:
            compiled: Any = _ask(hook, backend, flat_step(ts, opt.xp, outputs=bool(width),
                                                          finite_only=finite_only))
        else:
            parts = [_ask(hook, backend, half)
                     for half in flat_halves(ts, opt.xp, outputs=bool(width))]
            compiled = None if None in parts else tuple(parts)
        if compiled is not None and key is not None:
            _COMPILED[key] = (compiled, _keep_alive(ts, hook))
            while len(_COMPILED) > CACHE_SIZE:
                _COMPILED.popitem(last=False)
        return compiled

    compiled = compile_anew()
    if compiled is None:
        if jit_compile:
            raise InvalidParameterError(
                f"jit_compile=True but backend {backend.name!r} declined to compile this "
                f"training step. Leave jit_compile unset to use the eager step.", jit_compile)
        return None
    check = None if ts.plan.fused else _first_batch_check(ts)
    if sync is not None:
        return CompiledHalves(ts, compiled, opt.xp, width, compile_anew, sync=sync,
                              eager=eager, check=check, guard=guard, strict=bool(jit_compile))
    return CompiledStep(ts, compiled, opt.xp, width, compile_anew, eager=eager, check=check,
                        guard=guard, strict=bool(jit_compile), modal=modal)


CACHE_SIZE = 32
"""Compiled steps kept (least recently used first out): each holds its trace and, on JAX,
its XLA executables; the parameters are arguments, never kept."""

_COMPILED: OrderedDict[tuple[Any, ...], tuple[Any, tuple[Any, ...]]] = OrderedDict()


def _cache_key(ts: TrainStep, width: int, finite_only: bool,
               compile_hook: Any) -> tuple[Any, ...] | None:
    """What a traced step depends on, or None (a layer without ``config()``: not cached).

    The architecture and dtype (``model.config()``), the loss and how training meets it
    (its ``repr`` holds its parameters; a plugin loss's default ``repr`` holds its ``id``,
    kept alive with the entry), the optimiser's kind, hyperparameters and state layout, the
    form (weighted, output width, non-finite select), the Dropout layers' modes, the backend
    and device, and which plugins compile steps. Shapes and dtypes of the arguments are the
    compiler's own cache (one trace per batch shape).
    """
    model, plan, opt = ts.model, ts.plan, ts.opt
    try:
        arch = json.dumps(model.config(), sort_keys=True, default=repr)
    except Exception:  # noqa: BLE001 - a custom layer without config(): compile per fit
        return None
    first = ts.params[0].value
    compilers = tuple(id(impl.plugin) for impl in _impls(compile_hook))
    modes = tuple(bool(getattr(layer, "training", True)) for layer in ts.layers)
    return (model.backend.name, repr(model.backend), str(getattr(first, "device", "")), arch,
            plan.name, repr(plan.fn), plan.trim, plan.fused, id(type(opt)), opt.hyper(),
            tuple(opt.slots), opt.counted, ts.weighted, width, finite_only, modes, compilers)


def _impls(compile_hook: Any) -> list[Any]:
    get = getattr(compile_hook, "get_hookimpls", None)
    return list(get()) if get is not None else []


def _keep_alive(ts: TrainStep, compile_hook: Any) -> tuple[Any, ...]:
    """Objects whose ``id`` is in a key, held so that no new object reuses it."""
    return (ts.plan.fn, type(ts.opt), *(impl.plugin for impl in _impls(compile_hook)))


def _first_batch_check(ts: TrainStep) -> Callable[..., Any]:
    """The loss's value checks on the first batch, eagerly (a forward pass and the loss)."""
    model, plan, layers = ts.model, ts.plan, ts.layers

    def check(X: Any, y: Any) -> None:
        xp = model.namespace(X)
        modes = [getattr(layer, "training", True) for layer in layers]
        try:
            for layer in layers:
                if getattr(layer, "modal", False):
                    layer.training = False  # no draw, no running statistics moved
            plan.value(xp, chain(layers, X, xp, False)[0], y)
        finally:
            for layer, mode in zip(layers, modes, strict=True):
                layer.training = mode

    return check


def _ask(compile_hook: Callable[..., Any], backend: Any, step: Pure) -> Pure | None:
    """The backend's compiled ``step``, or None; a failing plugin warns and is skipped."""
    try:
        compiled = compile_hook(backend=backend, step=step)
    except Exception as exc:  # noqa: BLE001 - a broken compile plugin must not stop training
        warnings.warn(f"mlcore_compile_step failed for backend {backend.name!r} ({exc!r}); "
                      f"using the eager training step.", PluginWarning, stacklevel=4)
        return None
    return compiled if callable(compiled) else None
