"""Callbacks: code ``fit`` runs at the start and end of training, of each epoch and batch.

A callback subclasses :class:`Callback` and overrides the hooks it needs. ``fit`` sets
``callback.model`` and ``callback.optimizer`` before training; ``logs`` at the end of an
epoch hold that epoch's history values (``loss``, each metric, ``val_...``), as floats read
back once per epoch. Batch hooks get the batch index and ``logs=None``: reading the batch
loss back would synchronise every step, so they are for side effects (timing, counting).
Setting ``model.stop_training = True`` ends training after the current epoch. ``fit`` calls
the batch hooks only when some callback overrides them, so callbacks cost nothing per batch
otherwise.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidParameterError

__all__ = ["Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "LearningRateScheduler", "CSVLogger"]


class Callback:
    """Base class: every hook does nothing."""

    model: Any = None
    optimizer: Any = None

    def set_context(self, model: Any, optimizer: Any) -> None:
        """Called by ``fit`` before training starts."""
        self.model, self.optimizer = model, optimizer

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Before the first epoch."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """After the last epoch (``logs``: the last epoch's values)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Before epoch ``epoch`` (counted from 0, or from ``initial_epoch``)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """After epoch ``epoch``, with its values (training and validation)."""

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Before training batch ``batch`` of the epoch."""

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """After training batch ``batch`` of the epoch."""


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class CallbackList:
    """The callbacks of one ``fit`` call, called in order."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: Any, optimizer: Any) -> None:
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise InvalidParameterError(
                    f"callbacks must be mlcore.callbacks.Callback objects; received "
                    f"{type(cb).__name__}. Subclass Callback and override its hooks.", cb)
            cb.set_context(model, optimizer)
        self.batch_hooks = any(_overrides(cb, h) for cb in self.callbacks
                               for h in ("on_batch_begin", "on_batch_end"))

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "r2")


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise InvalidParameterError(f"mode must be 'auto', 'min' or 'max', received {mode!r}.",
                                    mode)
    if mode != "auto":
        return mode
    return "max" if any(w in monitor for w in _MAX_WORDS) else "min"


class _Monitor(Callback):
    """Tracks the best value of ``monitor`` (lower for ``mode="min"``, beyond ``min_delta``)."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        self.monitor, self.mode = monitor, _mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def current(self, logs: dict[str, float] | None) -> float:
        logs = logs or {}
        if self.monitor not in logs:
            raise InvalidParameterError(
                f"{type(self).__name__} monitors {self.monitor!r}, which fit does not report; "
                f"available: {', '.join(sorted(logs))}. Pass validation data for 'val_' keys, "
                f"or list the metric in metrics=.", self.monitor)
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (and record it if so)."""
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best = value
        return better


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode="auto"`` maximises accuracy-like keys (acc, auc, precision, recall, f1, r2) and
    minimises the rest. ``restore_best_weights=True`` copies the weights (and BatchNorm
    statistics) at each new best, on the device, and puts them back when training ends.
    ``stopped_epoch`` is the epoch training stopped at (0 if it ran to the end).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False) -> None:
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise InvalidParameterError(
                f"patience must be an integer >= 0, received {patience!r}.", patience)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best_state: dict[str, Any] | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.wait, self.stopped_epoch, self.best_state = 0, 0, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.improved(self.current(logs)):
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best_weights:
                self.best_state = _copy_state(self.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def _copy_state(model: Any) -> dict[str, Any]:
    from ._array import namespace

    return {k: namespace(v).asarray(v, copy=True) for k, v in model.state_dict().items()}


class ModelCheckpoint(_Monitor):
    """Save a checkpoint (model, optimiser state, epoch) after each epoch, atomically.

    ``path`` may hold ``{epoch}`` and history keys as ``str.format`` fields
    (``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``; ``epoch`` counts from 1 there).
    ``save_best_only=True`` writes only when ``monitor`` improves. Resume with
    :func:`mlcore.checkpoint.load_checkpoint` and ``fit(..., initial_epoch=ck.epoch)``.
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto") -> None:
        super().__init__(monitor, mode, 0.0)
        self.path, self.save_best_only = os.fspath(path), save_best_only
        self.last_saved: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.save_best_only and not self.improved(self.current(logs)):
            return
        from .checkpoint import save_checkpoint

        target = self.path.format(epoch=epoch + 1, **(logs or {}))
        save_checkpoint(target, self.model, self.optimizer, epoch=epoch + 1)
        self.last_saved = target


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    After a reduction, ``cooldown`` epochs pass before counting again; the rate never goes
    below ``min_lr``. The rate in use is logged as ``lr``.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto") -> None:
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise InvalidParameterError(f"factor must be in (0, 1), received {factor!r}.",
                                        factor)
        self.factor, self.patience, self.cooldown = float(factor), patience, cooldown
        self.min_lr = float(min_lr)
        self.wait = self.cooling = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = self.current(logs)
        if logs is not None:
            logs["lr"] = self.optimizer.lr
        if self.cooling > 0:
            self.cooling -= 1
            self.wait = 0
        if self.improved(value):
            self.wait = 0
            return
        if self.cooling == 0:
            self.wait += 1
            if self.wait >= self.patience and self.optimizer.lr > self.min_lr:
                self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
                self.wait, self.cooling = 0, self.cooldown


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch: ``lr = schedule(epoch)``.

    ``schedule`` is one of :mod:`mlcore.schedules` or any function of the epoch (or of the
    epoch and the current rate, as in Keras). The rate used is logged as ``lr``.
    """

    def __init__(self, schedule: Callable[..., float]) -> None:
        if not callable(schedule):
            raise InvalidParameterError(
                f"schedule must be a function of the epoch, received {schedule!r}. Use one of "
                f"mlcore.schedules (step, exponential, cosine).", schedule)
        self.schedule = schedule
        try:
            required = [p for p in inspect.signature(schedule).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                               p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            required = []
        self.two_args = len(required) >= 2

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        lr = (self.schedule(epoch, self.optimizer.lr) if self.two_args
              else self.schedule(epoch))
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            raise InvalidParameterError(
                f"The schedule returned {lr!r} for epoch {epoch}; it must return a learning "
                f"rate >= 0.", lr)
        self.optimizer.lr = float(lr)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if logs is not None:
            logs["lr"] = self.optimizer.lr


class CSVLogger(Callback):
    """Write one CSV row per epoch (``epoch`` then every history key) to ``path``.

    ``append=True`` continues an existing file (for resumed training). Each row is flushed
    as it is written.
    """

    def __init__(self, path: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        self.path, self.separator, self.append = os.fspath(path), separator, append
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer, self._header_done = None, exists

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        row = {"epoch": epoch, **(logs or {})}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row),
                                          delimiter=self.separator, extrasaction="ignore")
            if not self._header_done:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
