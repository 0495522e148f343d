"""Data-parallel scaling of 784-512-512-10 on this machine, and a model of larger jobs.

``python -m mlcore_bench.distributed_scaling [--rounds 3] [--batches 32,128,512] [--json F]``
(with ``mlcore[mpi]`` installed).

Launches ``mlcore launch -n K --threads 1`` for K = 1 and 2, interleaved (1 2 1 2 ...), each
timing ``fit(..., distributed=True)`` (Adam, float32, per-process batch B, so the global
batch is K·B: weak scaling) and, for K = 2, the allreduce over message sizes from 8 B to
8 MiB. Prints per round and as medians with their spread: samples/s, efficiency
``E = samples/s(K) / (K · samples/s(1))`` (paired within a round), time in the gradient
allreduce per step (packing, staging and MPI), the fitted latency and bandwidth of this
machine's loopback, and what ring/recursive-halving allreduce over a 10 Gb/s network would
give at 8 and 64 processes (see docs/distributed.md for the model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

SIZES = [784, 512, 512, 10]
MESSAGE_BYTES = [8, 1024, 65536, 2**20, 2_678_824, 8 * 2**20]
NETWORK = {"name": "10 Gb/s Ethernet", "bandwidth": 10e9 / 8, "latency": 30e-6}
"""The network the model assumes: 10 Gb/s, and 30 µs a message (typical TCP on 10 GbE; an
assumption, not measured here)."""


# -- one process of a K-process job --------------------------------------------------------
def _model_and_data(rows: int) -> tuple[Any, Any, Any]:
    import mlcore

    model = mlcore.MLP(SIZES, activation="relu", output_activation="softmax", seed=0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, SIZES[0])).astype(np.float32)
    return model, X, rng.integers(0, SIZES[-1], size=rows)


def _time_fit(batch: int, steps: int, size: int) -> dict[str, float]:
    from mlcore import distributed

    model, X, y = _model_and_data(steps * size * batch)
    kwargs = dict(loss="cross_entropy", optimizer="adam", batch_size=batch, shuffle=False,
                  verbose=False)
    model.fit(X[: 2 * size * batch], y[: 2 * size * batch], **kwargs, distributed=True)
    dp = distributed.DataParallel()
    distributed.barrier()
    began = time.perf_counter()
    model.fit(X, y, **kwargs, distributed=dp)
    seconds = time.perf_counter() - began
    return {"batch": batch, "steps": steps, "step_ms": 1e3 * seconds / steps,
            "samples_per_s": steps * size * batch / seconds,
            "allreduce_ms": 1e3 * dp.stats["allreduce_seconds"] / steps}


class _Loopback:
    """A stand-in communicator whose allreduce returns its input: times the packing."""

    rank, size = 0, 1

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        return x

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]


def _pack_ms(batch: int) -> float:
    """Gradient packing and unpacking alone (what reduce_gradients adds besides MPI)."""
    from mlcore.distributed import DataParallel

    model = _model_and_data(1)[0]
    dp = DataParallel(comm=_Loopback())  # type: ignore[arg-type]
    dp.start(model, {})
    params = model.parameters()
    times = []
    for _ in range(30):
        for p in params:
            p.grad = p.value * 0.001
        t0 = time.perf_counter()
        dp.reduce_gradients(params, batch)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _allreduce_sweep() -> list[dict[str, float]]:
    from mlcore import distributed

    comm = distributed.communicator("numpy")
    rows = []
    for nbytes in MESSAGE_BYTES:
        x = np.ones(max(1, nbytes // 4), dtype=np.float32)
        reps = 50 if nbytes < 2**20 else 15
        times = []
        for _ in range(reps):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce(x)
            times.append(time.perf_counter() - t0)
        rows.append({"bytes": x.nbytes, "seconds": statistics.median(times)})
    return rows


def worker(batches: list[int], steps: int) -> None:
    from mlcore import distributed

    size = distributed.size()
    result: dict[str, Any] = {"size": size, "fits": [_time_fit(b, steps, size)
                                                     for b in batches]}
    if size > 1:
        result["sweep"] = _allreduce_sweep()
    else:
        result["pack_ms"] = _pack_ms(batches[0])
    if distributed.is_main():
        print("RESULT " + json.dumps(result), flush=True)


# -- the driver ----------------------------------------------------------------------------
def _launch(k: int, batches: list[int], steps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mlcore", "launch", "-n", str(k), "--threads", "1", "-m",
           "mlcore_bench.distributed_scaling", "--worker", "--batches",
           ",".join(map(str, batches)), "--steps", str(steps)]
    env = dict(os.environ, MLCORE_NUMPY_JIT="0")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                         check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT "):]))


def fit_latency_bandwidth(sweep: list[dict[str, float]]) -> tuple[float, float]:
    """(latency in seconds, bandwidth in bytes/s): the time of the smallest message, and
    the least-squares slope ``t = a + bytes / bandwidth`` over the messages of 64 KiB and
    more (the fitted intercept of a loaded machine is noise, even negative)."""
    latency = min(sweep, key=lambda r: r["bytes"])["seconds"]
    big = [r for r in sweep if r["bytes"] >= 65536]
    x = np.array([r["bytes"] for r in big], dtype=float)
    slope = np.polyfit(x, np.array([r["seconds"] for r in big]), 1)[0]
    return float(latency), 1.0 / float(slope)


def allreduce_model(p: int, nbytes: float, latency: float, bandwidth: float) -> float:
    """Seconds for an allreduce of ``nbytes`` over ``p`` processes, bandwidth-optimal
    (ring or recursive halving/doubling): ``2 ceil(log2 p) latency + 2 (p-1)/p ·
    nbytes / bandwidth``."""
    return 2 * math.ceil(math.log2(p)) * latency + 2 * (p - 1) / p * nbytes / bandwidth


def batch_for(efficiency: float, t_comm: float, c0: float, c1: float) -> float:
    """The per-process batch B with ``t_c(B) / (t_c(B) + t_comm) = efficiency`` for a
    compute time ``t_c(B) = c0 + c1·B``."""
    return max(0.0, (efficiency / (1 - efficiency) * t_comm - c0) / c1)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def report(rounds: list[dict[int, dict[str, Any]]], batches: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"loadavg_end": os.getloadavg(), "rows": []}
    print(f"{'B':>5} {'samples/s K=1':>22} {'samples/s K=2':>22} {'efficiency':>20} "
          f"{'allreduce ms/step':>20}")
    for i, b in enumerate(batches):
        one = [r[1]["fits"][i]["samples_per_s"] for r in rounds]
        two = [r[2]["fits"][i]["samples_per_s"] for r in rounds]
        eff = [t / (2 * o) for o, t in zip(one, two, strict=True)]
        ar = [r[2]["fits"][i]["allreduce_ms"] for r in rounds]
        step1 = [r[1]["fits"][i]["step_ms"] for r in rounds]
        out["rows"].append({"batch": b, "samples_per_s_1": one, "samples_per_s_2": two,
                            "efficiency": eff, "allreduce_ms": ar, "step_ms_1": step1})
        print(f"{b:>5} {_spread(one):>22} {_spread(two):>22} {_spread(eff):>20} "
              f"{_spread(ar):>20}")
    sweep = [statistics.median(r[2]["sweep"][j]["seconds"] for r in rounds)
             for j in range(len(MESSAGE_BYTES))]
    rows = [{"bytes": r["bytes"], "seconds": s} for r, s in zip(rounds[0][2]["sweep"], sweep,
                                                                 strict=True)]
    alpha, beta = fit_latency_bandwidth(rows)
    pack = statistics.median(r[1]["pack_ms"] for r in rounds) / 1e3
    print("allreduce over loopback, 2 processes: " + ", ".join(
        f"{r['bytes']} B {1e6 * r['seconds']:.0f} us" for r in rows))
    print(f"fitted: latency {1e6 * alpha:.1f} us, bandwidth {beta / 1e9:.2f} GB/s; "
          f"packing {1e3 * pack:.2f} ms/step")
    out |= {"sweep": rows, "latency": alpha, "bandwidth": beta, "pack_seconds": pack}
    out["model"] = _model(out, batches, pack)
    return out


QUIET_COMPUTE = (1.25e-3, 1.50e-5)
"""Seconds per 784-512-512-10 Adam step as ``c0 + c1·B`` on this machine when quiet: the
line through docs/benchmarks.md's numpy figures (load 0.44: 1.73 ms at batch 32, 16.6 ms at
1024)."""


def _model(out: dict[str, Any], batches: list[int], pack: float) -> list[dict[str, Any]]:
    step = [statistics.median(r["step_ms_1"]) / 1e3 for r in out["rows"]]
    c1, c0 = np.polyfit(np.array(batches, dtype=float), np.array(step), 1)
    nbytes = sum(a * b + b for a, b in itertools.pairwise(SIZES)) * 4
    print(f"gradients {nbytes} B; network {NETWORK['name']}, latency "
          f"{1e6 * NETWORK['latency']:.0f} us (assumed); packing {1e3 * pack:.2f} ms")
    rows = []
    for label, (a, b) in (("measured here", (float(c0), float(c1))),
                          ("quiet machine", QUIET_COMPUTE)):
        print(f"compute per step ({label}): {1e3 * a:.2f} ms + {1e3 * b:.4f} ms per sample")
        for p in (2, 8, 64):
            t_net = allreduce_model(p, nbytes, NETWORK["latency"], NETWORK["bandwidth"])
            t_comm = t_net + pack
            need = batch_for(0.9, t_comm, a, b)
            effs = {k: (a + b * k) / (a + b * k + t_comm) for k in (32, 256, 1024)}
            rows.append({"compute": label, "processes": p, "allreduce_seconds": t_net,
                         "batch_for_90": need,
                         **{f"efficiency_at_{k}": float(e) for k, e in effs.items()}})
            print(f"  P={p:>3}: allreduce {1e3 * t_net:.2f} ms; efficiency at B=32/256/1024: "
                  + "/".join(f"{e:.0%}" for e in effs.values())
                  + f"; 90% needs B >= {math.ceil(need)} per process")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="32,128,512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        worker(batches, args.steps)
        return
    print(f"load average at start: {os.getloadavg()}")
    rounds = []
    for i in range(args.rounds):
        rounds.append({k: _launch(k, batches, args.steps) for k in (1, 2)})
        print(f"round {i + 1}: " + "; ".join(
            f"K={k} " + " ".join(f"B{f['batch']}:{f['samples_per_s']:.0f}/s"
                                 for f in rounds[-1][k]["fits"]) for k in (1, 2)))
    result = report(rounds, batches)
    print(f"load average at end: {result['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, **result}, f, indent=1)


if __name__ == "__main__":
    main()
