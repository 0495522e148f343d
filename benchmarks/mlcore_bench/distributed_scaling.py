"""Data-parallel scaling of 784-512-512-10 on this machine, and a model of larger jobs.

``mlcore bench --distributed [-n 2] [--rounds 3]``, or ``python -m
mlcore_bench.distributed_scaling [-n 2] [--rounds 3] [--batches 32,128,512] [--rows 60000]
[--steps S] [--torch/--no-torch] [--json F]`` (with ``mlcore[mpi]`` installed; runs from any
folder).

Launches ``mlcore launch -n K --threads 1`` for K = 1 and each K given, interleaved (1 2 1 2
...), each timing one whole epoch of ``fit(..., distributed=True)`` over ``--rows`` rows
(Adam, float32, shuffled, per-process batch B, so the global batch is K·B: weak scaling;
``--steps S`` times S steps instead, the old default of 20 that hides per-epoch costs) and,
for K > 1, the allreduce over message sizes from 8 B to 8 MiB. With PyTorch installed the
same epoch runs under PyTorch DDP (gloo, one thread, its processes started the same way),
interleaved with mlcore's. Prints per round and as medians with their spread: samples/s, efficiency
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
NETWORKS = [{"name": "10 Gb/s Ethernet", "bandwidth": 0.9e9, "latency": 30e-6},
            {"name": "100 Gb/s InfiniBand", "bandwidth": 10e9, "latency": 3e-6}]
"""The networks the model assumes, with achievable (not line-rate) allreduce bandwidths:
about 0.9 GB/s of 10 GbE's 1.25 over TCP, 10 GB/s of 100 Gb/s InfiniBand's 12.5; 30 µs and
3 µs a message. Assumptions from the vendors' and NCCL/MPI benchmark figures, not measured
here (one machine)."""


# -- one process of a K-process job --------------------------------------------------------
def _model_and_data(rows: int) -> tuple[Any, Any, Any]:
    import mlcore

    model = mlcore.MLP(SIZES, activation="relu", output_activation="softmax", seed=0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, SIZES[0])).astype(np.float32)
    return model, X, rng.integers(0, SIZES[-1], size=rows)


def _rows_for(batch: int, steps: int | None, size: int, rows: int) -> int:
    return rows if steps is None else steps * size * batch


def _time_fit(batch: int, steps: int | None, size: int, rows: int) -> dict[str, float]:
    from mlcore import distributed

    model, X, y = _model_and_data(_rows_for(batch, steps, size, rows))
    kwargs = dict(loss="cross_entropy", optimizer="adam", batch_size=batch, shuffle=True,
                  seed=0, verbose=False)
    model.fit(X[: 2 * size * batch], y[: 2 * size * batch], **kwargs, distributed=True)
    dp = distributed.DataParallel()
    distributed.barrier()
    began = time.perf_counter()
    model.fit(X, y, **kwargs, distributed=dp)
    seconds = time.perf_counter() - began
    done = int(dp.stats["steps"]) or 1
    return {"batch": batch, "steps": done, "step_ms": 1e3 * seconds / done,
            "samples_per_s": X.shape[0] / seconds,
            "allreduce_ms": 1e3 * dp.stats["allreduce_seconds"] / done}


def _time_torch(batch: int, steps: int | None, size: int, rows: int,
                port: int) -> dict[str, float]:
    """The same epoch under PyTorch DDP (gloo): each process takes its contiguous slice of
    every global batch of the epoch's shuffled order, gathering only its own rows."""
    import torch
    import torch.distributed as tdist

    from mlcore import distributed

    torch.set_num_threads(1)
    rank = distributed.rank()
    if size > 1 and not tdist.is_initialized():
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                 world_size=size)
    torch.manual_seed(0)
    layers: list[Any] = []
    for a, b in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net: Any = torch.nn.Sequential(*layers[:-1])
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    _, Xn, yn = _model_and_data(_rows_for(batch, steps, size, rows))
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    gen = torch.Generator().manual_seed(0)

    def epoch(n: int) -> int:
        order = torch.randperm(n, generator=gen)
        taken = 0
        for s in range(0, n, size * batch):
            q, r = divmod(min(s + size * batch, n) - s, size)
            lo = s + rank * q + min(rank, r)
            idx = order[lo:lo + q + (rank < r)]
            opt.zero_grad()
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()
            taken += 1
        return taken

    epoch(2 * size * batch)
    if size > 1:
        tdist.barrier()
    began = time.perf_counter()
    done = epoch(X.shape[0])
    seconds = time.perf_counter() - began
    return {"batch": batch, "steps": done, "step_ms": 1e3 * seconds / done,
            "samples_per_s": X.shape[0] / seconds}


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


