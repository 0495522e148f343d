"""``mlcore launch -n K script.py [args]``: start K processes of a script under MPI.

A thin wrapper over the installed MPI's own launcher (``mpiexec``), as ``torchrun`` wraps
PyTorch's: it finds the ``mpiexec`` beside this Python (the MPICH wheel of
``mlcore[mpi]`` puts it there) or on ``PATH``, and runs ``python -m
mlcore.distributed._run script.py`` in each process (mpi4py's runner: an uncaught exception
in any process ends them all with ``MPI_Abort`` instead of leaving the rest waiting; plus
the GPU placement and the never-joined warning of :mod:`mlcore.distributed._run`).
SIGTERM and SIGINT sent to ``mlcore launch`` go to the job, which ends within seconds;
``mlcore launch`` then exits with the signal's status (128 + its number).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from ._run import GPUS_VARIABLE
from ._world import TIMEOUT_VARIABLE

__all__ = ["launch", "find_mpiexec", "launch_command", "launch_env"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
"""glibc's allocator kept from returning memory to the system between steps: arrays up to
32 MiB from the heap (not a fresh mapping each), freed memory kept up to 1 GiB. Without
them every step's large arrays (gradients, activations, the allreduce's buffers) are mapped
and paged in again: 784-512-512-10 Adam at B = 512 on 2 processes took 15.7-16.8 ms a step
against 14.2-14.5 ms with them (the allreduce 1.1 -> 0.6 ms). Other C libraries ignore
them; a variable already set is left as it is."""
_GRACE_SECONDS = 5.0
"""After forwarding a signal, how long the job may take to end before it is killed."""


def find_mpiexec(given: str | None = None) -> str:
    """The MPI launcher to use: ``given``, else the one installed beside this Python, else
    ``mpiexec`` or ``mpirun`` on ``PATH``."""
    if given:
        found = shutil.which(given)
        if found is None:
            raise click.ClickException(f"--mpiexec {given!r}: no such program.")
        return found
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file():
        return str(beside)
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found:
            return found
    raise click.ClickException(
        "mlcore launch needs an MPI launcher (mpiexec), and none is installed beside this "
        f"Python ({Path(sys.executable).parent}) or on PATH. Install one with: pip install "
        "'mlcore[mpi]' (brings mpi4py and the MPICH wheel), or pass --mpiexec PATH.")


def launch_command(processes: int, script: str, args: tuple[str, ...] = (),
                   hostfile: str | None = None, mpiexec: str | None = None,
                   module: bool = False) -> list[str]:
    """The command line ``mlcore launch`` runs (``module``: ``script`` names a module,
    run as ``python -m``)."""
    cmd = [find_mpiexec(mpiexec), "-n", str(processes)]
    if hostfile:
        cmd += ["-hostfile", hostfile]  # MPICH, Intel MPI and Open MPI all take -hostfile
    target = ["-m", script] if module else [script]
    return [*cmd, sys.executable, "-m", "mlcore.distributed._run", *target, *args]


def launch_env(threads: int | None = None, timeout: float | None = None,
               gpus_per_process: int | None = None,
               keep_memory: bool = True) -> dict[str, str]:
    """The variables ``mlcore launch`` sets for every process (on top of its own
    environment); ``keep_memory``: :data:`_MALLOC`'s, each unless already set."""
    env = {"MLCORE_DISTRIBUTED": "mpi"}
    if keep_memory:
        env |= {k: v for k, v in _MALLOC.items() if k not in os.environ}
    if threads is not None:
        env |= {var: str(threads) for var in _THREAD_VARS}
    if timeout is not None:
        env[TIMEOUT_VARIABLE] = f"{timeout:g}"
    if gpus_per_process is not None:
        env[GPUS_VARIABLE] = str(gpus_per_process)
    return env


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _warn_oversubscribed(processes: int, threads: int | None) -> None:
    """More processes (times threads) than cores here: each gets part of a core and every
    step waits for the slowest, so K processes can be slower than one."""
    cores, per = _cores(), threads or 1
    if processes * per > cores:
        click.echo(
            f"mlcore launch: warning: {processes} processes x {per} thread"
            f"{'s' if per > 1 else ''} on {cores} core{'s' if cores > 1 else ''} here "
            f"(oversubscribed): processes share cores and every step waits for the slowest. "
            f"Use -n {max(1, cores // per)} or fewer{'' if threads else ' with --threads 1'}"
            f", or --hostfile to spread them over machines.", err=True)


