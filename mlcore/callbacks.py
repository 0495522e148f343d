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
import string
from collections.abc import Callable, Iterable
from typing import Any

from .arrays.checks import integer, is_real, real
from .arrays.namespace import namespace
from .errors import InvalidParameterError
from .layers.stack import LayerStack
from .optimizers import Optimizer
from .saving.checkpoint import save_checkpoint
from .saving.io import architecture

__all__ = ["Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "LearningRateScheduler", "CSVLogger"]


class Callback:
    """Base class: every hook does nothing."""

    model: Any = None
    optimizer: Any = None

    def set_context(self, model: LayerStack, optimizer: Optimizer) -> None:
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


def check_callbacks(callbacks: Any) -> list[Callback]:
    """``fit``'s ``callbacks=`` as a list of :class:`Callback` objects, checked before
    training starts."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or isinstance(callbacks, (str, bytes, dict)) \
            or not isinstance(callbacks, Iterable):
        raise InvalidParameterError(
            f"callbacks must be a list of mlcore.callbacks.Callback objects, received "
            f"{type(callbacks).__name__} {callbacks!r:.80}. Pass callbacks=[...] (a list, "
            f"even of one callback).", callbacks)
    found = list(callbacks)
    for cb in found:
        if not isinstance(cb, Callback):
            raise InvalidParameterError(
                f"callbacks must be mlcore.callbacks.Callback objects; received "
                f"{type(cb).__name__}. Subclass Callback and override its hooks.", cb)
    return found


class CallbackList:
    """The callbacks of one ``fit`` call, called in order."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: LayerStack,
                 optimizer: Optimizer) -> None:
        self.callbacks = check_callbacks(callbacks)
        for cb in self.callbacks:
            cb.set_context(model, optimizer)
        self.batch_hooks = any(_overrides(cb, h) for cb in self.callbacks
                               for h in ("on_batch_begin", "on_batch_end"))

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, hook: str, *args: object) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "r2")


def _mode(monitor: str, mode: str) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise InvalidParameterError(
            f"monitor must be the name of a history key (such as 'val_loss' or 'loss'), "
            f"received {monitor!r}.", monitor)
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
        # NaN would make every comparison false: no epoch would ever count as an improvement
        self.min_delta = abs(real("min_delta", min_delta, owner=type(self).__name__,
                                  example="min_delta=0.001"))
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
        self.patience = integer("patience", patience, 0, owner="EarlyStopping",
                                example="patience=5")
        self.restore_best_weights = _flag("restore_best_weights", restore_best_weights,
                                          "EarlyStopping")
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


def _copy_state(model: LayerStack) -> dict[str, Any]:

    return {k: namespace(v).asarray(v, copy=True) for k, v in model.state_dict().items()}