def worker(batches: list[int], steps: int | None, rows: int, torch_port: int | None) -> None:
    from mlcore import distributed

    size = distributed.size()
    if torch_port is not None:
        result: dict[str, Any] = {"size": size, "fits": [
            _time_torch(b, steps, size, rows, torch_port) for b in batches]}
    else:
        result = {"size": size, "fits": [_time_fit(b, steps, size, rows) for b in batches]}
        if size > 1:
            result["sweep"] = _allreduce_sweep()
        else:
            result["pack_ms"] = _pack_ms(batches[0])
    if distributed.is_main():
        print("RESULT " + json.dumps(result), flush=True)


# -- the driver ----------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(k: int, batches: list[int], steps: int | None, rows: int,
            torch: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mlcore", "launch", "-n", str(k), "--threads", "1", "-m",
           "mlcore_bench.distributed_scaling", "--worker", "--batches",
           ",".join(map(str, batches)), "--rows", str(rows)]
    cmd += [] if steps is None else ["--steps", str(steps)]
    cmd += ["--torch-port", str(_free_port())] if torch else []
    # PYTHONSAFEPATH: the current folder is not put on sys.path, so a folder holding the
    # checkout as mlcore/ cannot hide the installed package
    env = dict(os.environ, MLCORE_NUMPY_JIT="0", PYTHONSAFEPATH="1")
    job = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env,
                         check=False)
    line = next((x for x in job.stdout.splitlines() if x.startswith("RESULT ")), None)
    if job.returncode != 0 or line is None:
        raise SystemExit(
            f"distributed_scaling: {'PyTorch DDP' if torch else 'mlcore'} with {k} "
            f"process(es) failed (exit status {job.returncode}):\n$ {' '.join(cmd)}\n"
            f"{job.stdout[-3000:]}{job.stderr[-6000:]}")
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


def batch_for(efficiency: float, t_comm: float, c0: float, c1: float) -> float:
    """The per-process batch B with ``t_c(B) / (t_c(B) + t_comm) = efficiency`` for a
    compute time ``t_c(B) = c0 + c1·B``."""
    return max(0.0, (efficiency / (1 - efficiency) * t_comm - c0) / c1)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def report(rounds: list[dict[Any, dict[str, Any]]], batches: list[int],
           ks: list[int] | None = None) -> dict[str, Any]:
    ks = ks or [2]
    out: dict[str, Any] = {"loadavg_end": os.getloadavg(), "rows": []}
    print(f"{'who':>6} {'K':>2} {'B':>5} {'samples/s K=1':>22} {'samples/s K':>22} "
          f"{'efficiency':>20} {'allreduce ms/step':>20}")
    for who in ("mlcore", "torch"):
        for k in ks:
            key1, keyk = (1, k) if who == "mlcore" else ("torch-1", f"torch-{k}")
            if keyk not in rounds[0]:
                continue
            for i, b in enumerate(batches):
                one = [r[key1]["fits"][i]["samples_per_s"] for r in rounds]
                many = [r[keyk]["fits"][i]["samples_per_s"] for r in rounds]
                eff = [t / (k * o) for o, t in zip(one, many, strict=True)]
                ar = [r[keyk]["fits"][i].get("allreduce_ms", math.nan) for r in rounds]
                step1 = [r[key1]["fits"][i]["step_ms"] for r in rounds]
                out["rows"].append({"who": who, "processes": k, "batch": b,
                                    "samples_per_s_1": one, "samples_per_s_k": many,
                                    "efficiency": eff, "allreduce_ms": ar,
                                    "step_ms_1": step1})
                print(f"{who:>6} {k:>2} {b:>5} {_spread(one):>22} {_spread(many):>22} "
                      f"{_spread(eff):>20} {_spread(ar):>20}")
    k = ks[0]
    sweep = [statistics.median(r[k]["sweep"][j]["seconds"] for r in rounds)
             for j in range(len(MESSAGE_BYTES))]
    rows = [{"bytes": r["bytes"], "seconds": s} for r, s in zip(rounds[0][k]["sweep"], sweep,
                                                                 strict=True)]
    alpha, beta = fit_latency_bandwidth(rows)
    pack = statistics.median(r[1]["pack_ms"] for r in rounds) / 1e3
    print(f"allreduce over loopback, {k} processes: " + ", ".join(
        f"{r['bytes']} B {1e6 * r['seconds']:.0f} us" for r in rows))
    print(f"fitted: latency {1e6 * alpha:.1f} us, bandwidth {beta / 1e9:.2f} GB/s; "
          f"packing {1e3 * pack:.2f} ms/step")
    out |= {"sweep": rows, "latency": alpha, "bandwidth": beta, "pack_seconds": pack}
    out["model"] = _model(out, batches, pack)
    out["check"] = _check_model(out, rounds, batches, ks, alpha, beta, pack)
    return out


QUIET_COMPUTE = (1.25e-3, 1.50e-5)
"""Seconds per 784-512-512-10 Adam step as ``c0 + c1·B`` on this machine when quiet: the
line through docs/benchmarks.md's numpy figures (load 0.44: 1.73 ms at batch 32, 16.6 ms at
1024)."""