def _launcher_kind(mpiexec: str) -> str | None:
    """``"mpich"`` (hydra), ``"openmpi"``, or None (not known) from ``mpiexec --version``."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout + out.stderr
    if "HYDRA" in text:
        return "mpich"
    if "Open MPI" in text or "OpenRTE" in text or "Open RTE" in text:
        return "openmpi"
    return None


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run the job; SIGTERM/SIGINT received meanwhile go to it (mpiexec passes them to
    every process); the job's status, or 128 + the signal's number. A process of the job
    still there ``_GRACE_SECONDS`` after the signal (one stuck reaching a launcher that is
    already gone) is killed."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    caught: list[tuple[int, float]] = []
    job: set[int] = set()

    def forward(signum: int, frame: Any) -> None:
        caught.append((signum, time.monotonic()))
        job.update(_descendants(proc.pid))
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    forwarded = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, forward) for s in forwarded}
    try:
        while proc.poll() is None:
            time.sleep(0.05)
            if caught and time.monotonic() - caught[0][1] > _GRACE_SECONDS:
                proc.kill()
        while caught and _kill_left(job, time.monotonic() - caught[0][1] > _GRACE_SECONDS):
            time.sleep(0.05)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + caught[0][0] if caught else proc.returncode


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Linux's /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill_left(pids: set[int], now: bool) -> bool:
    """Whether any of ``pids`` is still running (killed with SIGKILL when ``now``)."""
    left = False
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL if now else 0)
            left = not now
        except (ProcessLookupError, PermissionError):
            pids.discard(pid)
    return left


def _check_module(name: str) -> None:
    """``-m NAME``: the module must be importable here (each process imports it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:  # a missing parent package, an empty name
        found, why = None, f" ({exc})"
    else:
        why = ""
    if found is None:
        raise click.BadParameter(
            f"no module named {name!r}{why} for {Path(sys.executable).name} "
            f"({sys.executable}). Check the name, install the package, or pass a script "
            f"path without -m.", param_hint="-m SCRIPT")


_HOST_LINE = re.compile(r"^[A-Za-z0-9_.\-\[\]]+(:\d+)?(\s+slots=\d+)?(\s+max_slots=\d+)?$")


def _check_hostfile(path: str, kind: str | None = None) -> None:
    """One host per line: ``name``, ``name:4`` (MPICH) or ``name slots=4`` (Open MPI);
    ``#`` starts a comment. MPICH's launcher exits with status 248 and no message on a
    malformed line, so lines are checked here first; with ``kind`` (the launcher's MPI),
    the other MPI's form is refused in our words too."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc}.",
                                 param_hint="--hostfile") from exc
    hosts = 0
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _HOST_LINE.match(line) or line.endswith(":0"):
            raise click.BadParameter(
                f"{path!r} line {number} is {raw.strip()!r}; expected one host per line, "
                f"as 'node1', 'node1:4' (4 processes there) or 'node1 slots=4'.",
                param_hint="--hostfile")
        _check_form(path, number, line, kind)
        hosts += 1
    if hosts == 0:
        raise click.BadParameter(f"{path!r} names no host; write one per line, such as "
                                 f"'node1:4'.", param_hint="--hostfile")


def _check_form(path: str, number: int, line: str, kind: str | None) -> None:
    host = line.split()[0].split(":")[0]
    if kind == "mpich" and "slots=" in line:
        count = line.split("slots=")[1].split()[0]
        raise click.BadParameter(
            f"{path!r} line {number} is {line!r}, Open MPI's form, but the launcher is "
            f"MPICH's (hydra), which reads it as {host}:{count}. Write '{host}:{count}', or "
            f"pass --mpiexec with Open MPI's mpirun.", param_hint="--hostfile")
    if kind == "openmpi" and ":" in line.split()[0]:
        count = line.split()[0].split(":")[1]
        raise click.BadParameter(
            f"{path!r} line {number} is {line!r}, MPICH's form, but the launcher is Open "
            f"MPI's, which reads it as '{host} slots={count}'. Write that, or pass --mpiexec "
            f"with MPICH's mpiexec.", param_hint="--hostfile")


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False}, epilog="""\b
Examples:
  mlcore launch -n 2 train.py --epochs 5
  mlcore launch -n 2 -m mlcore.distributed.digits""")
@click.option("-n", "--processes", type=click.IntRange(1), required=True,
              help="How many processes to start.")
@click.option("--hostfile", type=click.Path(exists=True, dir_okay=False),
              help="Hosts to run on, one per line ('node1:4' for 4 processes there; "
                   "docs/distributed.md). Default: this machine.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="BLAS and OpenMP threads per process (sets OMP_NUM_THREADS, "
                   "OPENBLAS_NUM_THREADS, MKL_NUM_THREADS). Default: each library's own.")
@click.option("--mpiexec", "mpiexec", default=None,
              help="The MPI launcher (default: the one beside this Python, else on PATH).")
@click.option("-m", "--module", is_flag=True,
              help="SCRIPT is a module name, run as python -m does (e.g. -m "
                   "mlcore.distributed.digits).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds a process waits for the others, at the start of a distributed "
                   "fit and in every collective, before the job stops naming the late one "
                   f"(sets {TIMEOUT_VARIABLE}; default 1800).")
@click.option("--gpus-per-process", type=click.IntRange(1), default=None,
              help="Give each process its own N GPUs: CUDA_VISIBLE_DEVICES of the process "
                   "with local rank r becomes devices r*N to r*N+N-1 (of the listed ones, "
                   "when CUDA_VISIBLE_DEVICES is set).")
@click.option("--keep-memory/--no-keep-memory", default=True, show_default=True,
              help="Keep glibc's allocator from returning memory to the system between "
                   "steps (sets MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ unless "
                   "set): each step's large arrays are not paged in again (a 2-process "
                   "step 10-15 % faster here).")
@click.option("--dry-run", is_flag=True,
              help="Print the exact command, with the variables it sets, instead of running "
                   "it.")
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def launch(processes: int, hostfile: str | None, threads: int | None, mpiexec: str | None,
           module: bool, timeout: float | None, gpus_per_process: int | None,
           keep_memory: bool, dry_run: bool, script: str, args: tuple[str, ...]) -> None:
    """Run SCRIPT in PROCESSES processes under MPI (model.fit(..., distributed=True)
    then trains one model on all of them); options after SCRIPT go to the script."""
    if not module and not Path(script).is_file():
        raise click.BadParameter(f"no such file: {script!r} (pass -m for a module).",
                                 param_hint="SCRIPT")
    if module:
        _check_module(script)
    cmd = launch_command(processes, script, args, hostfile, mpiexec, module)
    if hostfile:
        _check_hostfile(hostfile, _launcher_kind(cmd[0]))
    else:
        _warn_oversubscribed(processes, threads)
    added = launch_env(threads, timeout, gpus_per_process, keep_memory)
    if dry_run:
        click.echo(shlex.join(["env", *(f"{k}={v}" for k, v in added.items()), *cmd]))
        return
    sys.exit(_run_forwarding_signals(cmd, dict(os.environ) | added))
