"""Optimisers: one update rule each, run eagerly by ``step()`` and compiled by the training step.

An optimiser *is* its update rule, a pure function written once against the Array API::

    new_params, new_state = opt.update(xp, params, grads, state, lr)

``params`` and ``grads`` are sequences of arrays, ``state`` a dict holding one tuple of
arrays per declared slot (:attr:`Optimizer.slots`: Adam's moments ``"m"`` and ``"v"``,
SGD's momentum ``"buffers"``) and, for optimisers that count their steps
(:attr:`Optimizer.counted`), ``"step"``: the number of updates so far, a Python int when run
eagerly or a 0-d array inside a compiled step. ``update`` first clips the gradients
(``clip_value=``: each element into ``[-clip_value, clip_value]``, as
``torch.nn.utils.clip_grad_value_``; then ``clip_norm=``: all gradients scaled together so
their global L2 norm is at most ``clip_norm``, as ``torch.nn.utils.clip_grad_norm_``), then
applies :meth:`Optimizer.rule`, which holds the optimiser's arithmetic, weight decay
included, and nothing else. The rule never writes into its inputs (a traced JAX step would
break), and its hyperparameters other than ``lr`` (:meth:`Optimizer.hyper`) are constants
of a compiled step.

Two executors run the same rule (:mod:`mlcore.training.step`): ``step()`` here (eager: the
new arrays written back into the :class:`~mlcore.layers.Parameter` objects and
:attr:`Optimizer.state`), and the compiled training step, which hands the rule to the
backend's compiler. Where a backend offers an in-place kernel for the rule (hook
``mlcore_kernel``: NumPy's blocked passes or Numba loop, torch's ``_foreach``-free in-place
ops, CuPy's fused kernels), the eager step runs it instead: a fast path of the rule, tested
against it (:meth:`Optimizer.fast_update`).

Each built-in follows PyTorch's ``torch.optim`` update rule (the tests compare several steps
in float64). RMSprop and Adagrad live in :mod:`mlcore.optimizers`, which registers all of
them through ``mlcore_optimizers``. The state is saved and restored by
:meth:`Optimizer.state_dict` and :meth:`Optimizer.load_state_dict`, which read the same
declaration.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..arrays.namespace import device_of, namespace, writes_in_place
from ..errors import InvalidParameterError
from ..parameter import Parameter, on_device
from ..types import Array, Namespace

__all__ = ["Optimizer", "clip_gradients", "State"]

State = dict[str, Any]
"""An optimiser's state: ``{slot: tuple of arrays (one per parameter), "step": count}``."""


