"""Training: ``fit``, ``predict``, ``evaluate`` and the single training step.

The conversion boundary: ``fit``, ``predict`` and ``evaluate`` accept data from anywhere
(lists, NumPy arrays while another backend is selected, arrays of the model's backend) and
convert it once with the model backend's ``asarray``, to the parameters' floating dtype for
inputs (float32 by default). Inside (``forward``, ``train_step``, the layers, losses and
optimisers) arrays never change backend: arrays from another backend raise
:class:`~mlcore.errors.BackendMismatchError`.

A training step resolves the namespace once, runs the layers forward, computes the loss
(fused with a softmax/sigmoid output, see :mod:`mlcore.training.lossplan`), backpropagates, and
updates the parameters in place. It never reads a value back to the host: ``fit`` sums the
batch losses and correct counts on the device and converts them once per epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..arrays.checks import is_real
from ..arrays.checks import seed as check_seed
from ..arrays.namespace import device_of, device_scope, namespace, scoped
from ..callbacks import Callback, CallbackList, check_callbacks
from ..distributed.parallel import DataParallel, for_fit
from ..errors import (
    InvalidParameterError,
)
from ..hookspecs import LossFn
from ..layers.core import positive_int
from ..layers.stack import LayerStack, chain
from ..metrics import Metric
from ..optimizers import Optimizer, get_optimizer
from ..types import Array, ArrayLike, Device
from .boundary import prepare, prepare_validation, to_model_input
from .compiled import check_jit_compile, compiled_executor
from .distributed_callbacks import MainCallbacks
from .distributed_metrics import GatheredTracker
from .eager import EagerStep
from .guards import NonFiniteGuard, make_guard
from .loop import (
    Data,
    Tracker,
    batch_ranges,
    eval_mode,
    evaluate_data,
    is_stream,
    label_count,
    resolve_metrics,
    run_epoch,
    run_stream,
    shuffle_source,
    shuffled,
    split,
    stream_batches,
)
from .lossplan import LossPlan, resolve_loss
from .progress import progress
from .step import TrainStep
from .weights import check_some_weight, sample_weights

__all__ = ["fit", "predict", "evaluate", "make_train_step", "to_model_input"]

def make_train_step(model: LayerStack, loss: str | LossFn, optimizer: str | Optimizer = "sgd",
                    lr: float | None = None, *,
                    jit_compile: bool | None = None) -> Callable[[Any, Any], Any]:
    """A prepared training step ``step(X, y) -> loss`` (a 0-d array; nothing is synced).

    ``X`` and ``y`` must already be arrays of the model's backend and dtype (``y``: class
    indices or rows for cross-entropy, targets shaped like the output otherwise); they are
    not converted or validated, which is what makes the step cheap (use :func:`fit` for
    checked input). Each call runs forward and backward once (in training mode: Dropout
    drops, BatchNorm uses batch statistics) and updates the parameters with ``optimizer``
    (a name or an :class:`~mlcore.optimizers.Optimizer` over ``model.parameters()``), applying
    whatever loss comes (no non-finite check: see :func:`fit`). This is what benchmarks
    time. The step is the one :func:`fit` runs (:mod:`mlcore.training.step`).

    ``jit_compile``: ``None`` (default) runs the whole step compiled where the backend
    compiles steps (jax: ``jax.jit``; cupy: a CUDA graph), else eagerly; ``False`` always
    eagerly; ``True`` compiled, or an :class:`~mlcore.errors.InvalidParameterError` when the
    backend cannot compile (or the optimiser overrides the old ``_step`` instead of
    writing a rule).
    """
    plan = resolve_loss(model, loss)
    opt = get_optimizer(optimizer, model.parameters(), lr)
    ts = TrainStep(model, plan, opt, loss)
    eager = EagerStep(ts)
    modal = model.has_modes()
    first = model.parameters()[0].value
    device = device_of(first)
    compiled = compiled_executor(ts, jit_compile, eager=eager, modal=modal)
    if compiled is not None:
        return scoped(device, compiled)  # type: ignore[no-any-return]
    names = ("X", "y", "model parameters")

    def train_step(X: Array, y: Array) -> Array:
        if modal:
            model.train()
        return eager(X, y, namespace(X, y, first, names=names))[0]

    return scoped(device, train_step)  # type: ignore[no-any-return]


def _non_negative(value: object, name: str) -> int:
    """``value`` as an int >= 0 (``initial_epoch``); see :func:`mlcore.layers.positive_int`."""
    return 0 if value == 0 and not isinstance(value, bool) else positive_int(value, name)


def _in_memory(model: LayerStack, plan: LossPlan, X: ArrayLike, y: ArrayLike,
               opts: dict[str, Any]) -> Data:
    data = prepare(model, plan, X, y)
    if opts["sample_weight"] is None and opts["class_weight"] is None:
        return data
    xp = model.namespace(data.X)
    w = sample_weights(xp, model.backend, plan, data.labels, data.X.shape[0], model.dtype,
                       opts["sample_weight"], opts["class_weight"], model.out_features)
    return data._replace(weights=w)


def _stream_preparer(model: LayerStack, plan: LossPlan, opts: dict[str, Any]) -> Any:
    def prepare_batch(item: Any, b: int) -> Data:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise InvalidParameterError(
                f"Streamed training data must yield (X_batch, y_batch) pairs (or triples with "
                f"sample weights); batch {b} is a {type(item).__name__}.", item)
        data = prepare(model, plan, item[0], item[1])
        if opts["guard"] is not None:
            opts["guard"].X = data.X  # what its message describes
        weight = item[2] if len(item) == 3 else None
        if weight is None and opts["class_weight"] is None:
            return data
        xp = model.namespace(data.X)
        return data._replace(weights=sample_weights(
            xp, model.backend, plan, data.labels, data.X.shape[0], model.dtype, weight,
            opts["class_weight"], model.out_features))
    return prepare_batch


def fit(model: LayerStack, X: ArrayLike, y: ArrayLike = None, *, loss: str | LossFn,
        optimizer: str | Optimizer = "adam", lr: float | None = None, epochs: int = 1,
        batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0, callbacks: Sequence[Callback] | None = None,
        metrics: Sequence[str | Metric[Any]] | None = None, sample_weight: ArrayLike = None,
        class_weight: dict[int, float] | None = None, initial_epoch: int = 0,
        steps_per_epoch: int | None = None, verbose: bool | int | str = "auto",
        distributed: bool | DataParallel = False,
        on_nonfinite: str = "raise", jit_compile: bool | None = None) -> dict[str, list[float]]:
    """Train ``model`` on mini-batches of ``(X, y)``; return the history.

    ``loss``: a registered loss name or loss object; ``optimizer``: a registered name
    (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``, with ``lr``, default
    per optimiser) or an optimiser instance. ``shuffle`` draws a new order each epoch from
    ``backend.rng(seed)``; the stream continues across ``fit`` calls with the same seed, so
    ``fit(epochs=1, seed=S)`` in a loop shuffles as ``fit(epochs=k, seed=S)`` does, and a
    fixed ``seed`` (and model seed) gives identical weights and history on the same backend.

    The history has ``"loss"`` per epoch, ``"accuracy"`` for cross-entropy losses, one key
    per entry of ``metrics`` (names from :func:`mlcore.metric_names` or metric objects), and
    the same with a ``val_`` prefix for ``validation_data=(X_val, y_val)`` or
    ``validation_split`` (the last fraction of the samples, before shuffling). ``callbacks``
    (:mod:`mlcore.callbacks`) run around epochs and batches; ``sample_weight`` (one weight
    per sample) and ``class_weight`` (``{class: weight}``) weight the training loss (see
    :mod:`mlcore._weights`). Epochs are numbered from ``initial_epoch`` to ``epochs - 1``
    (as Keras: resume with ``initial_epoch=k``). ``X`` may instead be an iterable of
    ``(X_batch, y_batch)`` pairs (``y`` omitted): a generator function, a list or a
    DataLoader is iterated again each epoch; ``steps_per_epoch`` caps the batches per epoch
    (required for a one-shot generator, which epochs then share). ``verbose="auto"`` shows a
    tqdm progress bar only when stderr is a terminal; ``True`` always, ``False`` never;
    ``2`` one line per epoch on stderr (Keras' ``verbose=2``, for logs and CI).

    ``distributed=True`` (or a :class:`mlcore.distributed.DataParallel`) trains data-parallel
    over the processes of an MPI job, each taking its share of every global batch of
    ``size · batch_size`` rows (see :mod:`mlcore.distributed.parallel`); in a single
    process it changes nothing. It takes in-memory arrays; callbacks run on rank 0 and
    their decisions reach every process, metrics see every process's batches.

    A NaN or infinite loss stops training with :class:`~mlcore.errors.NonFiniteError`
    naming the epoch, the batch and the likely cause, the model left at its last finite
    weights (:mod:`mlcore.training.guards`); ``on_nonfinite="warn"`` warns once and skips every
    update whose loss is not finite,
    ``"ignore"`` does not check.

    ``jit_compile``: ``None`` (default) trains with the whole step compiled where the
    backend compiles steps (jax: ``jax.jit``; cupy: a CUDA graph; see
    :mod:`mlcore.training.step`): every optimiser written as a rule, Dropout and BatchNorm,
    sample and class weights, clipping and schedules, and a distributed fit's two halves
    (the gradients averaged between them); else eagerly. ``False``: always eagerly.
    ``True``: compiled, or an :class:`~mlcore.errors.InvalidParameterError` saying why
    not. The two give the same weights to float tolerance, and the same non-finite policy.
    """
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    initial_epoch = _non_negative(initial_epoch, "initial_epoch")
    if initial_epoch >= epochs:
        raise InvalidParameterError(
            f"initial_epoch={initial_epoch} is not below epochs={epochs}, so fit would train "
            f"no epoch. epochs is the index of the last epoch plus one (as in Keras), not a "
            f"count: to train k more epochs from epoch {initial_epoch}, pass "
            f"epochs={initial_epoch} + k.", initial_epoch)
    callbacks, seed = check_callbacks(callbacks), check_seed(seed)
    if is_real(validation_split):  # a NumPy float, as a Python one
        validation_split = float(validation_split)
    if steps_per_epoch is not None:
        positive_int(steps_per_epoch, "steps_per_epoch")
    plan = resolve_loss(model, loss)
    opts = {"sample_weight": sample_weight, "class_weight": class_weight}
    stream = is_stream(X, y)
    if stream and (validation_split or sample_weight is not None):
        raise InvalidParameterError(
            "validation_split and sample_weight need in-memory arrays; with streamed data "
            "pass validation_data=(X_val, y_val) and yield (X, y, weight) triples.", X)
    data = None if stream else _in_memory(model, plan, X, y, opts)
    val = None if validation_data is None else prepare_validation(model, plan, validation_data)
    if validation_split and data is not None:
        if val is not None:
            raise InvalidParameterError(
                "Pass validation_data or validation_split, not both.", validation_split)
        data, val = split(model.namespace(data.X), data, validation_split)
    if data is not None:
        check_some_weight(model.namespace(data.X), data.weights, class_weight)
    opt = get_optimizer(optimizer, model.parameters(), lr)
    weighted = (data is not None and data.weights is not None) or (
        stream and class_weight is not None)
    opts["guard"] = guard = make_guard(model, None if data is None else data.X, opt,
                                       on_nonfinite, weighted)
    dp = _data_parallel(distributed, model, data, val, loss=loss, optimizer=opt,
                        epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                        callbacks=_names(callbacks), metrics=_names(metrics))
    if dp is not None and weighted:
        raise InvalidParameterError(
            "distributed=True trains without sample_weight or class_weight.", distributed)
    step = _fit_step(model, plan, opt, loss, weighted, dp, guard, jit_compile)
    seed = seed if dp is None else dp.agree_seed(seed)
    verbose = verbose if dp is None or dp.rank == 0 else False
    model.last_loss, model.stop_training = loss, False
    found = resolve_metrics(metrics)
    tracker = Tracker(found, model, plan) if found else None
    val_tracker = Tracker(found, model, plan) if found and val is not None else None
    hooks = CallbackList(callbacks, model, opt) if callbacks else None
    if dp is not None:
        hooks, tracker = _distributed_parts(dp, model, opt, hooks, tracker)
        val_tracker = _distributed_parts(dp, model, opt, None, val_tracker)[1]
    history: dict[str, list[float]] = {}
    batches = None if data is None else batch_ranges(data.X.shape[0], batch_size) \
        if dp is None else dp.batches(data.X.shape[0], batch_size)
    run = _epoch_runner(model, plan, step, data, X, batches, shuffle, seed, initial_epoch,
                        steps_per_epoch, tracker, hooks, opts, dp)
    n_batches = steps_per_epoch if batches is None else len(batches)
    total = None if n_batches is None else (epochs - initial_epoch) * n_batches
    show = verbose not in (False, 0) and (verbose != "auto" or sys.stderr.isatty())
    with _scope(model, model.parameters()[0].value if data is None else data.X), \
            progress(verbose, total) as bar, eval_mode(model, training=True), _guard(dp):
        if hooks:
            hooks.call("on_train_begin", None)
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            if hooks:
                hooks.call("on_epoch_begin", epoch, None)
            if guard is not None:
                guard.start_epoch(epoch)
            try:
                logs = run(epoch, bar)
            except _StreamEndedError as end:  # before any batch of this epoch: nothing to log
                _stream_ended(end)
                break
            if val is not None:
                logs |= _validate(model, plan, val, val_tracker, dp)
                if guard is not None:
                    guard.check_validation(logs["val_loss"])
            if hooks:
                hooks.call("on_epoch_end", epoch, logs)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if show:
                bar.set_postfix({k: round(v, 4) for k, v in logs.items()})
            if model.stop_training:
                break
        if hooks:
            hooks.call("on_train_end", logs)
    return history


def _fit_step(model: LayerStack, plan: LossPlan, opt: Optimizer, loss: str | LossFn,
              weighted: bool, dp: DataParallel | None, guard: NonFiniteGuard | None,
              jit_compile: bool | None) -> Callable[..., tuple[Array, Array]]:
    """``fit``'s training step: the one step (:mod:`mlcore.training.step`), compiled by the
    backend where it compiles steps, else eager."""
    check_jit_compile(jit_compile)
    ts = TrainStep(model, plan, opt, loss, weighted=weighted)
    sync = None if dp is None else dp.reduce_gradients
    # the allreduces start during backward, unless a batch may be left out after it
    hook = dp if dp is not None and dp.overlaps and getattr(guard, "mode", None) != "warn" \
        else None
    eager = EagerStep(ts, guard=guard, sync=sync, hook=hook)
    compiled = compiled_executor(ts, jit_compile, eager=eager, outputs=True, guard=guard,
                                 sync=sync)
    return eager if compiled is None else compiled.fit_step()


def _validate(model: LayerStack, plan: LossPlan, val: Data, tracker: Tracker | None,
              dp: DataParallel | None = None) -> dict[str, float]:
    if tracker is not None:
        tracker.reset()
    with eval_mode(model):
        stats = evaluate_data(model, plan, val, None, tracker, dp)
    return {f"val_{k}": v for k, v in stats.items()}


def _epoch_runner(model: LayerStack, plan: LossPlan, step: Any, data: Data | None, source: Any,
                  batches: list[tuple[int, int]] | None, shuffle: bool, seed: int | None,
                  initial_epoch: int, steps: int | None, tracker: Tracker | None,
                  hooks: CallbackList | None, opts: dict[str, Any],
                  dp: DataParallel | None) -> Callable[[int, Any], dict[str, float]]:
    """``run(epoch, bar) -> logs`` for in-memory arrays or for a stream of batches."""
    if data is None:
        prepare, shared = _stream_preparer(model, plan, opts), []  # type: ignore[var-annotated]

        def run_streamed(epoch: int, bar: Any) -> dict[str, float]:
            if tracker is not None:
                tracker.reset()
            batches = stream_batches(source, steps, shared)
            if dp is not None:  # exactly steps_per_epoch batches on every process
                batches = dp.stream(batches, steps)  # type: ignore[arg-type]  # required
            elif shared and steps is not None:  # a one-shot stream: it may run out
                counted = _Counted(batches)
                if epoch > initial_epoch and counted.empty():
                    raise _StreamEndedError(epoch, 0, steps)
                logs = run_stream(model, plan, step, counted, prepare, bar, tracker, hooks)
                if counted.taken < steps:
                    _stream_ended(_StreamEndedError(epoch, counted.taken, steps))
                    model.stop_training = True
                return logs
            return run_stream(model, plan, step, batches, prepare, bar, tracker, hooks, dp)

        return run_streamed
    xp, n = model.namespace(data.X), data.X.shape[0]
    one_batch = dp is None and len(batches or ()) == 1  # its mean gradient ignores the order
    count = max(model._epochs_seen, initial_epoch)
    labelled = 0 if data.labels is None else label_count(data.labels)
    rng = shuffle_source(model, seed, count, n) if shuffle and not one_batch else None

    def run_in_memory(epoch: int, bar: Any) -> dict[str, float]:
        if tracker is not None:
            tracker.reset()
        if dp is None:
            epoch_data = data if rng is None else shuffled(xp, data, rng.permutation(n))
            ranges = batches or []
        else:  # only this process's rows of the epoch
            epoch_data, ranges = dp.epoch(xp, data, None if rng is None
                                          else rng.permutation(n), batches or [])
        logs = run_epoch(xp, step, plan, epoch_data, ranges, bar, tracker, hooks, dp,
                         labelled)
        if dp is not None:
            dp.end_epoch(model)
        seen = model._epochs_seen = max(model._epochs_seen, initial_epoch) + 1
        if rng is not None:
            model._shuffle_state = (seed, (seen, n), rng)
        return logs

    return run_in_memory


class _Counted:
    """An iterator that counts what it yields, and can look at its first item ahead."""

    _END = object()

    def __init__(self, items: Iterable[object]) -> None:
        self.items, self.taken = iter(items), 0
        self.ahead: list[Any] = []

    def empty(self) -> bool:
        if not self.ahead:
            item = next(self.items, self._END)
            self.ahead = [] if item is self._END else [item]
        return not self.ahead

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        item = self.ahead.pop() if self.ahead else next(self.items)
        self.taken += 1
        return item


class _StreamEndedError(Exception):
    """A one-shot stream ran out at ``epoch`` after ``taken`` of ``steps`` batches."""

    def __init__(self, epoch: int, taken: int, steps: int) -> None:
        super().__init__(epoch, taken, steps)
        self.epoch, self.taken, self.steps = epoch, taken, steps


def _stream_ended(end: _StreamEndedError) -> None:
    """Say that a one-shot stream ran out, as Keras does, and that training stops there."""
    import warnings

    got = (f"had no batch left for epoch {end.epoch + 1}" if end.taken == 0 else
           f"ran out after {end.taken} of steps_per_epoch={end.steps} batches in epoch "
           f"{end.epoch + 1} (that epoch's values cover those {end.taken} batches)")
    warnings.warn(
        f"The training stream {got}; training stops here. A generator object runs once: "
        f"make it yield at least steps_per_epoch * (epochs - initial_epoch) batches, or pass "
        f"the generator function itself (it is called again each epoch).", RuntimeWarning,
        stacklevel=3)


def _data_parallel(distributed: bool | DataParallel, model: LayerStack, data: Data | None,
                   val: Data | None,
                   **settings: Any) -> Any:
    """The :class:`~mlcore.distributed.DataParallel` of a distributed fit, started (facts
    checked, weights broadcast), or None (not asked, or a single process)."""
    if distributed is False or distributed is None:
        return None
    if data is None and settings.get("steps_per_epoch") is None:
        raise InvalidParameterError(
            "distributed=True with streamed batches needs steps_per_epoch: each process "
            "streams its own part of the data and takes that many batches of it per epoch.",
            distributed)

    return for_fit(distributed, model, data, val, settings)


def _names(items: Sequence[object] | None) -> list[str]:
    """Names of callbacks or metrics, for the processes of a distributed fit to compare."""
    return [x if isinstance(x, str) else type(x).__name__ for x in items or []]


def _distributed_parts(dp: DataParallel, model: LayerStack, opt: Optimizer,
                       hooks: CallbackList | None,
                       tracker: Tracker | None) -> tuple[Any, Any]:
    """Callbacks decided on rank 0 and obeyed by all; metrics over every process's batches
    (:mod:`mlcore.distributed`)."""

    return (MainCallbacks(hooks, dp, model, opt),
            None if tracker is None else GatheredTracker(tracker, dp, model.backend))


def _guard(dp: DataParallel | None) -> Any:
    from contextlib import nullcontext

    return nullcontext() if dp is None else dp.guard()


def predict(model: LayerStack, X: ArrayLike, *, batch_size: int | None = None) -> Any:
    """The model's full output for ``X`` (softmax probabilities for a softmax model), in
    inference mode, as an array of the model's backend; ``X`` is converted at this boundary."""
    Xa = to_model_input(model, X)
    xp = model.namespace(Xa)
    n = Xa.shape[0]
    with _scope(model, Xa), eval_mode(model):
        if batch_size is None or batch_size >= n:
            return chain(model.layers, Xa, xp, False)[0]
        size = positive_int(batch_size, "batch_size")
        parts = [chain(model.layers, Xa[a:b, ...], xp, False)[0] for a, b in batch_ranges(n, size)]
        return xp.concat(parts, axis=0)


def evaluate(model: LayerStack, X: ArrayLike, y: ArrayLike, *, loss: str | LossFn | None = None,
             batch_size: int | None = None,
             metrics: Sequence[str | Metric[Any]] | None = None) -> dict[str, float]:
    """``{"loss": ..., "accuracy": ..., <metric>: ...}`` on ``(X, y)`` in inference mode
    (accuracy for cross-entropy losses; ``metrics`` as in :func:`fit`).

    ``loss`` defaults to the loss of the model's last :func:`fit`.
    """
    loss = model.last_loss if loss is None else loss
    if loss is None:
        raise InvalidParameterError(
            "evaluate needs a loss: pass loss='cross_entropy' (or any loss), or fit the model "
            "first.", None)
    plan = resolve_loss(model, loss)
    data = prepare(model, plan, X, y)
    found = resolve_metrics(metrics)
    tracker = Tracker(found, model, plan) if found else None
    with _scope(model, data.X), eval_mode(model):
        return evaluate_data(model, plan, data, batch_size, tracker)


def _scope(model: LayerStack, X: Array) -> AbstractContextManager[Device]:
    """Run on the device of ``X`` and the parameters (CuPy's current device); see
    :func:`mlcore.arrays.namespace.device_scope`."""
    first = [p.value for p in model.parameters()[:1]]
    return device_scope(X, *first, names=("X", "model parameters")[: 1 + len(first)])