class ModelCheckpoint(_Monitor):
    """Save a checkpoint (model, optimiser state, epoch) after each epoch, atomically.

    ``path`` may hold ``{epoch}`` and history keys as ``str.format`` fields
    (``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``; ``epoch`` counts from 1 there).
    ``save_best_only=True`` writes only when ``monitor`` improves. Resume with
    :func:`mlcore.saving.checkpoint.load_checkpoint` and ``fit(..., initial_epoch=ck.epoch)``.
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto") -> None:
        super().__init__(monitor, mode, 0.0)
        self.path = _path("ModelCheckpoint", path)
        self.save_best_only = _flag("save_best_only", save_best_only, "ModelCheckpoint")
        self.fields = _fields(self.path)
        self.last_saved: str | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Refuse a model no checkpoint could rebuild before the first epoch, not after it
        (the message of :func:`~mlcore.saving.save_checkpoint`)."""
        architecture(self.model, f"ModelCheckpoint cannot save checkpoints to {self.path!r}")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.save_best_only and not self.improved(self.current(logs)):
            return

        values = {"epoch": epoch + 1, **(logs or {})}
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise InvalidParameterError(
                f"ModelCheckpoint path {self.path!r} has the field {{{missing[0]}}}, which fit "
                f"does not report; available: {', '.join(sorted(values))}. Pass validation "
                f"data for 'val_' keys, or list the metric in metrics=.", self.path)
        try:
            target = self.path.format(**values)
        except (ValueError, TypeError) as exc:
            raise InvalidParameterError(
                f"ModelCheckpoint path {self.path!r} could not be formatted with this epoch's "
                f"values ({exc}). Use format specs for numbers, such as {{val_loss:.3f}}.",
                self.path) from exc
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
        who = "ReduceLROnPlateau"
        self.factor = real("factor", factor, 0.0, 1.0, open_low=True, open_high=True,
                           owner=who, example="factor=0.5")
        self.patience = integer("patience", patience, 0, owner=who, example="patience=10")
        self.cooldown = integer("cooldown", cooldown, 0, owner=who, example="cooldown=0")
        self.min_lr = real("min_lr", min_lr, 0.0, owner=who, example="min_lr=1e-6")
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
        if not is_real(lr) or not (math.isfinite(float(lr)) and float(lr) >= 0):
            raise InvalidParameterError(
                f"The schedule returned {lr!r} (type {type(lr).__name__}) for epoch {epoch}; "
                f"it must return a finite learning rate >= 0 (a Python or NumPy number).", lr)
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
        self.path = _path("CSVLogger", path)
        if not isinstance(separator, str) or len(separator) != 1 or separator in "\r\n\"":
            raise InvalidParameterError(
                f"CSVLogger: separator must be one character (not a quote or a line break), "
                f"received {separator!r}. Pass separator=',' or separator='\\t'.", separator)
        self.separator = separator
        self.append = _flag("append", append, "CSVLogger")
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer, self._header_done = None, exists

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        row = {"epoch": epoch, **(logs or {})}
        if self._writer is None:
            columns = list(row)
            if self._header_done:  # appending: keep every column of the file and of this run
                columns = self._widen(columns)
            self._writer = csv.DictWriter(self._file, fieldnames=columns,
                                          delimiter=self.separator, extrasaction="ignore")
            if not self._header_done:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def _widen(self, columns: list[str]) -> list[str]:
        """The existing file's columns, then this run's new ones; when there are new ones,
        the file is rewritten (atomically) under the wider header, old rows left blank
        there, so every row sits under its own column names."""
        self._file.close()
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f, delimiter=self.separator)
            old, rows = list(reader.fieldnames or []), list(reader)
        wide = old + [c for c in columns if c not in old]
        if wide != old:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=wide, delimiter=self.separator)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        self._file = open(self.path, "a", newline="")  # noqa: SIM115
        return wide

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _flag(name: str, value: Any, owner: str) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise InvalidParameterError(
            f"{owner}: {name} must be True or False, received {value!r} of type "
            f"{type(value).__name__}.", value)
    return bool(value)


def _path(owner: str, path: Any) -> str:
    try:
        return os.fsdecode(path)
    except TypeError as exc:
        raise InvalidParameterError(
            f"{owner}: path must be a file path (str or pathlib.Path), received "
            f"{type(path).__name__} {path!r:.60}.", path) from exc


def _fields(path: str) -> list[str]:
    """The ``str.format`` fields of a ModelCheckpoint path, checked for syntax now."""
    try:
        parts = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise InvalidParameterError(
            f"ModelCheckpoint path {path!r} is not a valid format string ({exc}). Write "
            f"fields as {{epoch:03d}} or {{val_loss:.3f}}, and a literal brace as {{{{ or }}}}.",
            path) from exc
    fields = []
    for _, field, _, _ in parts:
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise InvalidParameterError(
                f"ModelCheckpoint path {path!r} has the field {{{field}}}; fields must name "
                f"'epoch' or a history key, such as {{epoch:03d}} or {{val_loss:.3f}}.", path)
        fields.append(field)
    return fields
