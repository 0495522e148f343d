"""Collectives on arrays of one backend: :class:`Communicator` and :func:`communicator`.

The fallback serves every backend: MPI over host memory. An array that exposes writeable,
contiguous host memory (a NumPy array) is reduced where it lies, with no copy; any other
(array-api-strict, a GPU array) is staged through ``backend.to_numpy`` and back with
``backend.asarray``. A backend may specialise: an optional member
``communicator(world) -> Communicator | None`` returns its own (CuPy's runs NCCL between
GPUs, with MPI only to hand out NCCL's id), or None to take the fallback.

A single process (size 1) gets the same class, whose collectives return their input: no
MPI, no copy.

Non-blocking allreduce (a data-parallel fit's gradients, overlapped with the backward pass):
:meth:`Communicator.start_allreduce` starts ``MPI_Iallreduce`` on the host buffer and returns
a :class:`Pending`; :meth:`~Communicator.progress` lets MPI move the pending ones on (MPI
progresses them only inside MPI calls), :meth:`~Communicator.wait` completes them under the
same timeout as every collective, then :meth:`Pending.result` is the reduced array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..backend import Backend, get_backend, optional_members
from ..errors import DistributedError
from ._world import World, arrive, complete, timeout_seconds, world

__all__ = ["Communicator", "Pending", "communicator", "OPS"]

OPS = ("sum", "max", "min")
"""The reductions :meth:`Communicator.allreduce` accepts."""


class Communicator:
    """Collectives over the processes of the job, on arrays of ``backend``.

    ``allreduce`` and ``broadcast`` take one array and return the result as an array of the
    same backend, shape and dtype: the same array, changed in place, when its memory allows
    (host memory that can be written), otherwise a new one. Every process must call the
    same collectives in the same order with arrays of the same shape and dtype.

    Every collective first waits, without spinning, until all processes have reached it,
    at most ``timeout`` seconds (default: :func:`~mlcore.distributed._world.timeout_seconds`,
    ``MLCORE_DISTRIBUTED_TIMEOUT``); past it, :class:`DistributedError` names the processes
    that did not come (``what`` says which collective it was). Then the collective runs.
    """

    def __init__(self, backend: Backend, job: World) -> None:
        self.backend, self.world = backend, job
        self.rank, self.size = job.rank, job.size
        self._timeout: tuple[float | None] | None = None  # read on first use, not here

    @property
    def timeout(self) -> float | None:
        """Seconds a collective waits for every process (None: forever)."""
        if self._timeout is None:
            self._timeout = (timeout_seconds(),)
        return self._timeout[0]

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._timeout = (seconds,)

    def arrive(self, what: str) -> None:
        """Return once every process has reached its matching collective (``what`` names
        it in the error), at most :attr:`timeout` seconds; a subclass's own collectives
        call it first (see :func:`mlcore.distributed._world.arrive`)."""
        arrive(self.world, self.timeout, what)

    def allreduce(self, x: Any, op: str = "sum", *, what: str = "an allreduce") -> Any:
        """The element-wise ``op`` (``"sum"``, ``"max"``, ``"min"``) of ``x`` over all
        processes, on every process."""
        mpi_op = self._op(op)
        if self.size == 1:
            return x
        buf, back = self._host(x)
        self.arrive(what)
        self.world.comm.Allreduce(self.world.mpi.IN_PLACE, buf, op=mpi_op)
        return back(buf)

    @property
    def nonblocking(self) -> bool:
        """Whether :meth:`start_allreduce` runs over the same transport as
        :meth:`allreduce`: a subclass that replaces ``allreduce`` (CuPy's NCCL) without
        replacing ``start_allreduce`` keeps its gradients on the blocking path."""
        cls = type(self)
        return cls.allreduce is Communicator.allreduce \
            or cls.start_allreduce is not Communicator.start_allreduce

    def start_allreduce(self, x: Any, op: str = "sum") -> Pending:
        """Start the ``op`` of ``x`` over all processes without waiting (``MPI_Iallreduce``
        on its host buffer, which must then be left alone); :meth:`wait` completes it and
        :meth:`Pending.result` gives the array :meth:`allreduce` would have returned. Every
        process must start the same non-blocking collectives in the same order."""
        mpi_op = self._op(op)
        if self.size == 1:
            return Pending(None, x, _same)
        buf, back = self._host(x)
        request = self.world.comm.Iallreduce(self.world.mpi.IN_PLACE, buf, op=mpi_op)
        return Pending(request, buf, back)

    def progress(self, pending: Sequence[Pending]) -> None:
        """Let MPI move ``pending`` collectives on (one ``Testall``; it returns at once)."""
        requests = [p.request for p in pending if p.request is not None]
        if requests:
            self.world.mpi.Request.Testall(requests)

    def wait(self, pending: Sequence[Pending], *, what: str = "an allreduce") -> None:
        """Complete ``pending`` collectives: wait without spinning until every process has
        come here (at most :attr:`timeout` seconds, then an error naming the late ones, as
        every collective), then at full speed (see
        :func:`mlcore.distributed._world.complete`)."""
        requests = [p.request for p in pending if p.request is not None]
        complete(self.world, requests, self.timeout, what)

    def broadcast(self, x: Any, root: int = 0, *, what: str = "a broadcast") -> Any:
        """``x`` of process ``root``, on every process."""
        if self.size == 1:
            return x
        buf, back = self._host(x)
        self.arrive(what)
        self.world.comm.Bcast(buf, root=root)
        return back(buf)

    def allgather_object(self, obj: Any, *, what: str = "an allgather") -> list[Any]:
        """Every process's ``obj`` (a small picklable value), in rank order."""
        if self.size == 1:
            return [obj]
        self.arrive(what)
        return list(self.world.comm.allgather(obj))

    def broadcast_object(self, obj: Any, root: int = 0, *, what: str = "a broadcast") -> Any:
        """``obj`` of process ``root`` (small and picklable), on every process."""
        if self.size == 1:
            return obj
        self.arrive(what)
        return self.world.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        """Wait until every process has reached this call."""
        if self.size > 1:
            self.arrive("a barrier")

    def _op(self, op: str) -> Any:
        if op not in OPS:
            raise DistributedError(
                f"allreduce op must be one of {', '.join(OPS)}, received {op!r}.", op)
        if self.size == 1:
            return None
        return {"sum": self.world.mpi.SUM, "max": self.world.mpi.MAX,
                "min": self.world.mpi.MIN}[op]

    def _host(self, x: Any) -> tuple[Any, Any]:
        """A host buffer for ``x`` and the function turning it back into the result."""
        try:
            view = memoryview(x)
        except TypeError:
            view = None
        if view is not None and not view.readonly and view.c_contiguous:
            return x, _same
        return self.backend.to_numpy(x), self.backend.asarray

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rank={self.rank}, size={self.size}, "
                f"backend={self.backend.name!r})")


