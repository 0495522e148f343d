"""Where a training step spends its time: mlcore against the hand-written NumPy step.

``python -m mlcore_bench.profile_step [--batch 32] [--optimizer adam] [--xor] [--backend numpy]``

Times each phase of one step (forward, loss, backward, optimiser update, the rest) with
``perf_counter`` around the functions mlcore's step calls (wrapped here, nothing edited),
interleaved with the same phases of :class:`~mlcore_bench.reference_numpy.NumpyMLP`, then
prints medians per phase and the top functions of a cProfile run. The wrappers cost about
a microsecond per phase: negligible on 784-512-512-10, visible on the 2-4-1 net.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from . import bench_mlcore
from .cases import MNIST_SIZES, XOR_SIZES, StepCase

__all__ = ["main", "phases_mlcore", "phases_hand"]

Phases = dict[str, list[float]]
clock: Callable[[], float] = time.perf_counter
"""What the phases are timed with: wall time, or ``--clock cpu`` (this thread's CPU time,
far less disturbed by other processes on a shared machine; use it with ``--threads 1``)."""


def _timed(fn: Callable[..., Any], name: str, acc: Phases) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        out = fn(*args, **kwargs)
        acc[name].append(clock() - t0)
        return out
    return wrapper


def phases_mlcore(case: StepCase, backend: str, n: int) -> Phases:
    """Per-phase seconds of ``n`` mlcore steps (wrapping chain, the loss plan, the optimiser)."""
    import mlcore.training.fit as train
    from mlcore.training.lossplan import LossPlan

    acc: Phases = defaultdict(list)
    chain, vag = train.chain, LossPlan.value_and_grad

    def chain_timed(*args: Any) -> Any:
        out, backprop = _timed(chain, "forward", acc)(*args)
        return out, _timed(backprop, "backward", acc)

    train.chain = chain_timed  # type: ignore[assignment]
    LossPlan.value_and_grad = _timed(vag, "loss", acc)  # type: ignore[method-assign]
    try:
        bench = bench_mlcore.make(case, np.float32, backend)
        _wrap_optimizer(acc)
        bench.step()  # builds the cached step with the wrappers in place
        acc.clear()
        for _ in range(n):
            t0 = clock()
            bench.step()
            bench.sync()
            acc["total"].append(clock() - t0)
    finally:
        train.chain = chain  # type: ignore[assignment]
        LossPlan.value_and_grad = vag  # type: ignore[method-assign]
        _unwrap_optimizer()
    return acc


_SAVED: dict[type, Any] = {}


def _wrap_optimizer(acc: Phases) -> None:
    """Time ``step()`` of every optimiser class, whichever class defines it."""
    from mlcore import optimizers as optim

    for cls in (optim.SGD, optim.Adam):
        _SAVED[cls] = cls.__dict__.get("step")
        cls.step = _timed(cls.step, "update", acc)  # type: ignore[method-assign]


def _unwrap_optimizer() -> None:
    for cls, fn in _SAVED.items():
        if fn is None:
            del cls.step
        else:
            cls.step = fn  # type: ignore[method-assign]
    _SAVED.clear()


def phases_hand(case: StepCase, n: int) -> Phases:
    """Per-phase seconds of ``n`` hand-written NumPy steps."""
    X64, y, weights = case.data()
    from .reference_numpy import NumpyMLP

    m = NumpyMLP(weights, np.float32, case.hidden, case.loss, case.optimizer, case.lr)
    X = X64.astype(np.float32)
    t = y if case.loss == "softmax_ce" else y.astype(np.float32)
    acc: Phases = defaultdict(list)
    m.step(X, t)
    for _ in range(n):
        t0 = clock()
        logits = _timed(m.forward, "forward", acc)(X)
        _timed(m.loss_and_grad, "loss", acc)(logits, t)
        _timed(m.backward, "backward", acc)(X)
        _timed(m.opt.step, "update", acc)(m.flat_grad)
        acc["total"].append(clock() - t0)
    return acc


def _report(rows: dict[str, Phases]) -> str:
    names = ["forward", "loss", "backward", "update", "rest", "total"]
    lines = [f"{'phase':<10}" + "".join(f"{k:>14}" for k in rows) + f"{'ratio':>9}"]
    med = {k: {p: statistics.median(v) for p, v in ph.items()} for k, ph in rows.items()}
    for m in med.values():
        m["rest"] = m["total"] - sum(m.get(p, 0.0) for p in names[:4])
    a, b = list(med)
    for p in names:
        ratio = med[a].get(p, 0.0) / med[b][p] if med[b].get(p) else float("nan")
        lines.append(f"{p:<10}" + "".join(f"{med[k].get(p, 0.0) * 1e6:>11.1f} µs" for k in med)
                     + f"{ratio:>9.2f}")
    return "\n".join(lines)


def _cprofile(case: StepCase, backend: str, n: int, top: int = 18) -> str:
    bench = bench_mlcore.make(case, np.float32, backend)
    bench.step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        bench.step()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mlcore_bench.profile_step")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    ap.add_argument("--xor", action="store_true", help="the 2-4-1 net at batch 4 instead")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="cap BLAS/OpenMP threads")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = ap.parse_args(argv)
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    from .runner import thread_limit

    with thread_limit(args.threads):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    lr = 1e-3 if args.optimizer == "adam" else 1e-2
    case = (StepCase(XOR_SIZES, 4, "tanh", "sigmoid_bce", args.optimizer, lr) if args.xor
            else StepCase(MNIST_SIZES, args.batch, optimizer=args.optimizer, lr=lr))
    rows: dict[str, Phases] = {f"mlcore-{args.backend}": defaultdict(list),
                               "numpy-hand": defaultdict(list)}
    for _ in range(args.rounds):  # interleaved, a pause between, as the runner does
        for label in rows:
            time.sleep(0.15)
            got = (phases_mlcore(case, args.backend, args.steps) if label != "numpy-hand"
                   else phases_hand(case, args.steps))
            for p, v in got.items():
                rows[label][p] += v
    print(f"{case.name}, batch {case.batch}, float32: median per phase over "
          f"{args.rounds}x{args.steps} steps ({args.clock} clock, threads {args.threads})")
    print(_report(rows))
    print(_cprofile(case, args.backend, args.steps))


if __name__ == "__main__":
    main()