def _check_range(name: str, value: object, low: float, high: float = math.inf, *,
                 open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high)`` (``(low, high)`` with ``open_low``), finite.

    Python and NumPy numbers are accepted; strings, bools and arrays are refused.
    """
    interval = f"{'(' if open_low else '['}{low:g}, {high:g})"
    example = _EXAMPLE.get(name, f"{max(low, 0.0) + (0.1 if open_low else 0.0):g}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            f"{name} must be a number in {interval}, received {value!r} of type "
            f"{type(value).__name__}. Pass a Python float, such as {example}.", value)
    v = float(value)
    if not (math.isfinite(v) and (low < v if open_low else low <= v) and v < high):
        raise InvalidParameterError(
            f"{name} must be a finite number in {interval}, received {value!r}. "
            f"A typical value is {example}.", value)
    return v


_EXAMPLE = {"lr": "0.001", "momentum": "0.9", "weight_decay": "0.0001", "eps": "1e-08",
            "betas[0]": "0.9", "betas[1]": "0.999", "alpha": "0.99", "lr_decay": "0.0",
            "initial_accumulator_value": "0.0"}


def _check_betas(betas: object) -> tuple[float, float]:
    if isinstance(betas, str) or not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidParameterError(
            f"betas must be a pair (beta1, beta2), each in [0, 1), such as (0.9, 0.999); "
            f"received {betas!r}.", betas)
    return (_check_range("betas[0]", betas[0], 0.0, 1.0),
            _check_range("betas[1]", betas[1], 0.0, 1.0))


def _check_clip(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and float(value) > 0):
        raise InvalidParameterError(
            f"{name} must be a positive number or None (finite), received {value!r}. "
            f"Pass, for example, {name}=1.0.", value)
    return float(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(
            f"{name} must be True or False, received {value!r} of type "
            f"{type(value).__name__}.", value)
    return value


def clip_gradients(xp: Namespace, grads: Sequence[Array], clip_norm: float | None,
                   clip_value: float | None) -> list[Array]:
    """``grads`` clipped elementwise to ``[-clip_value, clip_value]``, then scaled together
    to a global L2 norm of at most ``clip_norm`` (PyTorch's ``clip_grad_value_`` and
    ``clip_grad_norm_``, with its ``1e-6``); new arrays, nothing read back to the host."""
    out = list(grads)
    if clip_value is not None:
        out = [xp.clip(g, -clip_value, clip_value) for g in out]
    if clip_norm is not None and out:
        total = xp.sqrt(sum(xp.sum(g * g) for g in out))
        coef = xp.minimum(clip_norm / (total + 1e-6), 1.0)
        out = [g * coef for g in out]
    return out


def _one_minus_power(num: Namespace, beta: float, t: Array | int) -> Array | float:
    """``1 - beta**t``: in Python floats (float64) for a Python count (``num`` is
    ``math``), else as ``-expm1(t log beta)`` on the 0-d array ``t`` (accurate in float32
    too; ``num`` is the array namespace)."""
    if num is math or beta == 0.0:
        return 1.0 - beta**t
    return -num.expm1(t * math.log(beta))


class Optimizer:
    """The base of every optimiser: the parameters, the state and the eager ``step()``.

    A subclass declares its state and writes its rule (see the module)::

        slots = ("m",)              # per-parameter state arrays (zeros unless init_slot)
        counted = True              # keeps a step count, state["step"]
        hyperparameters = ("beta",) # attributes the rule reads, besides lr

        def rule(self, xp, params, grads, state, lr): ...  # -> (new_params, new_state)

    and gets eager, compiled and data-parallel training, ``state_dict`` and checkpoints
    from the base (see :mod:`mlcore.plugin` and ``docs/plugins.md``).
    """

    slots: tuple[str, ...] = ()
    counted: bool = False
    hyperparameters: tuple[str, ...] = ()

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
        self.state: dict[str, Any] = {"step": 0} if self.counted else {}
        """The live state: one list per slot (None for a parameter not updated yet) and the
        step count as a Python int (never read back from a device)."""
        self._fused: Callable[..., None] | None = None  # the backend's in-place kernel, if any
        self._filled: set[str] = set()  # slots every parameter has (no None left)
        self._ruled = _has_rule(type(self))

    # -- the rule ------------------------------------------------------------------------
    def init_slot(self, xp: Namespace, name: str, p: Array) -> Array:
        """The initial value of slot ``name`` for a parameter array ``p`` (zeros)."""
        return xp.zeros_like(p)

    def init(self, xp: Namespace, params: Sequence[Array]) -> State:
        """The state of a fresh optimiser over the arrays ``params``."""
        state: State = {name: tuple(self.init_slot(xp, name, p) for p in params)
                        for name in self.slots}
        if self.counted:
            state["step"] = 0
        return state

    def update(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
               lr: Array | float) -> tuple[tuple[Array, ...], State]:
        """The whole update: gradients clipped as asked, then :meth:`rule`. Pure."""
        grads = clip_gradients(xp, grads, self.clip_norm, self.clip_value)
        return self.rule(xp, params, grads, state, lr)

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        """The optimiser's arithmetic: new parameters and state from (clipped) gradients.

        ``lr`` is a Python float (eager) or a 0-d array (compiled); ``state["step"]`` the
        count before this update. Must return new arrays and leave its inputs unchanged."""
        raise NotImplementedError(
            f"{type(self).__name__} has no update rule: define rule(self, xp, params, grads, "
            f"state, lr) -> (new_params, new_state) (see mlcore.plugin.OptimizerBase).")

    def fast_update(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array],
                    state: State, lr: float) -> State | None:
        """The rule run in place by the backend's kernel (:attr:`_fused`): the parameters
        ``params`` updated where they are, the new state returned (only the entries that
        changed identity), or None when there is no such path (the eager step then runs
        :meth:`rule`). ``grads`` are already clipped. Tested against :meth:`rule`."""
        return None

    def hyper(self) -> tuple[object, ...]:
        """What a compiled step holds as constants: the kind, the clipping settings and
        every declared hyperparameter (a change makes the step compile again)."""
        return (type(self).__qualname__, self.clip_norm, self.clip_value,
                *(_frozen(getattr(self, n)) for n in self.hyperparameters))

    @property
    def has_rule(self) -> bool:
        """Whether this optimiser is written as a rule (every built-in; a subclass that only
        overrides the old ``_step`` trains eagerly and never compiles)."""
        return _has_rule(type(self))

    # -- the eager executor ---------------------------------------------------------------
    def zero_grad(self) -> None:
        """Clear the gradients of the parameters."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, by the rule (on their device)."""
        with self._on_device:
            if not self._ruled:
                self._legacy_step()
                return
            grads = [p.grad for p in self.params]
            present = [g for g in grads if g is not None]
            if len(present) == len(grads):
                self.apply(present)
                return
            chosen = [i for i, g in enumerate(grads) if g is not None]
            if chosen:  # only the parameters that have a gradient
                self.apply(present, chosen)

    def apply(self, grads: Sequence[Array], chosen: Sequence[int] | None = None) -> None:
        """Update the parameters ``chosen`` (default: all) from ``grads`` in place: the
        eager half of the training step (the backend's kernel where one is offered, else
        the rule, whose results are written back)."""
        xp, lr = self.xp, float(self.lr)  # a NumPy scalar would promote float32 arithmetic
        params = self.params if chosen is None else [self.params[i] for i in chosen]
        values = [p.value for p in params]
        slots = self.slots
        if chosen is None and len(self._filled) == len(slots):  # the live lists, as they are
            state: State = {name: self.state[name] for name in slots}
            if self.counted:
                state["step"] = self.state["step"]
        else:
            state = self.gather(chosen)
        if self.clip_norm is not None or self.clip_value is not None:
            grads = clip_gradients(xp, grads, self.clip_norm, self.clip_value)
        done = None if self._fused is None else self.fast_update(xp, values, grads, state, lr)
        if done is not None:
            if done:
                self.store(chosen, done)
            return
        self.scatter(chosen, *self.rule(xp, values, grads, state, lr))

    def _step(self) -> None:
        """The old subclass protocol (update ``p.value`` from ``p.grad`` in place)."""
        raise NotImplementedError

    def _legacy_step(self) -> None:
        if self.clip_value is not None or self.clip_norm is not None:
            held = [p for p in self.params if p.grad is not None]
            grads = [p.grad for p in held if p.grad is not None]
            for p, g in zip(held, clip_gradients(self.xp, grads, self.clip_norm,
                                                 self.clip_value), strict=True):
                p.grad = g
        self._step()

    # -- the live state ------------------------------------------------------------------
    def gather(self, chosen: Sequence[int] | None = None) -> State:
        """The live state of the parameters ``chosen`` (default: all) as the rule takes it
        (a slot not made yet starts at :meth:`init_slot`)."""
        state: State = {}
        for name in self.slots:
            live = self._slot_list(name)
            if name not in self._filled:
                for i in (range(len(live)) if chosen is None else chosen):
                    if live[i] is None:
                        live[i] = self.init_slot(self.xp, name, self.params[i].value)
                if all(a is not None for a in live):
                    self._filled.add(name)  # every parameter has it from now on
            state[name] = tuple(live) if chosen is None else tuple(live[i] for i in chosen)
        if self.counted:
            state["step"] = self.state["step"]
        return state

    def scatter(self, chosen: Sequence[int] | None, values: Sequence[Array],
                state: State) -> None:
        """Write a rule's results back: parameters into their own storage where it can be
        written (its layout kept), the state into :attr:`state`."""
        params = self.params if chosen is None else [self.params[i] for i in chosen]
        for p, v in zip(params, values, strict=True):
            if v is not p.value:
                if writes_in_place(p.value) and _writeable(p.value):
                    p.value[...] = v
                else:
                    p.value = v
        self.store(chosen, state)

    def store(self, chosen: Sequence[int] | None, state: State) -> None:
        """Put the entries of a new ``state`` into :attr:`state` (the step count as a
        Python int: the host's count, never read back from a device)."""
        for name, arrays in state.items():
            if name == "step":
                self.state["step"] = arrays if isinstance(arrays, int) else \
                    self.state["step"] + 1
                continue
            live = self._slot_list(name)
            if chosen is None:
                live[:] = arrays
            else:
                for i, v in zip(chosen, arrays, strict=True):
                    live[i] = v

    def _slot_list(self, name: str) -> list[Any]:
        live = self.state.get(name)
        if live is None:
            live = self.state[name] = [None] * len(self.params)
        return live  # type: ignore[no-any-return]

    def state_arrays(self) -> list[Array]:
        """Every live state array (for a lazy backend's ``materialize``)."""
        return [a for name in self.slots for a in self._slot_list(name) if a is not None]

    def replace_state_arrays(self, arrays: Sequence[Array]) -> None:
        """Put ``arrays`` (as :meth:`state_arrays` listed them) in place."""
        it = iter(arrays)
        for name in self.slots:
            live = self._slot_list(name)
            for i, a in enumerate(live):
                if a is not None:
                    live[i] = next(it)

    def __getattr__(self, name: str) -> Any:
        # The slots by name (opt.m, opt.buffers) and the per-parameter counts (opt.steps),
        # as lists: the attributes earlier versions kept.
        if name.startswith("_") or name in ("state", "params"):
            raise AttributeError(name)
        if name in getattr(type(self), "_all_slots", ()) or name in self.slots:
            return self._slot_list(name)
        if name == "steps" and self.counted:
            return [self.state["step"]] * len(self.params)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- saving ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state: ``type``, ``lr``, ``steps`` (one count per parameter, for
        counting optimisers) and one entry ``"<slot>.<i>"`` per state array of parameter
        ``i`` (the arrays themselves)."""
        state: dict[str, Any] = {"type": type(self).__name__, "lr": self.lr}
        if self.counted:
            state["steps"] = [self.state["step"]] * len(self.params)
        for name in self.slots:
            for i, value in enumerate(self._slot_list(name)):
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
        for key in state:
            found = re.fullmatch(r"(\w+)\.(\d+)", key)
            if found and (found[1] not in self.slots or int(found[2]) >= n):
                raise InvalidParameterError(
                    f"Optimizer state entry {key!r} does not fit this {type(self).__name__}: "
                    f"it has {n} parameters and the state slots {list(self.slots)}. Load the "
                    f"state into an optimiser over the same model it was saved from.", state)
        step = 0
        if self.counted:
            counts = [int(v) for v in state.get("steps", [0] * n)]
            if len(counts) != n or len(set(counts)) > 1:
                raise InvalidParameterError(
                    f"Optimizer state 'steps' is {counts}; this optimiser has {n} parameters, "
                    f"updated together (one count each, all equal).", state)
            step = counts[0] if counts else 0
        lr = _check_range("lr", state["lr"], 0.0)
        slots = {name: [self._slot(state, f"{name}.{i}", p) for i, p in enumerate(self.params)]
                 for name in self.slots}
        self.state = {**slots, **({"step": step} if self.counted else {})}
        self._filled = set()
        self.lr = lr

    def _slot(self, state: dict[str, Any], key: str, p: Parameter) -> Array | None:
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


_RULED: dict[type, bool] = {}


def _has_rule(cls: type) -> bool:
    found = _RULED.get(cls)
    if found is None:
        found = _RULED[cls] = (getattr(cls, "_step", None) is Optimizer._step
                               and getattr(cls, "rule", None) is not Optimizer.rule)
    return found


def _frozen(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _writeable(a: object) -> bool:
    return bool(getattr(getattr(a, "flags", None), "writeable", True))


def _decayed(p: Array, g: Array, weight_decay: float) -> Array:
    """L2 weight decay on the gradient, ``g + weight_decay·p`` (PyTorch's ``weight_decay``)."""
    return g + weight_decay * p if weight_decay else g
