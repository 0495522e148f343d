"""The training step as a pure function, for backends that compile it.

The eager step (:func:`mlcore.train._compile`) updates the parameters and the optimiser's
state where they are. A backend that can compile a whole step (JAX's ``jax.jit``, CUDA
graphs on CuPy, ``torch.compile``) is handed the same step written as a pure function
(hook :func:`mlcore.hookspecs.mlcore_compile_step`)::

    step(params: tuple, state: tuple, X, y) -> (new_params: tuple, new_state: tuple, loss)

``params`` are the parameters' arrays in ``model.parameters()`` order; ``state`` starts
with the learning rate ``optimizer.lr`` as a 0-d array of the parameters' dtype, then the
optimiser's state (:class:`SGD`: the momentum buffers; :class:`Adam`/:class:`AdamW`: the
step count as a 0-d array, then the scaled moments ``m``, then ``v``); the new state echoes
the learning rate back. For ``fit``, the state ends with one more array, an output buffer
of shape ``(rows, outputs)``, and the new state with the batch's model output in its place
(before a fused softmax or sigmoid): ``fit`` counts the correct predictions and updates its
metrics from it. The state keeps its structure from call to call (a CUDA graph replays into
the same buffers; JAX may reuse a donated buffer). Nothing in the step reads a value back
to the host, so a backend may trace it once per batch shape. :class:`PureStep` runs the
compiled callable and writes its results back into the :class:`~mlcore.layers.Parameter`
objects and the optimiser, so eager and compiled steps can follow one another and give the
same weights to float tolerance.

The learning rate is an argument, so a schedule (``LearningRateScheduler``,
``ReduceLROnPlateau``, ``optimizer.lr = ...``) costs one small host-to-device copy when it
changes, never a new trace. The other hyperparameters (momentum, Nesterov, betas, ``eps``,
weight decay) are constants of a compiled step: when one changes, :class:`PureStep` asks the
backend to compile the step again before the next update, so no step runs with stale ones.
Compiled steps are kept (:data:`CACHE_SIZE`) by what their trace depends on, so a later
``fit`` of a model of the same structure and settings reuses one instead of tracing again.

Only the built-in optimisers have a pure form (:func:`optimizer_rule`); a subclass that
overrides the update runs eagerly.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ._loss_checks import values_unchecked
from ._purerules import optimizer_rule
from .errors import (
    CompiledStepWarning,
    InvalidParameterError,
    MlcoreError,
    NonFiniteError,
    PluginWarning,
)
from .optim import Optimizer

__all__ = ["PureStep", "build", "compiled_step", "check_jit_compile", "optimizer_rule"]

Pure = Callable[[tuple[Any, ...], tuple[Any, ...], Any, Any], tuple[Any, Any, Any]]


class PureStep:
    """A compiled training step bound to a model and optimiser: ``step(X, y) -> loss``.

    Reads the parameters and optimiser state, runs the backend's compiled function and
    writes the results back (the arrays passed in may have been donated to the compiled
    function). With ``outputs`` (the model's output width, or 0), the step's last state
    entry is the batch's model output, kept as :attr:`output`. ``recompile()`` returns the
    backend's compiled step anew; it is called when the optimiser's hyperparameters change
    (see the module).

    ``check(X, y)`` runs once, eagerly, before the first compiled step: the value checks of
    a loss that validates its inputs (the compiled step cannot read values). ``guard(loss)``
    (fit's non-finite guard) checks each loss after the step. ``eager(X, y) -> (loss,
    output)`` is the eager step: when the compiled one fails with an error that is not
    mlcore's (a loss or activation reading a value with ``float()`` under a tracer), a
    :class:`~mlcore.errors.CompiledStepWarning` says so and ``eager`` trains from then on,
    unless ``strict`` (``jit_compile=True``), where the error propagates.
    """

    def __init__(self, params: Sequence[Any], rule: Any, compiled: Pure, xp: Any,
                 outputs: int, recompile: Callable[[], Pure | None], *,
                 check: Callable[[Any, Any], Any] | None = None,
                 guard: Callable[[Any], None] | None = None,
                 eager: Callable[[Any, Any], tuple[Any, Any]],
                 strict: bool = False) -> None:
        self.params, self.rule, self.xp = list(params), rule, xp
        self.compiled: Pure | None = compiled
        self.outputs, self.recompile = outputs, recompile
        self.check, self.guard, self.eager, self.strict = check, guard, eager, strict
        self.output: Any = None
        self._hyper = rule.hyper()
        self._lr: tuple[float, Any] = (math.nan, None)  # (optimizer.lr, its 0-d array)

    def __call__(self, X: Any, y: Any) -> Any:
        return self.run(X, y)[0]

    def run(self, X: Any, y: Any) -> tuple[Any, Any]:
        """One step: ``(loss, output)`` (output None without ``outputs``)."""
        compiled, rule, params = self.compiled, self.rule, self.params  # per-step: a few µs
        if compiled is None:  # fell back to the eager step
            return self.eager(X, y)
        if self.check is not None:
            self.check(X, y)
            self.check = None
        hyper = rule.hyper()
        if hyper != self._hyper:
            compiled = self._recompile(hyper)
        state = (self._lr_array(params[0].value), *rule.state(self.xp))
        if self.outputs:
            state = (*state, self._output_buffer(X))
        try:
            new_params, new_state, loss = compiled(tuple([p.value for p in params]), state,
                                                   X, y)
        except MlcoreError:
            raise
        except Exception as exc:
            if self.strict:
                raise
            return self._fall_back(exc, X, y)
        for p, v in zip(params, new_params, strict=True):
            p.value = v
            p.grad = None
        if self.outputs:
            self.output, new_state = new_state[-1], new_state[:-1]
        self._lr = (self._lr[0], new_state[0])  # the step's own array (the old one donated)
        rule.write(new_state[1:])
        if self.guard is not None:
            try:
                self.guard(loss)
            except NonFiniteError:
                rule.undo()  # the step kept the weights and state (finite_only): not counted
                raise
        return loss, self.output

    def _fall_back(self, exc: Exception, X: Any, y: Any) -> tuple[Any, Any]:
        self.compiled = None
        warnings.warn(CompiledStepWarning(
            f"The compiled training step failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); training goes on with the eager "
            f"step. A loss, activation or layer that reads a value back to the host (float(), "
            f"bool(), int() of an array) cannot be compiled. Pass jit_compile=False to skip "
            f"compiling, or jit_compile=True to raise instead."), stacklevel=4)
        return self.eager(X, y)

    def _lr_array(self, like: Any) -> Any:
        """``optimizer.lr`` as a 0-d array of the parameters' dtype, made when it changes (a
        schedule's new value is one small host-to-device copy, never a new trace)."""
        lr = self.rule.opt.lr
        if lr != self._lr[0] or self._lr[1] is None:
            self._lr = (lr, self.xp.asarray(lr, dtype=like.dtype,
                                            device=getattr(like, "device", None)))
        return self._lr[1]

    def _output_buffer(self, X: Any) -> Any:
        """The last output when it has this batch's shape (a buffer the step may reuse), else
        zeros of ``(rows, outputs)``."""
        rows = X.shape[0]
        if self.output is None or self.output.shape != (rows, self.outputs):
            self.output = self.xp.zeros((rows, self.outputs), dtype=X.dtype,
                                        device=getattr(X, "device", None))
        return self.output

    def _recompile(self, hyper: tuple[Any, ...]) -> Pure:
        compiled = self.recompile()
        if compiled is None:
            raise RuntimeError("the backend compiled this training step once but declined to "
                               "compile it again after a hyperparameter change")
        self.compiled, self._hyper = compiled, hyper
        return compiled

    def fit_step(self) -> Callable[..., tuple[Any, Any]]:
        """``fit``'s step, ``step(X, T, xp) -> (loss, output)`` (as the eager
        :func:`mlcore._loop.compile_step`)."""
        def step(X: Any, T: Any, xp: Any) -> tuple[Any, Any]:
            return self.run(X, T)

        return step


def check_jit_compile(value: Any) -> None:
    """``jit_compile`` must be None, True or False (1 or "yes" would mean something else)."""
    if value is not None and not isinstance(value, bool):
        raise InvalidParameterError(
            f"jit_compile must be None (compile where the backend can), True or False, "
            f"received {value!r}.", value)


def compiled_step(model: Any, plan: Any, opt: Optimizer, jit_compile: bool | None, *,
                  eager: Callable[[Any, Any], tuple[Any, Any]],
                  outputs: bool = False, guard: Any = None) -> PureStep | None:
    """The backend's compiled training step for ``model`` (see :func:`build`), or None."""
    check_jit_compile(jit_compile)
    if jit_compile is False:
        return None
    from .model import chain
    from .plugins import registry

    return build(model, plan, opt, jit_compile, chain, registry().pm.hook.mlcore_compile_step,
                 eager=eager, outputs=outputs, guard=guard)


def build(model: Any, plan: Any, opt: Optimizer, jit_compile: bool | None,
          chain: Callable[..., Any], compile_hook: Callable[..., Any], *,
          eager: Callable[[Any, Any], tuple[Any, Any]], outputs: bool = False,
          guard: Any = None) -> PureStep | None:
    """The model's compiled training step, or None to keep the eager one.

    ``jit_compile=False`` never compiles; ``None`` compiles when the backend offers it and
    the optimiser has a pure form; ``True`` requires both (else InvalidParameterError).
    ``eager`` is the fallback step (see :class:`PureStep`); ``outputs``: fit's form, the
    batch's output in the state, and a batch whose loss is not finite leaves the weights
    and state as they were; ``guard``: fit's non-finite guard, run after each step.
    """
    if jit_compile is False:
        return None
    rule = optimizer_rule(opt)
    backend = model.backend
    width = (model.out_features or 0) if outputs else 0  # fit's output buffer: (rows, width)
    finite_only = outputs  # fit: one program whatever on_nonfinite says (see _pure)

    def compile_anew() -> Pure | None:
        # A new function for new hyperparameters: a tracing compiler may cache traces by
        # the function (JAX does), and an old trace holds the old ones. The same model
        # structure, loss, optimiser kind and hyperparameters find their compiled step in
        # _COMPILED (a later fit, a scikit-learn clone): no second trace.
        hyper = rule.hyper()  # type: ignore[union-attr]  # only called with a rule
        key = _cache_key(model, plan, rule, hyper, width, finite_only, compile_hook)
        hit = None if key is None else _COMPILED.get(key)
        if key is not None and hit is not None:
            _COMPILED.move_to_end(key)
            return hit[0]
        pure = _pure(model, plan, opt.xp, rule, hyper, width > 0, finite_only, chain)
        compiled = _ask(compile_hook, backend, pure)
        if compiled is not None and key is not None:
            _COMPILED[key] = (compiled, _keep_alive(plan, compile_hook))
            while len(_COMPILED) > CACHE_SIZE:
                _COMPILED.popitem(last=False)
        return compiled

    why = (f"the {type(opt).__name__} optimiser has no pure form (only SGD, Adam and AdamW "
           f"do)" if rule is None else
           "the model ends in no Dense layer (fit needs the output width)"
           if outputs and not width else "")
    compiled = None if why else compile_anew()
    if compiled is None and jit_compile:
        why = why or f"backend {backend.name!r} does not compile training steps"
        raise InvalidParameterError(
            f"jit_compile=True but {why}. Leave jit_compile unset to use the eager step "
            f"where no compiled one exists.", jit_compile)
    if compiled is None:
        return None
    return PureStep(model.parameters(), rule, compiled, opt.xp, width, compile_anew,
                    check=None if plan.fused else _first_batch_check(model, plan, chain),
                    guard=guard, eager=eager, strict=bool(jit_compile))


CACHE_SIZE = 32
"""Compiled steps kept (least recently used first out): each holds its trace and, on JAX,
its XLA executables; the parameters are arguments, never kept."""

_COMPILED: OrderedDict[tuple[Any, ...], tuple[Pure, tuple[Any, ...]]] = OrderedDict()


def _cache_key(model: Any, plan: Any, rule: Any, hyper: tuple[Any, ...], width: int,
               finite_only: bool, compile_hook: Any) -> tuple[Any, ...] | None:
    """What a traced step depends on, or None (a layer without ``config()``: not cached).

    The step's arithmetic is fixed by the architecture and dtype (``model.config()``), the
    loss and how training meets it (its ``repr`` holds its parameters; a plugin loss's
    default ``repr`` holds its ``id``, kept alive with the entry), the optimiser kind and
    hyperparameters, fit's form, the backend and device, and which plugins compile steps
    (their objects, kept alive too). Shapes and dtypes of the arguments are the compiler's
    own cache (one trace per batch shape).
    """
    try:
        arch = json.dumps(model.config(), sort_keys=True, default=repr)
    except Exception:  # noqa: BLE001 - a custom layer without config(): compile per fit
        return None
    first = model.parameters()[0].value
    compilers = tuple(id(impl.plugin) for impl in _impls(compile_hook))
    return (model.backend.name, repr(model.backend), str(getattr(first, "device", "")), arch,
            plan.name, repr(plan.fn), plan.trim, plan.fused, type(rule).__name__, hyper,
            width, finite_only, compilers)


def _impls(compile_hook: Any) -> list[Any]:
    get = getattr(compile_hook, "get_hookimpls", None)
    return list(get()) if get is not None else []


def _keep_alive(plan: Any, compile_hook: Any) -> tuple[Any, ...]:
    """Objects whose ``id`` is in a key, held so that no new object reuses it."""
    return (plan.fn, *(impl.plugin for impl in _impls(compile_hook)))


def _first_batch_check(model: Any, plan: Any, chain: Callable[..., Any]) -> Callable[..., Any]:
    """The loss's value checks on the first batch, eagerly (a forward pass and the loss)."""
    layers = model.layers[: len(model.layers) - plan.trim]

    def check(X: Any, y: Any) -> None:
        xp = model.namespace(X)
        plan.value(xp, chain(layers, X, xp, False)[0], y)

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


def _pure(model: Any, plan: Any, xp: Any, rule: Any, hyper: tuple[Any, ...], outputs: bool,
          finite_only: bool, chain: Callable[..., Any]) -> Pure:
    """The pure step: forward, loss, backward through the layers, then ``rule``'s update.

    The layers read their parameters' ``value``; the step sets them to its arguments for
    the forward and backward passes (once per trace, for a tracing backend) and puts the
    stored arrays back before returning. With ``outputs`` the state ends with an output
    buffer (ignored) and the new state with the batch's output in its place. With
    ``finite_only`` a batch whose loss is not finite leaves the parameters and state as they
    were (a select per array): ``on_nonfinite="raise"`` then stops with the weights before
    that batch, as the eager step's guard does before its update; ``"warn"`` and
    ``"ignore"`` skip the batch (the eager step would write its non-finite update). The
    loss's value checks are off inside (:func:`mlcore._loss_checks.values_unchecked`).
    """
    layers = model.layers[: len(model.layers) - plan.trim]
    params = model.parameters()

    def step(values: tuple[Any, ...], state: tuple[Any, ...], X: Any,
             y: Any) -> tuple[Any, Any, Any]:
        saved = [(p.value, p.grad) for p in params]
        try:
            for p, v in zip(params, values, strict=True):
                p.value, p.grad = v, None
            with values_unchecked():
                out, backprop = chain(layers, X, xp, False)
                loss, grad = plan.value_and_grad(xp, out, y)
                backprop(grad)
            grads = [p.grad for p in params]
        finally:
            for p, (v, g) in zip(params, saved, strict=True):
                p.value, p.grad = v, g
        lr, opt_state = state[0], (state[1:-1] if outputs else state[1:])
        new_values, new_state = rule.update(xp, values, grads, opt_state, hyper, lr)
        if finite_only:
            ok = xp.isfinite(loss)
            new_values = tuple(xp.where(ok, a, b) for a, b in zip(new_values, values,
                                                                    strict=True))
            new_state = tuple(xp.where(ok, a, b) for a, b in zip(new_state, opt_state,
                                                                   strict=True))
        return new_values, ((lr, *new_state, out) if outputs else (lr, *new_state)), loss

    return step
