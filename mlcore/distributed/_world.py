"""The job's processes: whether MPI launched this one, and MPI itself (imported lazily).

A process that no MPI launcher started (``python script.py``) is rank 0 of 1 and never
imports mpi4py. One started by ``mpiexec``, ``mlcore launch`` or SLURM's ``srun`` (found by
the variables those launchers set, read when :func:`init` first runs, never at import)
initialises MPI through mpi4py and works on a duplicate of ``COMM_WORLD``, so a user's own
MPI traffic never mixes with mlcore's.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from ..errors import DistributedError

__all__ = ["World", "world", "launched", "abort", "timeout_seconds", "rendezvous",
           "DEFAULT_TIMEOUT", "TIMEOUT_VARIABLE"]

DEFAULT_TIMEOUT = 1800.0
"""Seconds a process waits for the others to reach a distributed fit (PyTorch's default
process-group timeout): long enough for a slow start, finite so a slip never hangs a job."""
TIMEOUT_VARIABLE = "MLCORE_DISTRIBUTED_TIMEOUT"
_TAG = 27_1001  # the arrival messages, on mlcore's own duplicate of COMM_WORLD

# Set for every process by MPICH/Intel MPI (hydra), Open MPI, PMIx (Open MPI 5, srun --mpi=pmix)
# and PMI-2 (srun --mpi=pmi2).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size``; ``comm`` the MPI communicator
    (None for a single process) and ``mpi`` the ``mpi4py.MPI`` module (None likewise)."""

    rank: int
    size: int
    comm: Any = None
    mpi: Any = None


_WORLD: World | None = None


def launched() -> bool:
    """Whether an MPI launcher started this process (or ``MLCORE_DISTRIBUTED=mpi`` asks for
    MPI); ``MLCORE_DISTRIBUTED=off`` forces a single process."""
    choice = os.environ.get("MLCORE_DISTRIBUTED", "").strip().lower()
    if choice in ("off", "0", "none", "local"):
        return False
    if choice in ("mpi", "1", "on"):
        return True
    if choice:
        raise DistributedError(
            f"MLCORE_DISTRIBUTED must be 'mpi' or 'off' (or unset: MPI when a launcher "
            f"started the process), received {choice!r}.", choice)
    return any(v in os.environ for v in _LAUNCHER_VARS)


def world() -> World:
    """The job, initialised on first use (see :func:`mlcore.distributed.init`)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _start() if launched() else World(0, 1)
    return _WORLD


def _start() -> World:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            "This process was started by an MPI launcher (or MLCORE_DISTRIBUTED=mpi), but "
            "mpi4py is not installed. Install it with: pip install 'mlcore[mpi]' (brings "
            "mpi4py and the MPICH wheel), or unset MLCORE_DISTRIBUTED.", None) from exc
    comm = MPI.COMM_WORLD.Dup()
    found = World(comm.Get_rank(), comm.Get_size(), comm, MPI)
    if found.size > 1:
        _install_excepthook(found)
    return found


def abort(exc: BaseException | None = None, where: str = "") -> None:
    """Print why on stderr, then end every process of the job (``MPI_Abort``).

    Called when one process fails on its own (the others would wait for it forever in the
    next collective): they all stop within the launcher's kill time, with a non-zero status.
    """
    w = world()
    if exc is not None:
        text = "".join(traceback.format_exception(exc)).rstrip()
        sys.stderr.write(f"{text}\nmlcore.distributed: process {w.rank} of {w.size} failed"
                         f"{' in ' + where if where else ''}: {type(exc).__name__}: {exc}\n"
                         f"mlcore.distributed: stopping all {w.size} processes (MPI_Abort).\n")
        sys.stderr.flush()
    if w.comm is not None:
        w.comm.Abort(1)


def _install_excepthook(w: World) -> None:
    """An uncaught exception on any process ends the job instead of leaving the others
    waiting in a collective (what ``python -m mpi4py`` does, for plain ``python`` too)."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            previous(kind, exc, tb)
            return
        abort(exc.with_traceback(tb), "an uncaught exception")

    sys.excepthook = hook


def timeout_seconds(value: float | None = None) -> float | None:
    """The arrival timeout: ``value`` when given, else ``MLCORE_DISTRIBUTED_TIMEOUT``
    (seconds; ``0`` or ``off`` waits forever), else :data:`DEFAULT_TIMEOUT`. None: no limit."""
    if value is None:
        text = os.environ.get(TIMEOUT_VARIABLE, "").strip().lower()
        if not text:
            return DEFAULT_TIMEOUT
        if text in ("off", "none", "0"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        where = f"{TIMEOUT_VARIABLE}={text!r}"
    else:
        where = f"timeout={value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or not math.isfinite(value):
        raise DistributedError(
            f"{where}: the distributed timeout must be a positive number of seconds (such as "
            f"{DEFAULT_TIMEOUT:g}), or 0/off in the variable to wait forever.", value)
    return float(value)


def rendezvous(w: World, timeout: float | None, what: str) -> None:
    """Wait until every process has reached ``what``, at most ``timeout`` seconds; then
    raise :class:`DistributedError` naming the processes that never came (an ``if
    is_main(): fit(..., distributed=True)`` slip, a process stuck or gone).

    Point-to-point messages polled against a deadline, since MPI's blocking collectives
    have no timeout: every process reports to rank 0, which answers once all have.
    """
    if w.comm is None or w.size == 1:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    comm = w.comm
    if w.rank == 0:
        waiting = {r: comm.irecv(source=r, tag=_TAG) for r in range(1, w.size)}
        missing = _wait(waiting, deadline)
        if missing:
            raise DistributedError(
                f"Distributed fit: process{'es' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} of {w.size} never reached {what} within "
                f"{timeout:g} s, so process 0 stops the job. Every process must call it "
                f"(not only the main one: no 'if is_main():' around fit). A slow start? "
                f"Raise {TIMEOUT_VARIABLE} (seconds).", missing)
        answers = [comm.isend(True, dest=r, tag=_TAG) for r in range(1, w.size)]
        for a in answers:
            a.wait()
        return
    sent = comm.isend(w.rank, dest=0, tag=_TAG)
    if _wait({0: comm.irecv(source=0, tag=_TAG)}, deadline):
        raise DistributedError(
            f"Distributed fit: process {w.rank} of {w.size} waited {timeout:g} s for process "
            f"0 to reach {what}, in vain, so it stops the job. Every process must call it. A "
            f"slow start? Raise {TIMEOUT_VARIABLE} (seconds).", 0)
    sent.wait()


def _wait(requests: dict[int, Any], deadline: float | None) -> list[int]:
    """Poll ``requests`` (rank -> request) until all are done or the deadline passes;
    the ranks still pending."""
    pending = dict(requests)
    pause = 0.001
    while pending:
        pending = {r: q for r, q in pending.items() if not q.test()[0]}
        if not pending or (deadline is not None and time.monotonic() > deadline):
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    for q in pending.values():
        try:
            q.Cancel()
        except Exception:  # noqa: BLE001 - best effort; the job ends anyway
            pass
    return sorted(pending)
