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

__all__ = ["World", "world", "launched", "abort", "timeout_seconds", "rendezvous", "arrive",
           "complete", "DEFAULT_TIMEOUT", "TIMEOUT_VARIABLE", "TIMEOUT_ALIAS"]

DEFAULT_TIMEOUT = 1800.0
"""Seconds a process waits for the others, at the start of a distributed fit and in every
collective (PyTorch's default process-group timeout): long enough for a slow start, finite
so a slip or a stalled process never hangs a job."""
TIMEOUT_VARIABLE = "MLCORE_DISTRIBUTED_TIMEOUT"
TIMEOUT_ALIAS = "MLCORE_COLLECTIVE_TIMEOUT"
"""Another name for :data:`TIMEOUT_VARIABLE` (one setting; both set must agree)."""
_TAG = 27_1001  # the arrival messages, on mlcore's own duplicate of COMM_WORLD
_PROBE, _REPLY = 27_1002, 27_1003  # "where are you?" after a collective timed out
_SPIN_SECONDS = 1e-4
"""A waiting process first polls without sleeping for this long (a partner a few
microseconds late costs no sleep), then sleeps between polls: from 50 µs, doubling, to
:data:`_MAX_PAUSE`, so a long wait takes a few percent of a core instead of all of it."""
_MAX_PAUSE = 5e-4
_FINISH_SPIN_SECONDS = 0.01
"""Once every process has arrived, :func:`complete` polls the started collectives without
sleeping for this long (a gradient allreduce finishes within it at full speed), then sleeps
between polls as :func:`_poll` does."""
_ANSWER_SECONDS = 5.0  # how long a timed-out process waits for the others to say where they are

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
        if launched():
            _WORLD = _start()
        else:
            _refuse_other_launchers()
            _WORLD = World(0, 1)
    return _WORLD


def _refuse_other_launchers() -> None:
    """torchrun and srun without MPI start K processes that each look like a single one
    (no PMI variables): K independent trainings, all writing rank 0's files. Their own
    variables give them away."""
    if os.environ.get("MLCORE_DISTRIBUTED", "").strip().lower() in ("off", "0", "none",
                                                                      "local"):
        return
    found = None
    if _count("WORLD_SIZE") > 1 and "RANK" in os.environ:
        found = ("torchrun (or torch.distributed's launcher)",
                 f"WORLD_SIZE={os.environ['WORLD_SIZE']}, RANK={os.environ['RANK']}",
                 f"mlcore launch -n {_count('WORLD_SIZE')} script.py")
    elif _count("SLURM_STEP_NUM_TASKS") > 1 and "SLURM_PROCID" in os.environ:
        found = ("srun without an MPI plugin",
                 f"SLURM_STEP_NUM_TASKS={os.environ['SLURM_STEP_NUM_TASKS']}, "
                 f"SLURM_PROCID={os.environ['SLURM_PROCID']}",
                 "srun --mpi=pmix python -m mpi4py script.py (or --mpi=pmi2)")
    if found is not None:
        who, seen, command = found
        raise DistributedError(
            f"This process was started by {who} ({seen}), but MPI sees a single process "
            f"(no PMI variables): each process would train alone and write rank 0's files. "
            f"mlcore's processes join over MPI: start them with {command}; or set "
            f"MLCORE_DISTRIBUTED=off to run each as an independent single process.", seen)


