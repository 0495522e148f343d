"""The compiled executor of the one training step (:mod:`.step`): the step in the hook's
calling convention handed to the backend's compiler (``mlcore_compile_step``: ``jax.jit``, a
CUDA graph), the results written back, and the cache of compiled steps. Which backends
compile, and whose fault a failure is: :mod:`.compilers`."""

from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import (
    CompiledStepWarning,
    InvalidParameterError,
    MlcoreError,
    NonFiniteError,
)
from ..layers.stack import chain
from ..plugins import registry
from ..types import Array, Namespace
from .compilers import ask, compiles, failure_text, impls, probe_step
from .eager import EagerStep
from .step import Pure, TrainStep, flat_halves, flat_step

__all__ = ["probe_step", "CompiledStep", "CompiledHalves", "compiled_executor", "check_jit_compile",
           "compiles", "CACHE_SIZE"]


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

    def __init__(self, ts: TrainStep, compiled: Pure, xp: Namespace, outputs: int,
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

    def __call__(self, X: Array, y: Array) -> Any:
        if self.modal:
            self.ts.model.train()
        return self.run(X, y)[0]

    def run(self, X: Array, y: Array, w: Array | None = None) -> tuple[Any, Any]:
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

    def _write(self, new_params: Sequence[Array], new_flat: Sequence[Array]) -> None:
        self._write_params(new_params)
        self._write_buffers(new_flat, self._write_opt(new_flat, 1))
        self._lr = (self._lr[0], new_flat[0])  # the step's own array (the old one donated)
        if self.outputs:
            self.output = new_flat[-1]

    def _write_params(self, new_params: Sequence[Array]) -> None:
        for p, v in zip(self.ts.params, new_params, strict=True):
            p.value = v
            p.grad = None

    def _write_opt(self, new_flat: Sequence[Array], at: int) -> int:
        opt, n = self.opt, len(self.ts.params)
        for name in opt.slots:
            opt.state[name] = list(new_flat[at: at + n])
            at += n
        if opt.counted:
            opt.state["step"] += 1  # the host's count, never read back
            self._t = (opt.state["step"], new_flat[at])
            at += 1
        return at

    def _write_buffers(self, new_flat: Sequence[Array], at: int) -> int:
        for h in self.ts.holders:
            h.value = new_flat[at]
            at += 1
        return at

    def _undo(self) -> None:
        if self.opt.counted:
            self.opt.state["step"] -= 1
            self._t = (-1, None)

    def _fall_back(self, X: Array, y: Array, w: Array | None) -> tuple[Array, Array | None]:
        self.compiled, exc = None, self._failure
        warnings.warn(CompiledStepWarning(
            f"{failure_text(exc, self.ts.model.backend)}; training goes on with the eager "
            f"step. Pass jit_compile=False to skip compiling, or jit_compile=True to raise "
            f"instead."), stacklevel=4)
        return self.eager(X, y, None, w)

    def _lr_array(self, like: Array) -> Any:
        """``optimizer.lr`` as a 0-d array of the parameters' dtype, made when it changes (a
        schedule's new value is one small host-to-device copy, never a new trace)."""
        lr = self.opt.lr
        if lr != self._lr[0] or self._lr[1] is None:
            self._lr = (lr, self.xp.asarray(lr, dtype=like.dtype,
                                            device=getattr(like, "device", None)))
        return self._lr[1]

    def _output_buffer(self, X: Array) -> Any:
        rows = X.shape[0]
        if self.output is None or self.output.shape != (rows, self.outputs):
            self.output = self.xp.zeros((rows, self.outputs), dtype=X.dtype,
                                        device=getattr(X, "device", None))
        return self.output

    def _ready(self, X: Array, y: Array) -> Any:
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

    def _invoke(self, fn: Pure, flat: tuple[Array, ...], X: Array, y: Array) -> Any:
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

    def fit_step(self) -> Callable[..., tuple[Array, Array | None]]:
        """``fit``'s step, ``step(X, T, xp, w=None) -> (loss, output)``."""
        return FitStep(self)


class FitStep:
    """``fit``'s form of a compiled executor: ``step(X, T, xp, w=None) -> (loss, output)``,
    with ``backend``, the model's (as the eager executor has it: the epoch loop reads its
    ``host_batches``)."""

    def __init__(self, executor: CompiledStep) -> None:
        self.run, self.backend = executor.run, executor.ts.model.backend

    def __call__(self, X: Array, T: Array, xp: Namespace | None = None,
                 w: Array | None = None) -> tuple[Array, Array | None]:
        return self.run(X, T, w)


class CompiledHalves(CompiledStep):
    """The compiled executor of a distributed fit: the two halves (:func:`flat_halves`)
    compiled, the gradients averaged over the processes between them (``sync``, as in the
    eager step). A process whose batch gives a non-finite loss under
    ``on_nonfinite="warn"`` is left out of that average (it contributes no rows), so every
    process takes the same update and none waits on another. A process with no rows (an
    empty share) runs the eager step."""

    def __init__(self, ts: TrainStep, halves: tuple[Pure, Pure], xp: Namespace, outputs: int,
                 recompile: Callable[[], Any], *, sync: Callable[[list[Any], int], None],
                 **kw: Any) -> None:
        super().__init__(ts, halves, xp, outputs, recompile, **kw)  # type: ignore[arg-type]
        self.sync = sync
        self._grads: list[Any] | None = None  # the last gradients: the next input buffers

    def run(self, X: Array, y: Array, w: Array | None = None) -> tuple[Any, Any]:
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


def check_jit_compile(value: object) -> None:
    """``jit_compile`` must be None, True or False (1 or "yes" would mean something else)."""
    if value is not None and not isinstance(value, bool):
        raise InvalidParameterError(
            f"jit_compile must be None (compile where the backend can), True or False, "
            f"received {value!r}.", value)


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
            compiled: Any = ask(hook, backend, flat_step(ts, opt.xp, outputs=bool(width),
                                                          finite_only=finite_only))
        else:
            parts = [ask(hook, backend, half)
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
    compilers = tuple(id(impl.plugin) for impl in impls(compile_hook))
    modes = tuple(bool(getattr(layer, "training", True)) for layer in ts.layers)
    return (model.backend.name, repr(model.backend), str(getattr(first, "device", "")), arch,
            plan.name, repr(plan.fn), plan.trim, plan.fused, id(type(opt)), opt.hyper(),
            tuple(opt.slots), opt.counted, ts.weighted, width, finite_only, modes, compilers)


def _keep_alive(ts: TrainStep, compile_hook: Callable[..., object] | None) -> tuple[Any, ...]:
    """Objects whose ``id`` is in a key, held so that no new object reuses it."""
    return (ts.plan.fn, type(ts.opt), *(impl.plugin for impl in impls(compile_hook)))


def _first_batch_check(ts: TrainStep) -> Callable[..., Any]:
    """The loss's value checks on the first batch, eagerly (a forward pass and the loss)."""
    model, plan, layers = ts.model, ts.plan, ts.layers

    def check(X: Array, y: Array) -> None:
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
