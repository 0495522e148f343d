"""The epoch loop of ``fit``: batches, weights, metrics, callbacks, validation, streaming.

Nothing here reads a value back to the host inside an epoch: the loss sum, the correct count
and every metric's state stay on the device, and are converted once at the epoch's end.
What a plain ``fit`` does not ask for (metrics, weights, batch callbacks) is not run at all,
so its per-batch work is the training step and two additions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from ..arrays.namespace import count_dtype
from ..backend import Backend, optional_members
from ..callbacks import CallbackList
from ..errors import InvalidParameterError
from ..layers.stack import LayerStack, chain
from ..metrics import Metric, metric
from ..types import Array, ArrayLike, DType, Namespace
from .lossplan import LossPlan
from .tracker import Tracker

__all__ = ["Data", "Tracker", "run_epoch", "evaluate_data", "shuffle_source",
           "eval_mode", "resolve_metrics", "shuffled", "split", "is_stream", "stream_batches",
           "run_stream", "batch_ranges", "batch_slicer", "label_count"]


if TYPE_CHECKING:
    from ..distributed.parallel import DataParallel


class Data(NamedTuple):
    X: Array
    targets: Array
    labels: Array | None  # for accuracy and classification metrics, or None
    weights: Array | None = None  # (N,) sample weights, or None


def resolve_metrics(metrics: Sequence[str | Metric[Any]] | None) -> list[Metric[Any]]:
    """Metric objects for names (``mlcore.metric(name)``) and objects in ``metrics``."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise InvalidParameterError(
            f"metrics must be a list of metric names or objects, received {metrics!r}. "
            f"Write metrics=[{metrics!r}].", metrics)
    found = [metric(m) if isinstance(m, str) else m for m in metrics]
    for m in found:
        if not (hasattr(m, "update") and hasattr(m, "result") and str(getattr(m, "name", ""))):
            raise InvalidParameterError(
                f"{m!r} is not a metric: a metric has a name, update(state, y_pred, y_true) "
                f"and result(state). See mlcore.metrics.Metric.", m)
    return found


