"""The gradient buckets of a data-parallel fit: their plan, and their allreduces.

Private to :mod:`mlcore.distributed`; :class:`~mlcore.distributed.DataParallel` (see
:mod:`~mlcore.distributed.parallel`) uses them. :func:`plan_buckets` groups the parameters,
in the order backward completes their gradients, into buckets (one flat message each).
:class:`Reducer` packs each bucket (this process's gradients times its rows, the row count
in bucket 0), sums it over the processes and unpacks it divided by the global row count:
after backward with blocking allreduces, or started non-blocking from the backward pass
(:meth:`~Reducer.begin`, :meth:`~Reducer.ready`, :meth:`~Reducer.finish`) and completed
before the update. Packing and unpacking are written once (:meth:`Reducer._pack`,
:meth:`Reducer._unpack`) and serve both ways, so each gradient value goes through the same
operations whichever way and whichever bucket carries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..layers.core import Layer, Parameter
from ..layers.stack import completed_by
from ..types import Array, Namespace
from .comm import Communicator, Pending

__all__ = ["Reducer", "backward_groups", "bucket_sizes", "new_stats", "plan_buckets",
           "plan_for", "transport"]


def new_stats() -> dict[str, float]:
    """``DataParallel.stats`` of a fit that has taken no step."""
    return {"steps": 0, "allreduce_seconds": 0.0, "early_buckets": 0}


def backward_groups(layers: Sequence[Layer], params: Sequence[Parameter]) -> list[list[int]]:
    """The indices of ``params`` in the groups whose gradients backward completes together,
    in the order it completes them: each layer's (:func:`~mlcore.layers.stack.completed_by`)
    from the last layer to the first, each from its last parameter to its first; then any
    parameter of no layer."""
    groups = [sorted(g, reverse=True) for g in reversed(completed_by(layers, params)) if g]
    seen = {i for g in groups for i in g}
    rest = [i for i in reversed(range(len(params))) if i not in seen]
    return groups + ([rest] if rest else [])


def plan_buckets(params: Sequence[Parameter], cap: int, first_cap: int | None = None,
                 groups: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """The parameters in backward's order (``groups``, see :func:`backward_groups`; default:
    each parameter alone, the last first) in buckets of at most ``cap`` elements; a
    parameter larger than the cap gets a bucket of its own.

    ``first_cap`` (overlap): the first bucket holds at most that many elements and ends at
    a group (layer) boundary, the whole groups that fit, so it is complete, and its
    allreduce can start, as soon as backward has passed its last group; when even the first
    group does not fit, it is cut at parameters like the others. The plan depends only on
    the parameters' shapes, the layers and the caps (every process compares it before the
    first step)."""
    order_groups = [list(g) for g in groups] if groups is not None else \
        [[i] for i in reversed(range(len(params)))]
    order = [i for g in order_groups for i in g]
    buckets: list[list[int]] = []
    taken = 0
    if first_cap is not None:
        used = 0
        for g in order_groups:
            count = sum(_numel(params[i].shape) for i in g)
            if used + count > first_cap:
                break
            used += count
            taken += len(g)
        if taken:
            buckets.append(order[:taken])
    current: list[int] = []
    used, limit = 0, first_cap if first_cap is not None and not buckets else cap
    for i in order[taken:]:
        count = _numel(params[i].shape)
        if current and used + count > limit:
            buckets.append(current)
            current, used, limit = [], 0, cap
        current.append(i)
        used += count
    if current or not buckets:
        buckets.append(current)
    return buckets


def plan_for(xp: Namespace, layers: Sequence[Layer], params: Sequence[Parameter],
             bucket_bytes: int, first_bytes: int | None) -> list[list[int]]:
    """:func:`plan_buckets` for the parameters of ``layers`` (arrays of namespace ``xp``)
    with caps in bytes: at most ``bucket_bytes`` a bucket, ``first_bytes`` the first
    (overlap; None: no smaller first bucket)."""
    itemsize = xp.finfo(params[0].value.dtype).bits // 8
    return plan_buckets(params, bucket_bytes // itemsize,
                        None if first_bytes is None else first_bytes // itemsize,
                        backward_groups(layers, params))


def transport(comm: object, nonblocking: bool) -> str:
    """How the gradients travel (compared between the processes at the start): the
    communicator's class, and blocking or not."""
    kind = type(comm)
    return f"{kind.__module__}.{kind.__qualname__}: " + (
        "non-blocking allreduces started in backward" if nonblocking
        else "blocking allreduces after backward")


