"""The ``mlcore`` command line (click).

Errors print one line and exit non-zero; ``mlcore --debug ...`` shows the traceback. A
closed pipe (``mlcore info | head -1``) ends quietly with exit status 0, as ``git log | head``
does.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from . import __version__
from . import demo as experiments
from .backend import (
    backend_choice,
    backend_status,
    device_label,
    get_backend,
    member_failure,
    optional_members,
    use_backend,
)
from .distributed.launch import launch
from .errors import MlcoreError
from .plotting import plot_history
from .plugins import inspect

__all__ = ["main", "info_report"]


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away: drop what is still buffered and exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush goes nowhere
    except (OSError, ValueError):  # stdout without a file descriptor (a test's buffer)
        pass
    sys.exit(0)


class _Group(click.Group):
    """Turn mlcore's errors into one-line messages unless ``--debug`` is given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return result
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (MlcoreError, OSError, ValueError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"mlcore: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, epilog="""\b
Examples:
  mlcore info                  what is installed and usable here
  mlcore demo digits           train an MLP on handwritten digits
  mlcore bench --quick         time every backend (pip install mlcore-bench)""")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="mlcore")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """mlcore: one Array API core, many backends, everything pluggable."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _backend_rows() -> list[dict[str, Any]]:
    """One row per backend; a backend whose members raise is listed as ``failed`` with the
    member and its error (never a traceback: one broken plugin must not hide the others)."""
    return [_backend_row(name, b) for name, b in sorted(inspect().backends.items())]


def _backend_row(name: str, b: Any) -> dict[str, Any]:
    status = backend_status(b)
    row: dict[str, Any] = {"name": name, "available": status.state == "available",
                           "status": status.state, "reason": status.reason,
                           "conformance": False}
    if status.state != "available":
        return row
    extras = optional_members(b)
    row["conformance"] = bool(extras.conformance)
    for key, member, fn in (("device", "device", lambda: device_label(b)),
                            ("memory", "memory_info()", extras.memory_info),
                            ("kernel", "kernel_info()", extras.kernel_info)):
        try:
            if fn is not None:
                row[key] = fn()
        except Exception as exc:  # noqa: BLE001 - listed as a failed backend, in one line
            row.update(available=False, status="failed", reason=member_failure(member, exc))
            break
    return row


def info_report() -> dict[str, Any]:
    """Everything ``mlcore info`` shows, as a JSON-ready dict."""

    choice = backend_choice()
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "backend": {"name": choice.name, "source": choice.source},
        "backends": _backend_rows(),
        "plugins": [vars(r) | {} for r in inspect().records],
    }
    try:
        report["backend"]["device"] = device_label(get_backend())
        report["backend"]["error"] = ""
    except MlcoreError as exc:
        report["backend"]["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a backend member that raised (device_label)
        report["backend"]["error"] = (f"backend {choice.name!r}: "
                                      f"{member_failure('device_label()', exc)}")
    return report


def _print_plugins(plugins: list[dict[str, Any]]) -> None:
    for p in plugins:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["provides"].items())
        line = f"  {p['name']:<22} {p['distribution']} {p['version']:<8} {p['status']}"
        click.echo(line + (f" - {provides}" if provides else ""))
        for problem in ([p["error"]] if p["error"] else []) + p.get("conflicts", []):
            click.echo(f"      {problem}")