def batch_ranges(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


class _Sums:
    """Loss sum, correct count and sample count of an epoch (device arrays until read;
    None before the first batch, which saves two array creations on a one-batch epoch)."""

    def __init__(self) -> None:
        self.total: Any = None
        self.correct: Any = None
        self.n = 0
        self.labelled = 0  # label entries counted for accuracy

    def add(self, loss_sum: Array, correct: Array | None) -> None:
        self.total = loss_sum if self.total is None else self.total + loss_sum
        if correct is not None:
            self.correct = correct if self.correct is None else self.correct + correct

    def reduce(self, xp: Namespace, dtype: DType | None, dp: DataParallel) -> None:
        """Sum over the processes of a data-parallel run (each process adds its share of
        the loss, the correct count and the row and label counts)."""
        if self.total is None:
            self.total = xp.zeros((), dtype=dtype)
        if self.correct is None:
            self.correct = xp.zeros((), dtype=count_dtype(xp))
        total, correct, n, labelled = dp.reduce_sums([self.total, self.correct, self.n,
                                                      self.labelled])
        self.total, self.correct, self.n, self.labelled = total, correct, int(n), int(labelled)

    def read(self) -> dict[str, float]:
        result = {"loss": float(self.total) / self.n}
        if self.labelled:
            result["accuracy"] = int(self.correct) / self.labelled
        return result


def label_count(labels: Array) -> int:
    count = 1
    for d in labels.shape:
        count *= int(d)
    return count


def run_epoch(xp: Namespace, step: Callable[..., tuple[Array, Array | None]], plan: LossPlan,
              data: Data,
              batches: list[tuple[int, int]], bar: Any, tracker: Tracker | None,
              hooks: CallbackList | None, dp: DataParallel | None = None,
              labelled: int = 0) -> dict[str, float]:
    """One pass over in-memory ``data`` in ``batches`` (row ranges); the epoch's values
    (``labelled``: the number of label entries, for accuracy).

    With ``dp`` (data-parallel training) the ranges are this process's shares and the
    epoch sums are reduced over the processes.
    """
    X, L, W = data.X, data.labels, data.weights
    if len(batches) == 1 and dp is None and not tracker and not hooks and W is None:
        return _one_batch(xp, step, plan, data, bar, labelled)
    sums = _Sums()
    hooked = hooks is not None and hooks.batch_hooks
    take = batch_slicer(data, getattr(step, "backend", None))  # fit's executors carry it
    for b, (start, stop) in enumerate(batches):
        if hooked:
            hooks.call("on_batch_begin", b, None)  # type: ignore[union-attr]
        Xb, Tb, Lb, Wb = take(start, stop)
        if Wb is None:
            value, out = step(Xb, Tb, xp)
        else:
            value, out = step(Xb, Tb, xp, Wb)
        sums.add(value * (stop - start), None if Lb is None or out is None
                 else plan.correct(xp, out, Lb))
        if tracker is not None:  # out None: a process's empty share (distributed trackers)
            tracker.update(xp, out, Tb if Lb is None else Lb)
        bar.update(1)
        if hooked:
            hooks.call("on_batch_end", b, None)  # type: ignore[union-attr]
    if dp is None:
        sums.n, sums.labelled = X.shape[0], labelled
    else:  # every process's sums: the epoch over all of the data (its rows, counted here)
        sums.n = sum(stop - start for start, stop in batches)
        sums.labelled = sums.n * _labels_per_row(L)
        sums.reduce(xp, X.dtype, dp)
    return sums.read() | ({} if tracker is None else tracker.results())


def batch_slicer(data: Data, backend: Backend | None = None) -> Callable[[int, int], Data]:
    """``take(start, stop)``: rows ``start:stop`` of every array of ``data``.

    Sliced on the backend's arrays; or, when ``backend`` asks for host batches (the optional
    member ``host_batches``: a graph library, whose every slice is an operation), sliced on
    host copies made once per epoch (``to_numpy``) and converted once each per batch with
    ``backend.asarray`` in the array's own dtype (labels that are the targets, once).
    """
    if backend is None or not optional_members(backend).host_batches:
        X, T, L, W = data

        def take(start: int, stop: int) -> Data:
            return Data(X[start:stop, ...], T[start:stop, ...],
                        None if L is None else L[start:stop, ...],
                        None if W is None else W[start:stop])
        return take
    host = {id(a): (a, backend.to_numpy(a)) for a in data if a is not None}

    def take_host(start: int, stop: int) -> Data:
        done = {key: backend.asarray(rows[start:stop], dtype=a.dtype)
                for key, (a, rows) in host.items()}
        return Data._make(None if a is None else done[id(a)] for a in data)
    return take_host


def _one_batch(xp: Namespace, step: Callable[..., tuple[Array, Array | None]], plan: LossPlan,
               data: Data,
               bar: Any, labelled: int) -> dict[str, float]:
    """An epoch that is one batch of all the data (XOR-sized nets): its mean is the loss."""
    value, out = step(data.X, data.targets, xp)
    bar.update(1)
    if data.labels is None or out is None:
        return {"loss": float(value)}
    return {"loss": float(value), "accuracy": int(plan.correct(xp, out, data.labels)) / labelled}


def run_stream(model: LayerStack, plan: LossPlan, step: Callable[..., tuple[Array, Array | None]],
               batches: Iterator[Any], prepare: Callable[..., Data], bar: Any,
               tracker: Tracker | None, hooks: CallbackList | None,
               dp: DataParallel | None = None) -> dict[str, float]:
    """One epoch over ``batches`` of ``(X, y)`` (or ``(X, y, sample_weight)``) pairs.

    With ``dp`` (data-parallel training) each process streams its own batches and the
    epoch sums are reduced over the processes.
    """
    sums: _Sums | None = None
    xp: Namespace | None = None
    hooked = hooks is not None and hooks.batch_hooks
    for b, item in enumerate(batches):
        if hooked:
            hooks.call("on_batch_begin", b, None)  # type: ignore[union-attr]
        d = prepare(item, b)
        if sums is None or xp is None:
            xp, sums = model.namespace(d.X), _Sums()
        size = d.X.shape[0]
        value, out = (step(d.X, d.targets, xp) if d.weights is None
                      else step(d.X, d.targets, xp, d.weights))
        sums.add(value * size, None if d.labels is None or out is None
                 else plan.correct(xp, out, d.labels))
        sums.n += size
        if d.labels is not None:
            sums.labelled += label_count(d.labels)
        if tracker is not None:  # out None: a process's empty share (distributed trackers)
            tracker.update(xp, out, d.targets if d.labels is None else d.labels)
        bar.update(1)
        if hooked:
            hooks.call("on_batch_end", b, None)  # type: ignore[union-attr]
    if sums is None or xp is None:
        raise InvalidParameterError(
            "The training data yielded no batches this epoch. A generator object runs once: "
            "pass the generator function itself (it is called again each epoch), or set "
            "steps_per_epoch so that one long stream is shared between epochs.", batches)
    if dp is not None:  # every process's sums: the epoch over all of the streams
        sums.reduce(xp, None, dp)
    return sums.read() | ({} if tracker is None else tracker.results())


def _labels_per_row(labels: Array | None) -> int:
    return 0 if labels is None or not labels.shape[0] else label_count(labels) // labels.shape[0]


def evaluate_data(model: LayerStack, plan: LossPlan, data: Data, batch_size: int | None,
                  tracker: Tracker | None = None,
                  dp: DataParallel | None = None) -> dict[str, float]:
    """Loss, accuracy and metrics of ``model`` on ``data`` (inference mode). With ``dp``
    (data-parallel training) each process evaluates its part of ``data``
    (``dp.validation_part``) and the sums are combined over the processes."""
    xp = model.namespace(data.X)
    if dp is not None:
        data = dp.validation_part(data)
    layers = model.layers[: len(model.layers) - plan.trim]
    n = data.X.shape[0]
    sums = _Sums()
    take = batch_slicer(data, model.backend)  # host slices for a host_batches backend
    for start, stop in batch_ranges(n, batch_size or n) if n else []:
        part = take(start, stop)
        out = chain(layers, part.X, xp, False)[0]
        sums.add(plan.value(xp, out, part.targets) * (stop - start),
                 None if part.labels is None else plan.correct(xp, out, part.labels))
        if tracker is not None:
            tracker.update(xp, out, part.targets if part.labels is None else part.labels)
    sums.n = n
    sums.labelled = 0 if data.labels is None else label_count(data.labels)
    if dp is not None:
        sums.reduce(xp, data.X.dtype, dp)
    return sums.read() | ({} if tracker is None else tracker.results())


def shuffled(xp: Namespace, data: Data, order: Array) -> Data:
    """``data``'s rows in ``order``; an array that is two fields (class labels that are the
    targets) is taken once and stays one."""
    taken: dict[int, Array] = {}
    for a in data:
        if a is not None and id(a) not in taken:
            taken[id(a)] = xp.take(a, order, axis=0)
    return Data._make(None if a is None else taken[id(a)] for a in data)


def split(xp: Namespace, data: Data, fraction: float) -> tuple[Data, Data]:
    """The last ``fraction`` of the samples (before shuffling, as Keras) held out."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 <= fraction < 1.0:
        raise InvalidParameterError(
            f"validation_split must be a fraction in [0, 1), received {fraction!r}.", fraction)
    n = data.X.shape[0]
    cut = int(n * (1.0 - fraction))
    if cut < 1 or cut >= n:
        raise InvalidParameterError(
            f"validation_split={fraction} leaves {cut} of {n} samples for training and "
            f"{n - cut} for validation; both need at least one.", fraction)

    def part(lo: int, hi: int) -> Data:
        def rows(a: Array | None) -> Array | None:
            return None if a is None else a[lo:hi, ...]

        return Data(data.X[lo:hi, ...], data.targets[lo:hi, ...], rows(data.labels),
                    rows(data.weights))

    return part(0, cut), part(cut, n)


def is_stream(X: ArrayLike, y: ArrayLike) -> bool:
    """Training data given as an iterable (or function) of batches rather than arrays."""
    if y is not None:
        return False
    if isinstance(X, (list, tuple)):  # a list of (X_batch, y_batch) pairs
        stream = bool(X) and isinstance(X[0], tuple)
    else:
        stream = callable(X) or (not hasattr(X, "shape") and hasattr(X, "__iter__"))
    if not stream:
        raise InvalidParameterError(
            "fit needs targets: pass fit(X, y, ...), or in place of X an iterable of "
            "(X_batch, y_batch) pairs (a generator function, a DataLoader, "
            "mlcore.data.batches(X, y)).", X)
    return True


@contextmanager
def eval_mode(model: LayerStack, training: bool = False) -> Iterator[None]:
    """Run with every layer in inference (or training) mode, then restore the modes."""
    if not model.has_modes():
        yield
        return
    before = model.modes()
    model.train(training)
    try:
        yield
    finally:
        model.set_modes(before)


def shuffle_source(model: LayerStack, seed: int | None, epoch: int, n: int) -> Any:
    """The random source for shuffling epoch ``epoch``: continued from the model's last
    ``fit`` with the same seed, or new and advanced by ``epoch`` permutations of ``n``, so
    ``fit(epochs=1, seed=S)`` in a loop, one ``fit(epochs=k, seed=S)`` and a resumed run all
    shuffle in the same sequence of orders."""
    saved = getattr(model, "_shuffle_state", None)
    if saved is not None and saved[0] == seed and saved[1] == (epoch, n):
        return saved[2]
    rng = model.backend.rng(seed)
    if seed is not None:
        for _ in range(epoch):
            rng.permutation(n)
    return rng


def stream_batches(source: Any, steps: int | None, shared: list[Any]) -> Iterator[Any]:
    """This epoch's batches: ``source()`` for a function, ``iter(source)`` for a re-iterable;
    a one-shot iterator is shared between epochs (``steps`` batches each)."""
    if shared:
        it = shared[0]
    elif callable(source):
        it = iter(source())
    else:
        it = iter(source)
        if it is source:  # a generator object or other one-shot iterator
            shared.append(it)
    return it if steps is None else _take(it, steps)


def _take(it: Iterable[Any], steps: int) -> Iterator[Any]:
    for i, item in enumerate(it):
        yield item
        if i + 1 >= steps:
            return
