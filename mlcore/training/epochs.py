"""``fit``'s epochs: one over in-memory arrays or over a stream of batches, guarded and
validated, and the epochs in a row between their callbacks.

:func:`mlcore.training.fit.fit` sets up its parts (data, step, callbacks, metrics, the
data-parallel plan) and hands them here as a :class:`Trainer`; :func:`epoch_runner` builds
``run(epoch, bar) -> logs``, :func:`guarded_and_validated` adds the non-finite guard's epoch
count and the validation pass, and :func:`run_epochs` runs the epochs into the history. The
per-batch work is :mod:`mlcore.training.loop`'s.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, NamedTuple, Protocol

from ..callbacks import CallbackList
from ..distributed.parallel import DataParallel
from ..errors import InvalidParameterError
from ..layers.stack import LayerStack
from ..types import Array
from .boundary import prepare
from .guards import NonFiniteGuard
from .loop import (
    Data,
    Tracker,
    batch_ranges,
    eval_mode,
    evaluate_data,
    label_count,
    run_epoch,
    run_stream,
    shuffle_source,
    shuffled,
    stream_batches,
)
from .lossplan import LossPlan
from .options import FitOptions
from .weights import sample_weights

__all__ = ["Trainer", "StepFn", "Runner", "Bar", "epoch_runner", "guarded_and_validated",
           "run_epochs", "call_hooks"]


class Bar(Protocol):
    """The progress display (:func:`mlcore.training.progress.progress`) as an epoch uses it."""

    def update(self, n: int = 1) -> object: ...
    def set_postfix(self, stats: dict[str, float]) -> object: ...


StepFn = Callable[..., tuple[Array, Array | None]]
"""``fit``'s step: ``step(X, y, xp[, weights]) -> (loss, output)``."""
Runner = Callable[[int, Bar], dict[str, float]]
"""``run(epoch, bar) -> logs``: one epoch of ``fit``."""


class Trainer(NamedTuple):
    """What every epoch trains with."""

    model: LayerStack
    plan: LossPlan
    step: StepFn
    hooks: CallbackList | None
    tracker: Tracker | None
    dp: DataParallel | None


def epoch_runner(t: Trainer, data: Data | None, stream: object, options: FitOptions,
                 seed: int | None, guard: NonFiniteGuard | None) -> tuple[Runner, int | None]:
    """``run(epoch, bar) -> logs`` over the in-memory arrays or the stream, and the batches
    per epoch (None: as many as the stream yields)."""
    if data is None:
        return _stream_runner(t, stream, options, guard), options.steps_per_epoch
    return _memory_runner(t, data, options, seed)


def _memory_runner(t: Trainer, data: Data, options: FitOptions,
                   seed: int | None) -> tuple[Runner, int]:
    """Epochs over in-memory arrays, shuffled from a stream that continues across fits."""
    model, dp, initial_epoch = t.model, t.dp, options.initial_epoch
    xp, n = model.namespace(data.X), data.X.shape[0]
    batches = batch_ranges(n, options.batch_size) if dp is None else dp.batches(
        n, options.batch_size)
    one_batch = dp is None and len(batches) == 1  # its mean gradient ignores the order
    count = max(model._epochs_seen, initial_epoch)
    labelled = 0 if data.labels is None else label_count(data.labels)
    rng = shuffle_source(model, seed, count, n) if options.shuffle and not one_batch else None

    def run_in_memory(epoch: int, bar: Bar) -> dict[str, float]:
        if t.tracker is not None:
            t.tracker.reset()
        if dp is None:
            epoch_data = data if rng is None else shuffled(xp, data, rng.permutation(n))
            ranges = batches
        else:  # only this process's rows of the epoch
            epoch_data, ranges = dp.epoch(xp, data, None if rng is None
                                          else rng.permutation(n), batches)
        logs = run_epoch(xp, t.step, t.plan, epoch_data, ranges, bar, t.tracker, t.hooks, dp,
                         labelled)
        if dp is not None:
            dp.end_epoch(model)
        seen = model._epochs_seen = max(model._epochs_seen, initial_epoch) + 1
        if rng is not None:
            model._shuffle_state = (seed, (seen, n), rng)
        return logs

    return run_in_memory, len(batches)