@main.command(epilog="""\b
Examples:
  mlcore info
  MLCORE_BACKEND=strict mlcore info --json""")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Version, selected backend, every backend and plugin with its status."""
    report = info_report()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_info(report)
    if report["backend"]["error"]:
        raise click.ClickException(report["backend"]["error"])


def _print_info(report: dict[str, Any]) -> None:
    b = report["backend"]
    click.echo(f"mlcore {report['version']} (Python {report['python']})")
    click.echo(f"selected backend: {b['name']} (from {b['source']})"
               + (f", device {b['device']}" if not b["error"] else ""))
    click.echo("backends:")
    for row in report["backends"]:
        state = f"available, device {row['device']}" if row["available"] else (
            f"{row.get('status', 'unavailable')}: {row['reason']}")
        if row["conformance"]:
            state += " (a conformance backend: checks the core, not built for speed)"
        click.echo(f"  {row['name']:<8} {state}")
        for key, label in (("memory", "memory"), ("kernel", "kernels")):
            if row.get(key):
                click.echo(f"           {label}: {row[key]}")
    click.echo("plugins:")
    _print_plugins(report["plugins"])


@main.command(epilog="""\b
Examples:
  mlcore plugins
  MLCORE_DISABLE_PLUGIN_AUTOLOAD=1 mlcore plugins --json""")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins(as_json: bool) -> None:
    """Every plugin with distribution, version, status and what it provides."""

    reg = inspect()  # lists everything, even when strict mode makes the problems errors
    rows = [vars(r) for r in reg.records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_plugins(rows)
    if reg.strict and reg.problems:
        raise click.ClickException(f"MLCORE_STRICT_PLUGINS is set and {len(reg.problems)} "
                                   f"plugin problem(s) were found (above).")


def _bench_runner() -> Any:
    """``mlcore_bench.runner``: the suite is its own distribution, mlcore-bench."""
    try:
        from mlcore_bench import runner
    except ModuleNotFoundError as exc:
        if exc.name != "mlcore_bench":
            raise click.ClickException(
                f"mlcore-bench is installed but cannot be imported ({exc}). Reinstall it: "
                f"pip install --force-reinstall mlcore-bench") from exc
        raise click.ClickException("mlcore bench needs the benchmark suite, which is not "
                                   "installed. Install it with: pip install mlcore-bench"
                                   ) from exc
    return runner


@main.command(epilog="""\b
Examples:
  mlcore bench --quick
  mlcore bench --quick --cases mlp_step/2-4-1 --backend numpy --json bench.json
  mlcore bench --json bench.json --plot bench.png     (the full suite, ~25 min)""")
@click.option("--quick", is_flag=True,
              help="A representative subset with few repetitions (under two minutes; float32 "
                   "unless --dtype is given).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the full report (machine, versions, BLAS, threads, commit) as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Save a chart of training-step time against batch size to PLOT, and the "
                   "ratios to the references beside it (PLOT-ratios.png); needs matplotlib "
                   "(pip install 'mlcore-bench[plot]').")
@click.option("--backend", "backends", multiple=True,
              help="Only this competitor: an installed mlcore backend, or a reference "
                   "(numpy-hand, torch-cpu, torch-cuda; they stay unless one is named). "
                   "Repeatable.")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["float32", "float64"]),
              help="Repeatable; default both (float32 with --quick).")
@click.option("--cases", "case_patterns", multiple=True,
              help="Only cases whose name contains or glob-matches this (e.g. mlp_step, "
                   "activation/relu). Repeatable or comma-separated.")
@click.option("--rounds", type=click.IntRange(1), default=None,
              help="Interleaved timing rounds per case (default 5, 2 with --quick).")
@click.option("--max-seconds", "max_seconds", type=click.FloatRange(0, min_open=True),
              default=None,
              help="Seconds one competitor may spend on one case (set-up included) before it "
                   "is cut and shown as 'cut' (default: 5 with --quick, no cap otherwise).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Cap BLAS, OpenMP and PyTorch threads (default: each library's own).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar over the cases on stderr (default: when it is a terminal).")
@click.option("--distributed", is_flag=True,
              help="Instead: data-parallel scaling (1 and -n processes, whole epochs of "
                   "784-512-512-10, against PyTorch DDP where installed) and the model of "
                   "larger jobs; needs mlcore[mpi] (docs/distributed.md).")
@click.option("-n", "--processes", default="2",
              help="With --distributed: process counts besides 1, comma-separated.")
def bench(quick: bool, json_path: str | None, plot_path: str | None,
          backends: tuple[str, ...], dtypes: tuple[str, ...], case_patterns: tuple[str, ...],
          rounds: int | None, max_seconds: float | None, threads: int | None,
          progress: bool | None, distributed: bool, processes: str) -> None:
    """Time mlcore on every backend against hand-written NumPy and PyTorch.

    Needs the benchmark suite: pip install mlcore-bench ('mlcore-bench[torch,plot]' for
    the PyTorch reference and the charts). Prints a table per case, the performance
    targets and a backend recommendation; the options are checked before anything runs.
    """
    if distributed:
        _bench_runner()  # says how to install the suite when it is missing
        from mlcore_bench import distributed_scaling

        distributed_scaling.main(["-n", processes, "--rounds", str(rounds or 3),
                                  *(["--json", json_path] if json_path else [])])
        return
    patterns = [p.strip() for text in case_patterns for p in text.split(",") if p.strip()]
    if case_patterns and not patterns:  # "--cases ," would otherwise run every case
        raise click.BadParameter(
            f"names no case ({', '.join(map(repr, case_patterns))}); pass a case name or "
            f"pattern, such as --cases mlp_step, or leave --cases out to run every case.",
            param_hint="--cases")
    runner = _bench_runner()
    chosen = list(dtypes) or (["float32"] if quick else ["float32", "float64"])
    opts = runner.Options(quick=quick, backends=list(backends), dtypes=chosen,
                          cases=patterns, rounds=rounds, threads=threads, echo=click.echo,
                          progress=progress, max_seconds=max_seconds)
    runner.main(opts, json_path, plot_path)


@main.group(epilog="""\b
Examples:
  mlcore demo gates
  mlcore demo xor --seeds 20
  mlcore demo digits --backend strict""")
def demo() -> None:
    """The MLP chapter's experiments: logic gates, XOR, handwritten digits."""