def _model(out: dict[str, Any], batches: list[int], pack: float) -> list[dict[str, Any]]:
    mine = [r for r in out["rows"] if r["who"] == "mlcore" and r["processes"] ==
            out["rows"][0]["processes"]]
    step = [statistics.median(r["step_ms_1"]) / 1e3 for r in mine]
    c1, c0 = np.polyfit(np.array(batches, dtype=float), np.array(step), 1)
    nbytes = sum(a * b + b for a, b in itertools.pairwise(SIZES)) * 4
    print(f"gradients {nbytes} B; packing {1e3 * pack:.2f} ms; ring allreduce")
    rows = []
    for label, (a, b) in (("measured here", (float(c0), float(c1))),
                          ("quiet machine", QUIET_COMPUTE)):
        print(f"compute per step ({label}): {1e3 * a:.2f} ms + {1e3 * b:.4f} ms per sample")
        for net in NETWORKS:
            for p in (2, 8, 64):
                t_net = ring_allreduce(p, nbytes, net["latency"], net["bandwidth"])
                t_comm = t_net + pack
                need = batch_for(0.9, t_comm, a, b)
                effs = {k: (a + b * k) / (a + b * k + t_comm) for k in (32, 256, 1024)}
                rows.append({"compute": label, "network": net["name"], "processes": p,
                             "allreduce_seconds": t_net, "batch_for_90": need,
                             **{f"efficiency_at_{k}": float(e) for k, e in effs.items()}})
                print(f"  {net['name']}, P={p:>3}: allreduce {1e3 * t_net:.2f} ms; "
                      "efficiency at B=32/256/1024: "
                      + "/".join(f"{e:.0%}" for e in effs.values())
                      + f"; 90% needs B >= {math.ceil(need)} per process")
    return rows


def ring_allreduce(p: int, nbytes: float, latency: float, bandwidth: float) -> float:
    """Seconds for a ring allreduce of ``nbytes`` over ``p`` processes (reduce-scatter then
    allgather: ``2 (p-1)`` messages of ``nbytes/p``): ``2 (p-1) latency + 2 (p-1)/p ·
    nbytes / bandwidth``, ``bandwidth`` the achievable one (not the line rate)."""
    return 2 * (p - 1) * latency + 2 * (p - 1) / p * nbytes / bandwidth


def _check_model(out: dict[str, Any], rounds: list[dict[Any, dict[str, Any]]],
                 batches: list[int], ks: list[int], alpha: float, beta: float,
                 pack: float) -> list[dict[str, Any]]:
    """The model's efficiency with this machine's fitted latency and bandwidth and its
    measured one-process step, against the measured efficiency."""
    nbytes = sum(a * b + b for a, b in itertools.pairwise(SIZES)) * 4
    rows = []
    for row in out["rows"]:
        if row["who"] != "mlcore":
            continue
        p, b = row["processes"], row["batch"]
        t1 = statistics.median(row["step_ms_1"]) / 1e3
        pred = t1 / (t1 + pack + ring_allreduce(p, nbytes, alpha, beta))
        meas = statistics.median(row["efficiency"])
        rows.append({"processes": p, "batch": b, "predicted": pred, "measured": meas})
        print(f"model check K={p} B={b}: predicted {pred:.2f}, measured {meas:.2f} "
              f"({(pred - meas) / meas:+.0%})")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--processes", default="2",
                    help="process counts besides 1, comma-separated (default 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="32,128,512")
    ap.add_argument("--rows", type=int, default=60_000,
                    help="rows of the timed epoch (default 60000, MNIST's training set)")
    ap.add_argument("--steps", type=int, default=None,
                    help="time this many steps instead of a whole epoch")
    ap.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                    help="also PyTorch DDP (gloo); default: when torch is installed")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-port", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        worker(batches, args.steps, args.rows, args.torch_port)
        return
    ks = [int(k) for k in args.processes.split(",")]
    use_torch = args.torch
    if use_torch is None:
        import importlib.util

        use_torch = importlib.util.find_spec("torch") is not None
    timed = f"whole epochs of {args.rows} rows" if args.steps is None else \
        f"{args.steps} steps"
    print(f"load average at start: {os.getloadavg()}; {timed}; K = 1, "
          f"{', '.join(map(str, ks))}; PyTorch DDP: {'yes' if use_torch else 'no'}")
    rounds: list[dict[Any, dict[str, Any]]] = []
    for i in range(args.rounds):
        found: dict[Any, dict[str, Any]] = {}
        for k in (1, *ks):
            found[k] = _launch(k, batches, args.steps, args.rows)
            if use_torch:
                found[f"torch-{k}"] = _launch(k, batches, args.steps, args.rows, torch=True)
        rounds.append(found)
        print(f"round {i + 1}: " + "; ".join(
            f"{key} " + " ".join(f"B{f['batch']}:{f['samples_per_s']:.0f}/s"
                                 for f in value["fits"]) for key, value in found.items()))
    result = report(rounds, batches, ks)
    print(f"load average at end: {result['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, **result}, f, indent=1)


if __name__ == "__main__":
    main()