def bucket_sizes(params: Sequence[Parameter], buckets: Sequence[Sequence[int]]) -> list[int]:
    """The elements of each bucket's message (bucket 0 also carries the row count)."""
    return [sum(_numel(params[i].shape) for i in bucket) + (b == 0)
            for b, bucket in enumerate(buckets)]


class _Step:
    """One step's gradient buckets in flight: the parameters, this process's rows, how many
    parameters each bucket still waits for, the started allreduces (bucket order) and the
    seconds spent on them so far."""

    __slots__ = ("missing", "params", "pending", "rows", "seconds")

    def __init__(self, params: Sequence[Parameter], rows: int, missing: list[int]) -> None:
        self.params, self.rows, self.missing = params, rows, missing
        self.pending: list[Pending] = []
        self.seconds = 0.0


class Reducer:
    """The gradient buckets ``buckets`` (parameter indices, message order) of ``n_params``
    parameters over ``comm``, on arrays of namespace ``xp``: ``nonblocking``, each bucket's
    allreduce is started (:meth:`Communicator.start_allreduce`) as soon as its gradients are
    complete; else all are reduced after backward with blocking allreduces. ``stats`` is
    updated in place (``steps``, ``allreduce_seconds``, ``early_buckets``); ``named(what)``
    gives the ``what=`` keyword of ``comm``'s collectives (nothing for a stand-in)."""

    def __init__(self, comm: Communicator, xp: Namespace, buckets: list[list[int]],
                 n_params: int, nonblocking: bool, stats: dict[str, float],
                 named: Callable[[str], dict[str, str]]) -> None:
        self.comm, self.xp, self.buckets = comm, xp, buckets
        self.nonblocking, self.stats, self.named = nonblocking, stats, named
        self.bucket_of = [0] * n_params  # parameter index -> its bucket
        for b, bucket in enumerate(buckets):
            for i in bucket:
                self.bucket_of[i] = b
        self._step: _Step | None = None  # this step's buckets in flight

    # -- packing, once for both ways -------------------------------------------------------
    def _pack(self, b: int, params: Sequence[Parameter], rows: int) -> Array:
        """Bucket ``b`` as one flat buffer: each gradient (zeros for a parameter backward
        did not reach) as a row, then (bucket 0) the count 1, all times ``rows``."""
        xp, dtype = self.xp, params[0].value.dtype
        parts = []
        for i in self.buckets[b]:
            grad = params[i].grad
            parts.append(_flat(xp, xp.zeros(params[i].shape, dtype=dtype) if grad is None
                               else grad))
        if b == 0:
            parts.append(xp.ones((1,), dtype=dtype))
        flat = xp.concat(parts)
        flat *= float(rows)
        return flat

    def _unpack(self, b: int, flat: Array, params: Sequence[Parameter],
                inverse: Array | None) -> Array:
        """Bucket ``b``'s summed buffer ``flat`` divided by the global row count (read from
        bucket 0, whose ``1 / count`` is returned to divide the later buckets by: pass
        it as ``inverse``) and cut back into the parameters' ``grad``."""
        if b == 0 or inverse is None:
            inverse = 1.0 / flat[-1:]
        flat *= inverse
        bucket = self.buckets[b]
        for i, part in zip(bucket, _split(self.xp, flat, params, bucket), strict=True):
            params[i].grad = part
        return inverse

    # -- after backward --------------------------------------------------------------------
    def reduce(self, params: Sequence[Parameter], rows: int) -> None:
        """Replace every ``grad`` by the mean gradient over the global batch; ``rows`` is
        the size of this process's slice. Non-blocking: completes the buckets the backward
        pass started (and starts the others)."""
        if self.nonblocking:
            self._reduce_started(params, rows)
            return
        began = time.perf_counter()
        inverse: Array | None = None
        what = self.named(f"the gradient allreduce of step {int(self.stats['steps']) + 1}")
        for b in range(len(self.buckets)):
            flat = self.comm.allreduce(self._pack(b, params, rows), "sum", **what)
            inverse = self._unpack(b, flat, params, inverse)
        self.stats["steps"] += 1
        self.stats["allreduce_seconds"] += time.perf_counter() - began

    def _reduce_started(self, params: Sequence[Parameter], rows: int) -> None:
        """:meth:`reduce` with non-blocking allreduces: the buckets the backward hook
        started (all of them now, if it did not run: an empty share, a compiled step),
        completed, then unpacked."""
        step, self._step = self._step, None
        if step is None:
            step = _Step(params, rows, [])
        assert step.rows == rows, (step.rows, rows)  # the step whose backward began
        began = time.perf_counter() - step.seconds
        while len(step.pending) < len(self.buckets):
            self._start_next(step)
        self.comm.wait(step.pending, **self.named(
            f"the gradient allreduce of step {int(self.stats['steps']) + 1}"))
        inverse: Array | None = None
        for b, pending in enumerate(step.pending):
            inverse = self._unpack(b, pending.result(), params, inverse)
        self.stats["steps"] += 1
        self.stats["allreduce_seconds"] += time.perf_counter() - began

    def _start_next(self, step: _Step) -> None:
        """Pack the next bucket of ``step`` and start its allreduce."""
        flat = self._pack(len(step.pending), step.params, step.rows)
        step.pending.append(self.comm.start_allreduce(flat, "sum"))

    # -- the backward hook: buckets started as their gradients are complete ----------------
    def begin(self, params: Sequence[Parameter], rows: int) -> None:
        """Backward of a step on ``rows`` rows of this process begins."""
        self._step = _Step(params, rows, [len(b) for b in self.buckets])

    def ready(self, indices: Sequence[int]) -> None:
        """The gradients of the parameters ``indices`` are complete: start every bucket now
        complete, in bucket order, and let MPI progress the ones in flight (it moves them
        only inside MPI calls)."""
        step = self._step
        if step is None:
            return
        began = time.perf_counter()
        for i in indices:
            step.missing[self.bucket_of[i]] -= 1
        if step.pending:
            self.comm.progress(step.pending)
        while len(step.pending) < len(self.buckets) and not step.missing[len(step.pending)]:
            self._start_next(step)
            self.stats["early_buckets"] += 1
        step.seconds += time.perf_counter() - began

    def finish(self) -> None:
        """Backward has ended: start the buckets not yet started (a parameter no layer used
        keeps a zero gradient)."""
        step = self._step
        if step is None:
            return
        began = time.perf_counter()
        while len(step.pending) < len(self.buckets):
            self._start_next(step)
        step.seconds += time.perf_counter() - began

    # -- the weights -----------------------------------------------------------------------
    def broadcast(self, params: Sequence[Parameter]) -> None:
        """Rank 0's parameter values on every process (one broadcast per bucket, copied
        in, layout kept)."""
        xp = self.xp
        for bucket in self.buckets:
            flat = xp.concat([_flat(xp, params[i].value) for i in bucket])
            flat = self.comm.broadcast(flat, root=0, **self.named("the weights' broadcast"))
            for i, part in zip(bucket, _split(xp, flat, params, bucket), strict=True):
                params[i].set(part)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _flat(xp: Namespace, x: Array) -> Array:
    """``x`` as one row; a matrix goes in as its transpose, so a Dense weight's gradient,
    stored as the transpose of a row-major array, is read in memory order (a view)."""
    return xp.reshape(xp.matrix_transpose(x) if x.ndim == 2 else x, (-1,))


def _split(xp: Namespace, flat: Array, params: Sequence[Parameter],
           bucket: list[int]) -> list[Array]:
    """``flat`` cut into arrays shaped like ``params[i]`` for ``i`` in ``bucket`` (the
    inverse of :func:`_flat`: a matrix comes back as the transpose of a row-major view)."""
    out, at = [], 0
    for i in bucket:
        shape = params[i].shape
        n = _numel(shape)
        part = flat[at:at + n]
        out.append(xp.matrix_transpose(xp.reshape(part, shape[::-1])) if len(shape) == 2
                   else xp.reshape(part, shape))
        at += n
    return out
