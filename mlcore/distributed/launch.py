"""``mlcore launch -n K script.py [args]``: start K processes of a script under MPI.

A thin wrapper over the installed MPI's own launcher (``mpiexec``), as ``torchrun`` wraps
PyTorch's: it finds the ``mpiexec`` beside this Python (the MPICH wheel of
``mlcore[mpi]`` puts it there) or on ``PATH``, and runs ``python -m mpi4py script.py`` in
each process, so an uncaught exception in any process ends them all (``MPI_Abort``) instead
of leaving the rest waiting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click

__all__ = ["launch", "find_mpiexec", "launch_command"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
    return [*cmd, sys.executable, "-m", "mpi4py", *target, *args]


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


def _check_hostfile(path: str) -> None:
    """One host per line: ``name``, ``name:4`` (MPICH) or ``name slots=4`` (Open MPI);
    ``#`` starts a comment. MPICH's launcher exits with status 248 and no message on a
    malformed line, so lines are checked here first."""
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
        hosts += 1
    if hosts == 0:
        raise click.BadParameter(f"{path!r} names no host; write one per line, such as "
                                 f"'node1:4'.", param_hint="--hostfile")


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
@click.option("--dry-run", is_flag=True, help="Print the command instead of running it.")
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def launch(processes: int, hostfile: str | None, threads: int | None, mpiexec: str | None,
           module: bool, dry_run: bool, script: str, args: tuple[str, ...]) -> None:
    """Run SCRIPT in PROCESSES processes under MPI (model.fit(..., distributed=True)
    then trains one model on all of them); options after SCRIPT go to the script."""
    if not module and not Path(script).is_file():
        raise click.BadParameter(f"no such file: {script!r} (pass -m for a module).",
                                 param_hint="SCRIPT")
    if module:
        _check_module(script)
    if hostfile:
        _check_hostfile(hostfile)
    cmd = launch_command(processes, script, args, hostfile, mpiexec, module)
    env = dict(os.environ, MLCORE_DISTRIBUTED="mpi")
    if threads is not None:
        env |= {var: str(threads) for var in _THREAD_VARS}
    if dry_run:
        click.echo(" ".join(cmd))
        return
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)
