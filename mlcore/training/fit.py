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

``fit`` reads as its story: its options checked into a
:class:`~mlcore.training.options.FitOptions`, then one helper per concern (the data, the
guard, distribution, the step, the callbacks, the epochs, the loop), in that order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

from ..arrays.namespace import device_of, device_scope, namespace, scoped
from ..callbacks import Callback, CallbackList
from ..distributed.parallel import DataParallel, for_fit
from ..errors import InvalidParameterError
from ..hookspecs import LossFn
from ..layers.core import positive_int
from ..layers.stack import LayerStack, chain
from ..metrics import Metric
from ..optimizers import Optimizer, get_optimizer
from ..types import Array, ArrayLike, Device
from .boundary import prepare, prepare_validation, to_model_input
from .compiled import compiled_executor
from .distributed_callbacks import MainCallbacks
from .distributed_metrics import GatheredTracker
from .eager import EagerStep
from .epochs import (
    Runner,
    StepFn,
    Trainer,
    call_hooks,
    epoch_runner,
    guarded_and_validated,
    run_epochs,
)
from .guards import NonFiniteGuard, make_guard
from .loop import (
    Data,
    Tracker,
    batch_ranges,
    eval_mode,
    evaluate_data,
    is_stream,
    resolve_metrics,
    split,
)
from .lossplan import LossPlan, resolve_loss
from .options import FitOptions
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


class _Prepared(NamedTuple):
    """``fit``'s data after the conversion boundary."""

    data: Data | None  # the in-memory training data; None for a stream of batches
    val: Data | None  # the validation data (validation_data or the split), or None
    stream: object  # ``X``: the iterable of batches when ``data`` is None
    weighted: bool  # sample or class weights scale the training loss


class _Watchers(NamedTuple):
    """The callbacks and the metric trackers of one ``fit`` (their stand-ins in a
    distributed fit)."""

    hooks: CallbackList | None
    tracker: Tracker | None
    val_tracker: Tracker | None


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
    :mod:`mlcore.training.weights`). Epochs are numbered from ``initial_epoch`` to ``epochs - 1``
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
    options = FitOptions(
        loss=loss, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
        shuffle=shuffle, seed=seed, validation_data=validation_data,
        validation_split=validation_split, callbacks=callbacks, metrics=metrics,
        sample_weight=sample_weight, class_weight=class_weight, initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch, verbose=verbose, distributed=distributed,
        on_nonfinite=on_nonfinite, jit_compile=jit_compile)
    plan = resolve_loss(model, options.loss)
    prepared = _prepare_data(model, plan, X, y, options)
    opt = get_optimizer(options.optimizer, model.parameters(), options.lr)
    guard = _setup_guard(model, prepared, opt, options)
    dp, seed = _setup_distribution(model, prepared, opt, options)
    step = _fit_step(model, plan, opt, options, prepared.weighted, dp, guard)
    watchers = _setup_callbacks(model, plan, opt, options, prepared.val, dp)
    trainer = Trainer(model, plan, step, watchers.hooks, watchers.tracker, dp)
    run, per_epoch = epoch_runner(trainer, prepared.data, prepared.stream, options, seed,
                                  guard)
    run = guarded_and_validated(run, trainer, prepared.val, watchers.val_tracker, guard)
    return _run_loop(trainer, run, options, prepared, per_epoch)


# -- fit's concerns, in the order fit meets them ---------------------------------------------
def _prepare_data(model: LayerStack, plan: LossPlan, X: ArrayLike, y: ArrayLike,
                  options: FitOptions) -> _Prepared:
    """The training and validation data through the boundary (weights, validation split)."""
    stream = is_stream(X, y)
    if stream and (options.validation_split or options.sample_weight is not None):
        raise InvalidParameterError(
            "validation_split and sample_weight need in-memory arrays; with streamed data "
            "pass validation_data=(X_val, y_val) and yield (X, y, weight) triples.", X)
    data = None if stream else _in_memory(model, plan, X, y, options)
    val = None if options.validation_data is None else prepare_validation(
        model, plan, options.validation_data)
    if options.validation_split and data is not None:  # FitOptions: val is None here
        data, val = split(model.namespace(data.X), data, options.validation_split)
    if data is not None:
        check_some_weight(model.namespace(data.X), data.weights, options.class_weight)
    weighted = (data is not None and data.weights is not None) or (
        stream and options.class_weight is not None)
    return _Prepared(data, val, X, weighted)


def _in_memory(model: LayerStack, plan: LossPlan, X: ArrayLike, y: ArrayLike,
               options: FitOptions) -> Data:
    """In-memory ``(X, y)`` converted, with their sample weights (or class weights)."""
    data = prepare(model, plan, X, y)
    if options.sample_weight is None and options.class_weight is None:
        return data
    xp = model.namespace(data.X)
    w = sample_weights(xp, model.backend, plan, data.labels, data.X.shape[0], model.dtype,
                       options.sample_weight, options.class_weight, model.out_features)
    return data._replace(weights=w)


def _setup_guard(model: LayerStack, prepared: _Prepared, opt: Optimizer,
                 options: FitOptions) -> NonFiniteGuard | None:
    """The guard of the non-finite policy ``on_nonfinite`` (None: ``"ignore"``)."""
    X = None if prepared.data is None else prepared.data.X
    return make_guard(model, X, opt, options.on_nonfinite, prepared.weighted)