def _same(x: Any) -> Any:
    return x


class Pending:
    """A non-blocking allreduce under way (:meth:`Communicator.start_allreduce`): the MPI
    request (None: nothing to wait for), the host buffer it reduces in place, and the
    function turning that buffer into the result."""

    __slots__ = ("back", "buffer", "request")

    def __init__(self, request: Any, buffer: Any, back: Callable[[Any], Any]) -> None:
        self.request, self.buffer, self.back = request, buffer, back

    def result(self) -> Any:
        """The reduced array, once :meth:`Communicator.wait` has completed it."""
        return self.back(self.buffer)


_CACHE: dict[tuple[str, str], Communicator] = {}


def communicator(backend: Backend | str | None = None) -> Communicator:
    """The job's communicator for arrays of ``backend`` (default: the selected backend).

    The backend's own (its optional ``communicator(world)`` member) when it offers one,
    else MPI over host memory; built once per backend and reused.
    """
    if backend is None or isinstance(backend, str):
        backend = get_backend(backend)
    job = world()
    key = (backend.name, str(backend.device))
    if key not in _CACHE:
        special = optional_members(backend).communicator
        own = special(job) if special is not None and job.size > 1 else None
        _CACHE[key] = own if own is not None else Communicator(backend, job)
    return _CACHE[key]