def _stream_runner(t: Trainer, source: object, options: FitOptions,
                   guard: NonFiniteGuard | None) -> Runner:
    """Epochs over a stream of batches (a one-shot stream shared between epochs)."""
    prepare_batch = _stream_preparer(t.model, t.plan, options.class_weight, guard)
    shared: list[object] = []
    steps = options.steps_per_epoch

    def run_streamed(epoch: int, bar: Bar) -> dict[str, float]:
        if t.tracker is not None:
            t.tracker.reset()
        batches = stream_batches(source, steps, shared)
        if t.dp is not None:  # exactly steps_per_epoch batches on every process
            batches = t.dp.stream(batches, steps)  # type: ignore[arg-type]  # required
        elif shared and steps is not None:  # a one-shot stream: it may run out
            counted = _Counted(batches)
            if epoch > options.initial_epoch and counted.empty():
                raise _StreamEndedError(epoch, 0, steps)
            logs = run_stream(t.model, t.plan, t.step, counted, prepare_batch, bar, t.tracker,
                              t.hooks)
            if counted.taken < steps:
                _stream_ended(_StreamEndedError(epoch, counted.taken, steps))
                t.model.stop_training = True
            return logs
        return run_stream(t.model, t.plan, t.step, batches, prepare_batch, bar, t.tracker,
                          t.hooks, t.dp)

    return run_streamed


def _stream_preparer(model: LayerStack, plan: LossPlan, class_weight: dict[int, float] | None,
                     guard: NonFiniteGuard | None) -> Callable[[object, int], Data]:
    """``prepare_batch(item, b)``: one streamed batch through the boundary, weighted."""
    def prepare_batch(item: object, b: int) -> Data:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise InvalidParameterError(
                f"Streamed training data must yield (X_batch, y_batch) pairs (or triples with "
                f"sample weights); batch {b} is a {type(item).__name__}.", item)
        data = prepare(model, plan, item[0], item[1])
        if guard is not None:
            guard.X = data.X  # what its message describes
        weight = item[2] if len(item) == 3 else None
        if weight is None and class_weight is None:
            return data
        xp = model.namespace(data.X)
        return data._replace(weights=sample_weights(
            xp, model.backend, plan, data.labels, data.X.shape[0], model.dtype, weight,
            class_weight, model.out_features))
    return prepare_batch


def guarded_and_validated(run: Runner, t: Trainer, val: Data | None,
                          tracker: Tracker | None, guard: NonFiniteGuard | None) -> Runner:
    """``run`` with the guard told of each epoch, and the validation pass after it."""
    def epoch_and_validation(epoch: int, bar: Bar) -> dict[str, float]:
        if guard is not None:
            guard.start_epoch(epoch)
        logs = run(epoch, bar)
        if val is not None:
            logs |= _validate(t.model, t.plan, val, tracker, t.dp)
            if guard is not None:
                guard.check_validation(logs["val_loss"])
        return logs

    return epoch_and_validation


def _validate(model: LayerStack, plan: LossPlan, val: Data, tracker: Tracker | None,
              dp: DataParallel | None = None) -> dict[str, float]:
    """The ``val_`` logs: loss and metrics on the validation data, in inference mode."""
    if tracker is not None:
        tracker.reset()
    with eval_mode(model):
        stats = evaluate_data(model, plan, val, None, tracker, dp)
    return {f"val_{k}": v for k, v in stats.items()}


def run_epochs(t: Trainer, run: Runner, options: FitOptions, bar: Bar,
               show: bool) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Epochs ``initial_epoch`` to ``epochs - 1`` between their callbacks, until a callback
    stops training or a one-shot stream runs out; the history and the last epoch's logs."""
    history: dict[str, list[float]] = {}
    logs: dict[str, float] = {}
    for epoch in range(options.initial_epoch, options.epochs):
        call_hooks(t.hooks, "on_epoch_begin", epoch, None)
        try:
            logs = run(epoch, bar)
        except _StreamEndedError as end:  # before any batch of this epoch: nothing to log
            _stream_ended(end)
            break
        call_hooks(t.hooks, "on_epoch_end", epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if show:
            bar.set_postfix({k: round(v, 4) for k, v in logs.items()})
        if t.model.stop_training:
            break
    return history, logs


def call_hooks(hooks: CallbackList | None, hook: str, *args: object) -> None:
    """Call ``hook`` on the callbacks, if there are any."""
    if hooks:
        hooks.call(hook, *args)


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
    got = (f"had no batch left for epoch {end.epoch + 1}" if end.taken == 0 else
           f"ran out after {end.taken} of steps_per_epoch={end.steps} batches in epoch "
           f"{end.epoch + 1} (that epoch's values cover those {end.taken} batches)")
    warnings.warn(
        f"The training stream {got}; training stops here. A generator object runs once: "
        f"make it yield at least steps_per_epoch * (epochs - initial_epoch) batches, or pass "
        f"the generator function itself (it is called again each epoch).", RuntimeWarning,
        stacklevel=_caller_of_training())


def _caller_of_training() -> int:
    """The ``stacklevel`` of the first frame outside :mod:`mlcore.training` (``fit``'s
    caller), counted from the function that calls this one, for a warning to point there."""
    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and str(frame.f_globals.get("__name__")).startswith(
            "mlcore.training"):
        frame, level = frame.f_back, level + 1
    return level