def _demo_backend(name: str | None) -> Any:
    from contextlib import nullcontext


    return use_backend(name) if name else nullcontext()


@demo.command(epilog="""\b
Example:
  mlcore demo gates --backend strict""")
@click.option("--backend", default=None, help="Backend to run on (default: the selected one).")
def gates(backend: str | None) -> None:
    """One perceptron per gate: AND, OR, NAND, NOR are learned; XOR, XNOR are not."""

    with _demo_backend(backend):
        click.echo("gate   perceptron rule (best epoch)   best single step unit on a grid")
        for gate in experiments.GATES:
            run = experiments.perceptron(gate)
            state = "learned" if run.converged else "never converges"
            best = experiments.best_line_accuracy(gate)
            click.echo(f"{gate:<5} {run.best_accuracy:>5.0%}  {state:<26} {best:>5.0%}")
        model = experiments.hand_wired_xor()
        out = model.backend.to_numpy(model.predict(experiments.INPUTS)).reshape(-1)
        click.echo(f"hand-wired XOR network (OR, NAND -> AND), figure 1.7: "
                   f"{[int(v) for v in out]} (XOR is {experiments.GATES['XOR']})")


@demo.command(epilog="""\b
Example:
  mlcore demo xor --seeds 20""")
@click.option("--backend", default=None, help="Backend to run on (default: the selected one).")
@click.option("--seeds", default=10, show_default=True, type=click.IntRange(1),
              help="How many seeds (0, 1, ...) to train from.")
def xor(backend: str | None, seeds: int) -> None:
    """An MLP with one hidden layer (2-4-1, tanh, sigmoid) learns XOR and XNOR."""

    with _demo_backend(backend):
        for gate in ("XOR", "XNOR"):
            ok = experiments.xor_seed_successes(gate, range(seeds))
            click.echo(f"{gate}: 100% accuracy from {len(ok)} of {seeds} seeds {ok}")


@demo.command(epilog="""\b
Example:
  mlcore demo digits --epochs 30 --backend numpy""")
@click.option("--backend", default=None, help="Backend to run on (default: the selected one).")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="Seed of the initial weights and the shuffling.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Save the learning curves (train and test, each epoch) as this PNG "
                   "(needs matplotlib: pip install 'mlcore[plot]').")
def digits(backend: str | None, epochs: int, seed: int, plot_path: str | None) -> None:
    """Train an MLP on scikit-learn's handwritten digits; print test accuracy and time."""

    try:
        with _demo_backend(backend):
            result = experiments.digits(epochs=epochs, seed=seed,
                                        validate=plot_path is not None)
    except ModuleNotFoundError as exc:  # scikit-learn is an optional extra
        raise click.ClickException(str(exc)) from exc
    sizes = "-".join(str(s) for s in experiments.DIGITS_SIZES)
    click.echo(f"digits: MLP {sizes} (relu, softmax), adam, {epochs} epochs, "
               f"{result.n_train} train / {result.n_test} test images, backend {result.backend}")
    click.echo(f"test accuracy {result.accuracy:.2%}, training time {result.seconds:.2f} s")
    if plot_path is not None:
        _plot(result.history, plot_path, "digits (val_: the test set)")


def _plot(history: Any, path: str, title: str) -> None:

    try:
        plot_history(history, path, title=title)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"learning curves saved to {path}")


@main.command("plot-history", epilog="""\b
Example:
  mlcore plot-history training.csv -o curves.png""")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="The PNG to write (default: the CSV's name with .png).")
def plot_history_command(csv_path: str, out: str | None) -> None:
    """Draw the learning curves of a CSVLogger file (loss and every metric, train and val_)."""
    import os

    _plot(csv_path, out or os.path.splitext(csv_path)[0] + ".png", os.path.basename(csv_path))


def _register_launch() -> None:
    """``mlcore launch`` lives with the distributed training it starts."""

    main.add_command(launch)


_register_launch()
