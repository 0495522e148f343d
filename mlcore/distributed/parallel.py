"""Data-parallel training: what ``fit(..., distributed=True)`` does on every process.

Two placements of the in-memory data. **Full data** (``distributed=True``, the default):
every process holds the whole training set and draws the same shuffled order (the seed is
agreed at the start); a global batch is ``size · batch_size`` consecutive rows of that
order, process ``r`` takes the ``r``-th of ``size`` near-equal contiguous slices of it (the
last global batch may be short; a process may then get no rows), and gathers only its own
rows each epoch. A fingerprint of the data (sampled rows) is compared at the start, so
shards passed in this mode are refused. **Shards** (``DataParallel(sharded=True)``): each
process passes its own part of the data (``X[rank::size]``, its files); each shuffles its
own shard (seed: the agreed one plus its rank) and a global batch is the next
``batch_size`` rows of every shard, an epoch every row of every shard (a shorter shard
runs out first and its process then contributes no rows). Before the first step the
processes compare the model, data and settings and stop with an error naming what
differs; then rank 0's initial weights are broadcast.

Each step: forward and backward on the local slice give the mean gradient ``g_r`` over its
``n_r`` rows; one allreduce per bucket over a flat buffer (never one per parameter) sums
``n_r g_r`` and ``n_r``, and every process takes ``g = Σ n_r g_r / Σ n_r`` — the mean
gradient over the global batch, as one process with batch ``size · batch_size`` computes it
(up to the order of the float additions). Every process then runs the same optimiser update
on the same gradient, so the weights stay identical without being sent again.

The buckets follow the parameters in reverse (the order backward produces their gradients,
as PyTorch DDP plans them). With ``overlap`` (the default; the first bucket then holds at
most :data:`FIRST_BUCKET_BYTES` and ends at a layer boundary, so it fills early) the eager
step's backward pass tells this object when each layer's gradients are complete
(:meth:`DataParallel.begin`, :meth:`~DataParallel.ready`, :meth:`~DataParallel.finish`, the
hook of :meth:`mlcore.training.step.TrainStep.backward`): a bucket's non-blocking allreduce
starts as soon as all its parameters have their gradients, while backward goes on through
the earlier layers, and :meth:`~DataParallel.reduce_gradients` waits for them before the
update. Each gradient value is packed, summed and divided by the same code as after
backward (:mod:`mlcore.distributed._buckets`), whichever bucket carries it, so the weights
are the same: bitwise with 2 processes (one addition per value); with more, MPI's
association of a sum may depend on the message size and the call (MPICH 5.0.2 here gave
bitwise equal sums for 2 to 4 processes). Every process must plan the same buckets over
the same transport (the start-up check compares them).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..backend import Backend
from ..errors import DistributedError, InvalidParameterError
from ..layers.core import Parameter, dtype_name
from ..layers.stack import LayerStack
from ..types import Array, Namespace
from ._buckets import Reducer, bucket_sizes, new_stats, plan_for, transport
from ._world import abort, rendezvous, timeout_seconds
from .comm import Communicator, communicator

if TYPE_CHECKING:
    from ..training.loop import Data as Rows  # fit's data: arrays, rows first (or None)

__all__ = ["DataParallel", "DEFAULT_BUCKET_BYTES", "for_fit"]

DEFAULT_BUCKET_BYTES = 25 * 2**20
"""Gradients are reduced in flat buckets of at most this many bytes (PyTorch DDP's 25 MiB):
few messages for most MLPs, several bounded ones for large models."""
FIRST_BUCKET_BYTES = 2**20
"""With overlap, the first bucket (the last layers' gradients, the first that backward
produces) holds at most this many bytes (PyTorch DDP's 1 MiB) and ends at a layer boundary,
so its allreduce can start early in backward. Without overlap it would only add a
message."""


class DataParallel:
    """Options of data-parallel training; ``fit(..., distributed=DataParallel(...))``.

    ``distributed=True`` is ``DataParallel()``. ``sharded``: each process passes its own
    shard of the data (see the module) instead of the whole data set. ``bucket_bytes``
    caps one gradient message. ``timeout``: seconds every process waits for the others, to
    reach ``fit`` and in every collective, before the job stops with an error naming the
    missing ones (default: ``MLCORE_DISTRIBUTED_TIMEOUT``, alias
    ``MLCORE_COLLECTIVE_TIMEOUT``, else 1800; see :mod:`mlcore.distributed._world`).
    ``sync_batchnorm``: BatchNorm normalises over the global batch (every process's rows,
    as PyTorch's SyncBatchNorm; :mod:`mlcore.normalization`); False: over each process's
    own rows (DDP without SyncBatchNorm). ``overlap=True``: each bucket's allreduce starts
    (non-blocking) as soon as backward has produced its gradients (see the module; the
    eager step, unless ``on_nonfinite="warn"`` may still leave a batch out after backward);
    the default, False: every bucket is reduced after backward, with blocking allreduces
    (measured faster on one machine's shared-memory MPI, where MPI moves messages only
    inside MPI calls: docs/distributed.md). Every process must pass the same value
    (checked).
    After ``fit``, ``stats`` holds ``steps``, ``allreduce_seconds`` (time in the gradient
    collectives: packing, starting, progress calls, waiting, unpacking) and
    ``early_buckets`` (buckets whose allreduce started before backward ended) of that fit.
    """

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 comm: Communicator | None = None, timeout: float | None = None, *,
                 sharded: bool = False, sync_batchnorm: bool = True,
                 overlap: bool = False) -> None:
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) \
                or bucket_bytes < 1:
            raise DistributedError(
                f"bucket_bytes must be a positive integer, received {bucket_bytes!r}.",
                bucket_bytes)
        for name, flag in (("sharded", sharded), ("sync_batchnorm", sync_batchnorm),
                           ("overlap", overlap)):
            if not isinstance(flag, bool):
                raise DistributedError(f"{name} must be True or False, received {flag!r}.",
                                       flag)
        self.bucket_bytes, self.comm = bucket_bytes, comm
        self.sharded, self.sync_batchnorm, self.overlap = sharded, sync_batchnorm, overlap
        self.timeout = None if timeout is None else timeout_seconds(timeout)
        self.stats: dict[str, float] = new_stats()
        self._reducer: Reducer | None = None  # the gradient buckets, once started
        self._nonblocking = False  # the gradients go by start_allreduce (overlap possible)
        self._xp: Namespace | None = None  # the backend namespace, once started
        self._rows: list[int] = []  # every process's training rows (sharded)
        self._norms: list[Any] = []  # the model's BatchNorm layers (SyncBatchNorm)

    # -- set-up, before the first step ----------------------------------------------------
    def start(self, model: LayerStack, facts: dict[str, Any]) -> DataParallel:
        """Bind to ``model``: plan the gradient buckets, check ``facts`` and the plan agree
        on every process, broadcast rank 0's weights. Returns self."""
        if self.comm is None:
            self.comm = communicator(model.backend)
        wait = self.timeout if self.timeout is not None else timeout_seconds()
        job = getattr(self.comm, "world", None)
        if job is not None:
            rendezvous(job, wait, "fit(..., distributed=True)")
        if isinstance(self.comm, Communicator):
            self.comm.timeout = wait
        rows = facts.pop("_rows", None)
        comm = self.comm
        self._nonblocking = self.overlap and callable(getattr(comm, "start_allreduce", None)) \
            and bool(getattr(comm, "nonblocking", False))
        params = model.parameters()
        self._xp = xp = model.namespace(params[0].value)
        first = min(self.bucket_bytes, FIRST_BUCKET_BYTES) if self._nonblocking else None
        buckets = plan_for(xp, model.layers, params, self.bucket_bytes, first)
        # processes with other plans or transports would start collectives that do not
        # match (other sizes, blocking against non-blocking): undefined in MPI
        facts["DataParallel overlap"] = self.overlap
        facts["gradient transport"] = transport(comm, self._nonblocking)
        facts["gradient buckets"] = bucket_sizes(params, buckets)
        self.check(facts)
        if self.sharded and rows is not None:
            every = self.comm.allgather_object(rows, **self._named("the shards' sizes"))
            self._rows = [int(r) for r in every]
        self._norms = [layer for layer in getattr(model, "layers", [])
                       if hasattr(layer, "sync")] if self.sync_batchnorm else []
        self.stats = new_stats()
        self._reducer = Reducer(self.comm, xp, buckets, len(params), self._nonblocking,
                                self.stats, self._named)
        self.broadcast_parameters(params)
        return self

    @property
    def buckets(self) -> list[list[int]]:
        """The indices of the model's parameters in each gradient bucket, in message order
        (after :meth:`start`; bucket 0 also carries the row count)."""
        return [] if self._reducer is None else [list(b) for b in self._reducer.buckets]

    @property
    def overlaps(self) -> bool:
        """Whether the gradients' allreduces may start during backward (after
        :meth:`start`): ``overlap`` asked, and the communicator has a non-blocking
        allreduce on its own transport. The training step then calls :meth:`begin`,
        :meth:`ready` and :meth:`finish` from its backward pass."""
        return self._nonblocking

    def _named(self, what: str) -> dict[str, str]:
        """``what=`` for the collectives of a :class:`Communicator` (named in a timeout's
        error); nothing for another object with the same methods."""
        return {"what": what} if isinstance(self.comm, Communicator) else {}

    @property
    def size(self) -> int:
        return 1 if self.comm is None else self.comm.size

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.rank

    def check(self, facts: dict[str, Any]) -> None:
        """Raise :class:`DistributedError` on every process when any process's ``facts``
        (name -> comparable value) differ from rank 0's, naming each difference."""
        assert self.comm is not None
        every = self.comm.allgather_object(facts, **self._named("the start-up check"))
        lines, hints = [], []
        for name, value in every[0].items():
            odd = [(r, f.get(name)) for r, f in enumerate(every) if f.get(name) != value]
            if odd:
                others = "; ".join(f"{v!r} on rank {r}" for r, v in odd)
                lines.append(f"{name} is {value!r} on rank 0 but {others}")
                hints += [_HINTS[name]] if name in _HINTS else []
        if lines:
            error = DistributedError(
                "Distributed fit: the processes disagree before the first step: "
                + ". ".join(lines) + ". Every process must call fit with the same model, "
                "data and settings." + "".join(" " + h for h in dict.fromkeys(hints)), every)
            error.everywhere = True  # type: ignore[attr-defined]  # printed once (abort)
            raise error

    def broadcast_parameters(self, params: Sequence[Parameter]) -> None:
        """Rank 0's parameter values on every process (copied in, layout kept)."""
        if self.size > 1:
            self._started().broadcast(params)

    def agree_seed(self, seed: int | None) -> int | None:
        """``seed``, or (when None) one drawn by rank 0, so every process shuffles alike; with
        shards, that seed plus the rank (each process shuffles its own shard its own way)."""
        assert self.comm is not None
        if self.size == 1:
            return seed
        if seed is None:
            seed = int(self.comm.broadcast_object(
                secrets.randbelow(2**63) if self.rank == 0 else None, 0,
                **self._named("the seed")))
        return (seed + self.rank) % 2**63 if self.sharded else seed

    @property
    def xp(self) -> Namespace:
        """The namespace of the model's arrays (after :meth:`start`; before, an error)."""
        if self._xp is None:
            raise DistributedError(
                "DataParallel.xp: the namespace of the model's arrays is known once a fit has "
                "started it (fit(..., distributed=dp) calls dp.start(model, facts)).", self)
        return self._xp

    def _started(self) -> Reducer:
        if self._reducer is None:
            raise DistributedError(
                "This DataParallel has not been started: fit(..., distributed=dp) starts it "
                "(dp.start(model, facts)) before its first step.", self)
        return self._reducer

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around the training loop: an error on one process ends every process (with
        ``MPI_Abort``, after printing it) instead of leaving the others waiting forever in
        the next allreduce."""
        for layer in self._norms:
            layer.sync = self._sum
        try:
            yield
        except (Exception, KeyboardInterrupt) as exc:
            if self.size > 1:
                abort(exc, "distributed fit")
            raise
        finally:
            for layer in self._norms:
                layer.sync = None

    def _sum(self, x: Array) -> Array:
        """``x`` summed over the processes (SyncBatchNorm's statistics)."""
        assert self.comm is not None
        return self.comm.allreduce(x, "sum", **self._named("SyncBatchNorm's statistics"))

    # -- the epoch ------------------------------------------------------------------------
    def batches(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """This process's ``(start, stop)`` rows of each global batch: its slice of
        ``size · batch_size`` rows of the whole data (a slice may be empty in a short last
        batch); with shards, the next ``batch_size`` rows of its shard (empty once a
        shorter shard has run out)."""
        if self.sharded and self._rows:
            steps = max(-(-rows // batch_size) for rows in self._rows)
            out = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
            out += [(n, n)] * (steps - len(out))
        else:
            k, rank, step = self.size, self.rank, self.size * batch_size
            out = []
            for s in range(0, n, step):
                q, r = divmod(min(s + step, n) - s, k)
                start = s + rank * q + min(rank, r)
                out.append((start, start + q + (rank < r)))
        if self._norms:
            self.check_batchnorm(out)
        return out

    def check_batchnorm(self, batches: list[tuple[int, int]]) -> None:
        """SyncBatchNorm needs rows on every process in every batch (a process without
        rows skips the forward pass, where the others wait for its statistics)."""
        assert self.comm is not None
        empty = any(b == a for a, b in batches)
        if self._norms and any(self.comm.allgather_object(empty,
                                                          **self._named("the batch plan"))):
            error = DistributedError(
                "Distributed fit with BatchNorm: its statistics are taken over every "
                "process's rows of each batch (SyncBatchNorm), so every process needs rows in "
                "every batch, and some process has none in the last one. Choose batch_size "
                "(or the shards' sizes) so that the last global batch has at least one row "
                "per process, or pass distributed=DataParallel(sync_batchnorm=False).", batches)
            error.everywhere = True  # type: ignore[attr-defined]
            raise error

    def epoch(self, xp: Namespace, data: Rows, order: Array | None,
              batches: list[tuple[int, int]]) -> tuple[Rows, list[tuple[int, int]]]:
        """This epoch's rows of ``data`` (a tuple of arrays, rows first, or None entries)
        in the shuffled ``order`` (None: unshuffled) and their ``batches``. Full data: only
        this process's rows are gathered (each process copies 1/size of the data, not all
        of it); shards: the shard, shuffled."""
        if order is None:
            return data, batches
        if not self.sharded:
            parts = [order[a:b] for a, b in batches if b > a]
            order = xp.concat(parts) if parts else order[:0]
            local, at = [], 0
            for a, b in batches:
                local.append((at, at + b - a))
                at += b - a
            batches = local
        return type(data)._make(None if a is None else xp.take(a, order, axis=0)
                                for a in data), batches

    def validation_part(self, data: Rows) -> Rows:
        """This process's part of the validation data: a contiguous 1/size of it (full
        data; the sums and metrics are then combined), or all of it (shards: each process
        passes its own)."""
        if self.sharded or self.size == 1:
            return data
        q, r = divmod(int(data[0].shape[0]), self.size)
        start = self.rank * q + min(self.rank, r)
        stop = start + q + (self.rank < r)
        return type(data)._make(None if a is None else a[start:stop, ...] for a in data)

    # -- the backward hook (:class:`~mlcore.training.step.BackwardHook`) and the reduction
    def begin(self, params: Sequence[Parameter], rows: int) -> None:
        """Backward of a step on ``rows`` rows of this process begins."""
        self._started().begin(params, rows)

    def ready(self, indices: Sequence[int]) -> None:
        """The gradients of the parameters ``indices`` are complete: start every bucket now
        complete and let MPI progress the ones in flight."""
        self._started().ready(indices)

    def finish(self) -> None:
        """Backward has ended: start the buckets not yet started."""
        self._started().finish()

    def reduce_gradients(self, params: Sequence[Parameter], rows: int) -> None:
        """Replace every ``grad`` by the mean gradient over the global batch (see the
        module); ``rows``: this process's. With :attr:`overlaps`, completes the buckets
        the backward pass started."""
        self._started().reduce(params, rows)

    def end_epoch(self, model: LayerStack) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every process: each process
        normalises with its own batch's statistics, as PyTorch DDP without SyncBatchNorm,
        and all keep rank 0's running averages."""
        buffers = [p for _, p in getattr(model, "named_buffers", list)()]
        if buffers and self.size > 1:
            assert self.comm is not None
            for p in buffers:
                p.set(self.comm.broadcast(self.xp.asarray(p.value, copy=True), root=0,
                                          **self._named("the buffers' broadcast")))

    def stream(self, batches: Iterator[Any], steps: int) -> Iterator[Any]:
        """``steps`` batches of this process's stream; a stream that ends sooner raises
        (and so stops every process: the others would wait for its gradients)."""
        taken = 0
        for item in batches:
            taken += 1
            yield item
        if taken < steps:
            raise DistributedError(
                f"The training stream of process {self.rank} of {self.size} ended after "
                f"{taken} of steps_per_epoch={steps} batches. In a distributed fit every "
                f"process must yield steps_per_epoch batches each epoch.", taken)

    def reduce_sums(self, values: Sequence[Array | float]) -> list[float]:
        """``values`` (0-d arrays or numbers) summed over all processes, as host floats."""
        assert self.comm is not None
        mine = [float(v) for v in values]
        if self.size == 1:
            return mine
        every = self.comm.allgather_object(mine, **self._named("the epoch's sums"))
        return [sum(column) for column in zip(*every, strict=True)]


_HINTS = {
    "training data": "The training data differs between processes, but distributed=True "
    "takes the whole same data set on every process (each takes its slices of every global "
    "batch). To give each process its own shard (X[rank::size], its own files), pass "
    "distributed=mlcore.distributed.DataParallel(sharded=True).",
    "number of training samples": "To give each process its own shard of the data, pass "
    "distributed=mlcore.distributed.DataParallel(sharded=True).",
    "gradient buckets": "The gradient buckets (elements per allreduce) follow from "
    "DataParallel(bucket_bytes=..., overlap=...), the model and its dtype: pass the same on "
    "every process.",
    "gradient transport": "The processes reduce the gradients through different "
    "communicators (a backend's own, such as CuPy's NCCL with MLCORE_CUPY_NCCL=1, on some "
    "and MPI over host memory on others), or with and without overlap: give every process "
    "the same backend, environment and DataParallel settings.",
}
_SAMPLED_ROWS = 256


def for_fit(distributed: object, model: LayerStack, data: Rows | None, val: Rows | None,
            settings: dict[str, Any]) -> DataParallel | None:
    """The started :class:`DataParallel` for ``fit(..., distributed=...)``, or None in a
    single process (where data-parallel training changes nothing and costs nothing).
    ``data`` and ``val``: tuples of arrays, the inputs first (None: streamed, or none)."""
    if distributed is True:
        dp = DataParallel()
    elif isinstance(distributed, DataParallel):
        dp = distributed
    else:
        raise InvalidParameterError(
            f"distributed must be True, False or an mlcore.distributed.DataParallel, "
            f"received {distributed!r}.", distributed)
    if dp.comm is None:
        dp.comm = communicator(model.backend)
    if dp.size == 1:
        return None
    return dp.start(model, _facts(model, data, val, settings, dp.sharded))


def _facts(model: LayerStack, data: Rows | None, val: Rows | None, settings: dict[str, Any],
           sharded: bool) -> dict[str, Any]:
    """What every process of one fit must agree on, by the name an error shows."""
    opt, loss = settings.pop("optimizer"), settings.pop("loss")
    X = None if data is None else data[0]
    facts: dict[str, Any] = {
        "backend": model.backend.name,
        "model architecture": " ".join(repr(model).split()),
        "parameter dtype": dtype_name(model.backend.xp, model.dtype),
        "data placement": "shards" if sharded else "full data on every process",
        "sample shape": None if X is None else tuple(int(d) for d in X.shape[1:]),
        "loss": loss if isinstance(loss, str) else type(loss).__name__,
        "optimizer": f"{type(opt).__name__}(lr={opt.lr})",
        **settings,
    }
    if not sharded:
        facts["number of training samples"] = "streamed" if X is None else int(X.shape[0])
        facts["number of validation samples"] = None if val is None else int(val[0].shape[0])
        facts["training data"] = None if data is None else _fingerprint(model.backend, data)
        facts["validation data"] = None if val is None else _fingerprint(model.backend, val)
    elif X is not None:
        facts["_rows"] = int(X.shape[0])
    return facts


def _fingerprint(backend: Backend, data: Rows) -> str:
    """A short hash of up to 256 evenly spaced rows of every array of ``data`` (first and
    last included): cheap at any size, and different for shards, other shuffles or other
    files (a difference in rows it does not sample goes unseen)."""
    n = int(data[0].shape[0])
    m = min(n, _SAMPLED_ROWS)
    rows = [i * (n - 1) // (m - 1) for i in range(m)] if m > 1 else list(range(m))
    digest = hashlib.sha256()
    for a in data:
        if a is None:
            continue
        xp = backend.xp
        picked = xp.take(a, xp.asarray(rows, dtype=xp.int64, device=backend.device), axis=0) \
            if m < n else a
        host = backend.to_numpy(picked)
        digest.update(f"{host.dtype}{host.shape}".encode())
        digest.update(host.tobytes())
    return digest.hexdigest()[:16]