def _setup_distribution(model: LayerStack, prepared: _Prepared, opt: Optimizer,
                        options: FitOptions) -> tuple[DataParallel | None, int | None]:
    """The started :class:`~mlcore.distributed.DataParallel` of a distributed fit (None: not
    asked, or a single process), and the seed this process shuffles with."""
    dp = _data_parallel(model, prepared, opt, options)
    if dp is None:
        return None, options.seed
    if prepared.weighted:
        raise InvalidParameterError(
            "distributed=True trains without sample_weight or class_weight.",
            options.distributed)
    return dp, dp.agree_seed(options.seed)


def _data_parallel(model: LayerStack, prepared: _Prepared, opt: Optimizer,
                   options: FitOptions) -> DataParallel | None:
    """Start the data-parallel plan (facts checked, weights broadcast), or None."""
    if options.distributed is False or options.distributed is None:
        return None
    if prepared.data is None and options.steps_per_epoch is None:
        raise InvalidParameterError(
            "distributed=True with streamed batches needs steps_per_epoch: each process "
            "streams its own part of the data and takes that many batches of it per epoch.",
            options.distributed)
    settings = {"loss": options.loss, "optimizer": opt, "epochs": options.epochs,
                "batch_size": options.batch_size, "shuffle": options.shuffle,
                "seed": options.seed, "initial_epoch": options.initial_epoch,
                "steps_per_epoch": options.steps_per_epoch,
                "callbacks": _names(options.callbacks), "metrics": _names(options.metrics)}
    return for_fit(options.distributed, model, prepared.data, prepared.val, settings)


def _names(items: Sequence[object] | None) -> list[str]:
    """Names of callbacks or metrics, for the processes of a distributed fit to compare."""
    return [x if isinstance(x, str) else type(x).__name__ for x in items or []]


def _fit_step(model: LayerStack, plan: LossPlan, opt: Optimizer, options: FitOptions,
              weighted: bool, dp: DataParallel | None,
              guard: NonFiniteGuard | None) -> StepFn:
    """``fit``'s training step: the one step (:mod:`mlcore.training.step`), compiled by the
    backend where it compiles steps, else eager."""
    ts = TrainStep(model, plan, opt, options.loss, weighted=weighted)
    sync = None if dp is None else dp.reduce_gradients
    # the allreduces start during backward, unless a batch may be left out after it
    hook = dp if dp is not None and dp.overlaps and getattr(guard, "mode", None) != "warn" \
        else None
    eager = EagerStep(ts, guard=guard, sync=sync, hook=hook)
    compiled = compiled_executor(ts, options.jit_compile, eager=eager, outputs=True,
                                 guard=guard, sync=sync)
    return eager if compiled is None else compiled.fit_step()


def _setup_callbacks(model: LayerStack, plan: LossPlan, opt: Optimizer, options: FitOptions,
                     val: Data | None, dp: DataParallel | None) -> _Watchers:
    """The callbacks and metric trackers, shared between the processes of a distributed fit;
    the model's ``last_loss`` set and its ``stop_training`` flag cleared."""
    model.last_loss, model.stop_training = options.loss, False
    found = options.found_metrics
    tracker = Tracker(found, model, plan) if found else None
    val_tracker = Tracker(found, model, plan) if found and val is not None else None
    hooks = CallbackList(options.callbacks, model, opt) if options.callbacks else None
    if dp is not None:
        hooks, tracker = _distributed_parts(dp, model, opt, hooks, tracker)
        val_tracker = _distributed_parts(dp, model, opt, None, val_tracker)[1]
    return _Watchers(hooks, tracker, val_tracker)


def _distributed_parts(dp: DataParallel, model: LayerStack, opt: Optimizer,
                       hooks: CallbackList | None,
                       tracker: Tracker | None) -> tuple[Any, Any]:
    """Callbacks decided on rank 0 and obeyed by all; metrics over every process's batches
    (:mod:`mlcore.distributed`)."""
    return (MainCallbacks(hooks, dp, model, opt),
            None if tracker is None else GatheredTracker(tracker, dp, model.backend))


def _run_loop(t: Trainer, run: Runner, options: FitOptions, prepared: _Prepared,
              per_epoch: int | None) -> dict[str, list[float]]:
    """Train on the data's device, in training mode, with progress shown; the callbacks'
    ``on_train_begin`` before and ``on_train_end`` after; the history."""
    model, hooks, dp = t.model, t.hooks, t.dp
    verbose = options.verbose if dp is None or dp.rank == 0 else False
    total = None if per_epoch is None else (options.epochs - options.initial_epoch) * per_epoch
    where = model.parameters()[0].value if prepared.data is None else prepared.data.X
    with _scope(model, where), progress(verbose, total) as bar, \
            eval_mode(model, training=True), _guard(dp):
        call_hooks(hooks, "on_train_begin", None)
        history, logs = run_epochs(t, run, options, bar, _shown(verbose))
        call_hooks(hooks, "on_train_end", logs)
    return history


def _shown(verbose: bool | int | str) -> bool:
    """Whether the progress display shows the epoch's logs."""
    return verbose not in (False, 0) and (verbose != "auto" or sys.stderr.isatty())


def _guard(dp: DataParallel | None) -> AbstractContextManager[None]:
    """Around the loop: an error on one process of a distributed fit ends every process."""
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