def _count(name: str) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return 0


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
    if exc is not None and getattr(exc, "everywhere", False) and w.rank != 0 \
            and w.comm is not None:
        # every process raised the same error (a check on gathered facts): process 0 prints
        # it and ends the job; this one waits to be ended, so the traceback shows once
        time.sleep(10.0)
        exc = None
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
    """The distributed timeout (arrival at a fit, and every collective): ``value`` when
    given, else ``MLCORE_DISTRIBUTED_TIMEOUT`` or its alias ``MLCORE_COLLECTIVE_TIMEOUT``
    (seconds; ``0`` or ``off`` waits forever; ``mlcore launch --timeout`` sets it), else
    :data:`DEFAULT_TIMEOUT`. None: no limit."""
    if value is None:
        name, text = _timeout_text()
        if not text:
            return DEFAULT_TIMEOUT
        if text in ("off", "none", "0"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        where = f"{name}={text!r}"
    else:
        where = f"timeout={value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or not math.isfinite(value):
        raise DistributedError(
            f"{where}: the distributed timeout must be a positive number of seconds (such as "
            f"{DEFAULT_TIMEOUT:g}), or 0/off in the variable to wait forever.", value)
    return float(value)


def _timeout_text() -> tuple[str, str]:
    """(variable name, its lower-cased value) of the timeout setting, either spelling."""
    main = os.environ.get(TIMEOUT_VARIABLE, "").strip().lower()
    alias = os.environ.get(TIMEOUT_ALIAS, "").strip().lower()
    if main and alias and main != alias:
        raise DistributedError(
            f"{TIMEOUT_VARIABLE}={main!r} and {TIMEOUT_ALIAS}={alias!r} disagree; they are "
            f"one setting under two names. Set one of them.", (main, alias))
    return (TIMEOUT_VARIABLE, main) if main else (TIMEOUT_ALIAS, alias)


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


class _Calls:
    """This process's collectives so far, and the latest one's name."""

    count = 0
    what = ""


def arrive(w: World, timeout: float | None, what: str) -> None:
    """Return once every process has reached its collective number ``n`` (this process's
    ``n``-th), at most ``timeout`` seconds; then raise :class:`DistributedError` naming the
    processes that did not arrive (stalled, much slower, or in another collective).

    A non-blocking barrier polled against the deadline, sleeping between polls (so a waiting
    process does not burn a core; MPI's blocking collectives spin and have no timeout).
    The collective itself then runs with every process present, at full speed.
    """
    if w.comm is None or w.size == 1:
        return
    _Calls.count += 1
    _Calls.what = what
    request = w.comm.Ibarrier()
    deadline = None if timeout is None else time.monotonic() + timeout
    if _poll(w, request.Test, deadline):
        return
    late = _where_are_they(w)
    count = _Calls.count
    seen = "; ".join(
        f"process {r} " + ("did not answer (stalled in computation, or gone)" if at is None
                           else f"is at collective #{at[0]} ({at[1]})") for r, at in late)
    raise DistributedError(
        f"Distributed job: process {w.rank} of {w.size} waited {timeout:g} s in {what} "
        f"(collective #{count}) for process{'es' if len(late) > 1 else ''} "
        f"{', '.join(str(r) for r, _ in late) or '(unknown)'}, which did not arrive: {seen}. "
        f"It stops the job. A process much slower than the others? Raise "
        f"{TIMEOUT_VARIABLE} (or {TIMEOUT_ALIAS}, or mlcore launch --timeout; seconds).",
        [r for r, _ in late])


def complete(w: World, requests: list[Any], timeout: float | None, what: str) -> None:
    """Return once the non-blocking collectives ``requests`` (started by this process, and
    by every other in the same order) are complete, at most ``timeout`` seconds each way.

    First :func:`arrive` (a polled, sleeping wait until every process has reached this
    point, which names a late process past the timeout; its polls also progress the
    requests), then ``Testall``: in a tight loop for :data:`_FINISH_SPIN_SECONDS` (every
    process is there, so the collectives finish at full speed, as a blocking one would; MPI
    progresses them only inside MPI calls), then sleeping between polls as :func:`_poll`
    does. A request still pending past the timeout means the processes started different
    collectives (another size, count or kind) or one of them died: it raises
    :class:`DistributedError` saying so.
    """
    if w.comm is None or w.size == 1 or not requests:
        return
    arrive(w, timeout, what)
    testall = w.mpi.Request.Testall
    deadline = None if timeout is None else time.monotonic() + timeout
    if _poll(w, lambda: testall(requests), deadline, _FINISH_SPIN_SECONDS):
        return
    raise DistributedError(
        f"Distributed job: process {w.rank} of {w.size} reached {what} (collective "
        f"#{_Calls.count}) with every other process, but its non-blocking allreduces did not "
        f"complete within {timeout:g} s: the processes started different collectives "
        f"(allreduces of other sizes, or blocking against non-blocking ones), or one of them "
        f"died. It stops the job. To fix it, check every process passes the same "
        f"DataParallel settings and backend, or raise {TIMEOUT_VARIABLE} (seconds) if a "
        f"process is merely slow.", what)


def _poll(w: World, done: Any, deadline: float | None, spin: float = _SPIN_SECONDS) -> bool:
    """Call ``done()`` until it is true (True) or the deadline passes (False): without
    sleeping for ``spin`` seconds, then sleeping between calls and answering other
    processes' "where are you?" meanwhile."""
    began = time.monotonic()
    pause = 5e-5
    while not done():
        now = time.monotonic()
        if deadline is not None and now > deadline:
            return False
        if now - began > spin:
            _answer(w)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)
    return True


def _answer(w: World) -> None:
    comm = w.comm
    while comm.iprobe(source=w.mpi.ANY_SOURCE, tag=_PROBE):
        status = w.mpi.Status()
        comm.recv(source=w.mpi.ANY_SOURCE, tag=_PROBE, status=status)
        comm.isend((_Calls.count, _Calls.what), dest=status.Get_source(), tag=_REPLY)


def _where_are_they(w: World) -> list[tuple[int, tuple[int, str] | None]]:
    """Ask every other process which collective it waits in; the ones not in this
    process's collective, with their answer (None: no answer within a few seconds)."""
    comm, others = w.comm, [r for r in range(w.size) if r != w.rank]
    for r in others:
        comm.isend(True, dest=r, tag=_PROBE)
    replies = {r: comm.irecv(source=r, tag=_REPLY) for r in others}
    answers: dict[int, Any] = {}

    def collected() -> bool:
        for r, q in list(replies.items()):
            ok, value = q.test()
            if ok:
                answers[r] = value
                del replies[r]
        return not replies

    _poll(w, collected, time.monotonic() + _ANSWER_SECONDS)
    count = _Calls.count
    return [(r, None if r not in answers else tuple(answers[r])) for r in others
            if r not in answers or answers[r][0] != count]  # type: ignore[misc]


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
