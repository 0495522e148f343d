"""The CuPy training step against idiomatic eager PyTorch CUDA: speed, launches, memory.

    python3 benchmarks/gpu/cupy_speed.py --out OUT/speed.json      # on a GPU, ~60 s
    python3 benchmarks/gpu/cupy_speed.py --dry --out speed.json     # the same code on the CPU

The network is 784-512-512-10 (ReLU, cross-entropy from logits, float32), with the same
initial weights and data for every variant (the benchmark's ``StepCase``):

``mlcore-eager``  ``make_train_step(..., jit_compile=False)``: the eager step with the fused
                  kernels (the launches *before*).
``mlcore``        ``make_train_step(..., jit_compile=True)``: the core's pure step, compiled
                  by mlcore-cupy into one CUDA graph (hook ``mlcore_compile_step``; only
                  where the core has ``jit_compile``).
``mlcore-graph``  for a core without ``jit_compile``, SGD only: the eager step captured by
                  ``mlcore_cupy.graph.GraphStep`` directly (SGD's update has no per-step host
                  scalar, so replaying its capture is the same step; Adam's bias corrections
                  need the core's pure step).
``torch-cuda``    ``nn.Sequential`` + ``F.cross_entropy`` + ``torch.optim`` (the benchmark's
                  ``TorchMLP``).

Recorded, per optimiser and batch (256, 4096, 16384): the check that each variant computes
torch's update (relative error <= 1e-4 after one step), the time per step (CUDA events
around 20 steps, 5 interleaved rounds: median and range of each variant / torch-cuda), the
share of the measured cuBLAS peak the step's matrix products reach, host launch calls and
GPU kernels per step (``torch.profiler``, which sees every CUDA launch of the process; and
the captured graph's nodes by type: the launches one replay stands for), and
the memory pool's used bytes after steps 10, 100 and 1000. Targets: mlcore / torch-cuda
<= 0.5 at batch 256 and <= 0.9 at 4096; GEMM share >= 50 % at 16384; memory flat.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT.parent)]  # this checkout's mlcore_bench and mlcore

from gpu_checks import gemm_flops  # noqa: E402
from mlcore_bench import cases, reference_torch  # noqa: E402

import mlcore  # noqa: E402

SIZES = (784, 512, 512, 10)
TARGETS = ((256, 0.5), (4096, 0.9))
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC",
                "cudaGraphLaunch", "cuGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync")


class Variant:
    """A step ``fn()`` on fixed data, the parameters as host arrays, and the device sync."""

    def __init__(self, name: str, fn: Any, params: Any, sync: Any) -> None:
        self.name, self.fn, self.params, self.sync = name, fn, params, sync


def core_compiles() -> bool:
    """Whether this mlcore's training step takes ``jit_compile`` (the pure step the core
    hands to ``mlcore_compile_step``); without it only the eager step exists."""
    import inspect

    from mlcore.training.fit import make_train_step

    return "jit_compile" in inspect.signature(make_train_step).parameters


def _mlcore(backend: Any, case: Any, mode: str) -> Variant:
    """``mode``: "mlcore" (what a user gets: compiled where the backend compiles),
    "mlcore-eager" (the eager step: the launches before) or "mlcore-graph" (the eager SGD
    step captured directly, for a core that does not compile yet)."""
    from mlcore.training.fit import make_train_step

    X64, y64, weights = case.data()
    with mlcore.use_backend(backend.name):
        model = mlcore.MLP(list(SIZES), activation="relu", dtype="float32")
    params = model.parameters()
    for p, w in zip(params, weights, strict=True):
        p.set(backend.asarray(np.asarray(w, np.float32)))
    X, y = backend.asarray(X64.astype(np.float32)), backend.asarray(y64)
    loss = mlcore.loss("cross_entropy", from_logits=True)
    cls = mlcore.Adam if case.optimizer == "adam" else mlcore.SGD
    opt = cls(params, lr=case.lr)
    kw = {"jit_compile": mode == "mlcore"} if core_compiles() else {}
    with mlcore.use_backend(backend.name):
        eager = make_train_step(model, loss, opt, **kw)

    def host() -> list[np.ndarray]:
        return [backend.to_numpy(p.value) for p in params]

    if mode != "mlcore-graph":
        variant = Variant(mode, lambda: eager(X, y), host, backend.synchronize)
        if mode == "mlcore":  # the GraphStep the core's compile hook just built, if any
            from mlcore_cupy.graph import latest

            variant.graph = latest()  # type: ignore[attr-defined]
        return variant
    from mlcore_cupy.graph import GraphStep

    def step(ps: tuple[Any, ...], state: tuple[Any, ...], Xb: Any, yb: Any) -> Any:
        for p, a in zip(params, ps, strict=True):
            p.value = a  # the eager SGD step updates these in place
        return tuple(p.value for p in params), state, eager(Xb, yb)

    compiled = GraphStep(step, backend.lib)

    def run() -> Any:
        with backend.device:
            ps, _, value = compiled(tuple(p.value for p in params), (), X, y)
        for p, a in zip(params, ps, strict=True):
            p.value = a
        return value

    variant = Variant(mode, run, host, backend.synchronize)
    variant.graph = compiled  # type: ignore[attr-defined]
    return variant


def _torch(backend: Any, case: Any) -> Variant:
    torch = reference_torch.torch
    device = "cuda" if backend.name == "cupy" else "cpu"
    X64, y64, weights = case.data()
    ref = reference_torch.TorchMLP(weights, np.float32, device, optimizer=case.optimizer,
                                   lr=case.lr)
    X = torch.tensor(X64, dtype=torch.float32, device=device)
    y = torch.tensor(y64, device=device)
    return Variant("torch-cuda" if device == "cuda" else "torch-cpu", lambda: ref.step(X, y),
                   ref.params, reference_torch.sync(device))


def _check(variants: list[Variant]) -> dict[str, float]:
    """Relative error (norm-wise, per parameter, the largest) of each variant's weights after
    one step against torch's."""
    for v in variants:
        v.fn()
        v.sync()
    ref = variants[-1].params()
    out = {}
    for v in variants[:-1]:
        got = v.params()
        out[v.name] = max(float(np.linalg.norm(g - r) / (np.linalg.norm(r) or 1.0))
                          for g, r in zip(got, ref, strict=True))  # the bench's measure
    return out


def _events(backend: Any) -> tuple[Any, Any]:
    if backend.name != "cupy":
        return None, None
    cupy = backend.lib
    return cupy.cuda.Event(), cupy.cuda.Event()


def _time(v: Variant, steps: int, backend: Any) -> float:
    """Seconds per step: CUDA events around ``steps`` steps (perf_counter on the CPU)."""
    start, stop = _events(backend)
    v.sync()
    if start is None:
        t0 = time.perf_counter()
        for _ in range(steps):
            v.fn()
        v.sync()
        return (time.perf_counter() - t0) / steps
    with backend.device:
        start.record()
        for _ in range(steps):
            v.fn()
        stop.record()
        stop.synchronize()
    return backend.lib.cuda.get_elapsed_time(start, stop) / 1e3 / steps


def _launches(v: Variant, steps: int) -> dict[str, Any]:
    """Host launch calls and GPU kernels per step, as ``torch.profiler`` (CUPTI) sees them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            v.fn()
        v.sync()
    events = prof.events()
    calls = Counter(e.name for e in events if e.name in LAUNCH_CALLS)
    kernels = sum(1 for e in events if str(e.device_type).endswith("CUDA"))
    return {"launch_calls_per_step": sum(calls.values()) / steps,
            "by_call": {k: n / steps for k, n in calls.items()},
            "gpu_kernels_per_step": kernels / steps}


def _memory(v: Variant, backend: Any, steps: int) -> dict[str, Any]:
    stats = getattr(backend, "memory_stats", None)
    seen = {}
    for i in range(1, steps + 1):
        v.fn()
        if i in (10, 100, steps) and stats is not None:
            v.sync()
            seen[f"step_{i}"] = stats()["pool_used_bytes"]
    values = list(seen.values())
    return seen | {"flat": bool(values) and len(set(values[1:])) == 1}


def measure(backend: Any, args: argparse.Namespace, peak: float | None) -> dict[str, Any]:
    batches = (32, 64) if args.dry else (256, 4096, 16384)
    rounds, steps = (2, 3) if args.dry else (5, 20)
    out: dict[str, Any] = {"peak_tflops": peak, "cases": []}
    for optimizer in ("adam", "sgd"):
        for batch in batches:
            case = cases.StepCase(SIZES, batch, optimizer=optimizer,
                                  lr=1e-3 if optimizer == "adam" else 0.01)
            row: dict[str, Any] = {"optimizer": optimizer, "batch": batch}
            try:
                row |= _run_case(backend, case, rounds, steps, args, peak)
            except Exception as exc:  # noqa: BLE001 - record and go on
                row |= {"error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()}
            out["cases"].append(row)
            print(f"[cupy_speed] {optimizer} batch {batch}: "
                  f"{json.dumps({k: v for k, v in row.items() if k.startswith('ratio')})}",
                  flush=True)
    out["targets"] = targets(out)
    return out


def _run_case(backend: Any, case: Any, rounds: int, steps: int, args: argparse.Namespace,
              peak: float | None) -> dict[str, Any]:
    modes = ["mlcore-eager"]
    if core_compiles() and backend.name == "cupy":
        modes.append("mlcore")
    elif backend.name == "cupy" and case.optimizer == "sgd":
        modes.append("mlcore-graph")
    variants = [_mlcore(backend, case, m) for m in modes] + [_torch(backend, case)]
    row: dict[str, Any] = {"rel_error_vs_torch": _check(variants)}
    for v in variants:  # warm-up: compile, capture, fill the memory pool
        for _ in range(3):
            v.fn()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):  # interleaved: A B C, A B C, ...
        for v in variants:
            times[v.name].append(_time(v, steps, backend))
            time.sleep(0.05)
    if len(variants) == 3:  # the same steps on the same data: compiled weights are eager's
        row["compiled_vs_eager_max_abs"] = max(float(np.max(np.abs(a - b))) for a, b in zip(
            variants[0].params(), variants[1].params(), strict=True))
    ref = times[variants[-1].name]
    for v in variants:
        t = times[v.name]
        row[f"{v.name}_ms"] = float(np.median(t)) * 1e3
        if v is not variants[-1]:
            r = [a / b for a, b in zip(t, ref, strict=True)]
            row[f"ratio_{v.name}"] = {"median": float(np.median(r)), "min": min(r),
                                      "max": max(r)}
        if peak:
            row[f"{v.name}_gemm_share"] = gemm_flops(SIZES, case.batch) / min(t) / 1e12 / peak
        graph = getattr(v, "graph", None)
        if graph is not None:
            row[f"{v.name}_graph"] = {
                "replays": graph.replays, "eager_calls": graph.eager_calls,
                "fallback_reasons": list(graph.reasons.values()),
                "nodes_per_graph": [g.nodes() for g in graph.graphs.values()]}
    if backend.name == "cupy" and case.batch == 256:
        row["launches"] = {v.name: _launches(v, 10) for v in variants}
        row["memory"] = {v.name: _memory(v, backend, 100 if args.dry else 1000)
                         for v in variants[:-1]}
    return row


def _best(row: dict[str, Any]) -> str:
    """The variant the targets are judged on: the compiled step, else the directly captured
    one, else the eager one ("" when none was measured)."""
    return next((n for n in ("mlcore", "mlcore-graph", "mlcore-eager")
                 if f"ratio_{n}" in row), "")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and verdict (None: not measured), judged on the
    best variant a user gets (:func:`_best`)."""
    out = []
    rows = {(r["optimizer"], r["batch"]): r for r in result["cases"]}
    for r in result["cases"]:
        for name, err in r.get("rel_error_vs_torch", {}).items():
            out.append({"target": f"{name} computes torch's update, {r['optimizer']}, batch "
                        f"{r['batch']} (relative error)", "limit": "<= 1e-4", "value": err,
                        "passed": err <= 1e-4})
    for optimizer in ("adam", "sgd"):
        for batch, limit in TARGETS:
            r = rows.get((optimizer, batch), {})
            name = _best(r)
            if name:
                ratio = r[f"ratio_{name}"]["median"]
                out.append({"target": f"{name} / torch-cuda, {optimizer}, batch {batch}",
                            "limit": f"<= {limit}", "value": ratio, "passed": ratio <= limit})
        r = rows.get((optimizer, 16384), {})
        name = _best(r)
        share = r.get(f"{name}_gemm_share") if name else None
        if share is not None:
            out.append({"target": f"{name} GEMM share of the cuBLAS peak, {optimizer}, "
                        f"batch 16384", "limit": ">= 0.5", "value": share,
                        "passed": share >= 0.5})
        for name, mem in rows.get((optimizer, 256), {}).get("memory", {}).items():
            out.append({"target": f"{name} memory pool flat over 1000 steps, {optimizer}",
                        "limit": "equal", "value": mem, "passed": mem.get("flat")})
    return out


def summary_lines(path: Path) -> list[str]:
    """Markdown lines for the GPU check's summary from ``speed.json``."""
    if not path.exists():
        return ["speed: no speed.json"]
    r = json.loads(path.read_text())
    lines = ["", "| optimiser | batch | variant | ms | / torch-cuda (median, min-max) | "
             "GEMM share | launch calls / kernels per step |", "|---|---|---|---|---|---|---|"]
    for row in r.get("cases", []):
        if "error" in row:
            lines.append(f"| {row['optimizer']} | {row['batch']} | error: {row['error']} |")
            continue
        for name in ("mlcore-eager", "mlcore", "mlcore-graph", "torch-cuda", "torch-cpu"):
            if f"{name}_ms" not in row:
                continue
            ratio = row.get(f"ratio_{name}")
            text = (f"{ratio['median']:.3g} ({ratio['min']:.3g}-{ratio['max']:.3g})" if ratio
                    else "1")
            share = row.get(f"{name}_gemm_share")
            launches = row.get("launches", {}).get(name)
            counts = ""
            if launches:  # no call seen beside kernels: launched through an API not traced
                calls = launches["launch_calls_per_step"]
                shown = "n/a" if calls == 0 and launches["gpu_kernels_per_step"] else f"{calls:.0f}"
                counts = f"{shown} / {launches['gpu_kernels_per_step']:.0f}"
            lines.append(f"| {row['optimizer']} | {row['batch']} | {name} | "
                         f"{row[f'{name}_ms']:.3g} | {text} | "
                         f"{'' if share is None else f'{share:.1%}'} | {counts} |")
    lines.append("")
    for row in r.get("cases", []):
        for key, g in row.items():
            if key.endswith("_graph"):
                nodes = ", ".join(f"{n} {k}" for k, n in sorted(
                    (g["nodes_per_graph"] or [{}])[0].items())) or "nodes not readable"
                reasons = g["fallback_reasons"]
                why = "; eager: " + "; ".join(reasons) if reasons else ""
                lines.append(f"- {row['optimizer']} batch {row['batch']} {key[:-6]}: "
                             f"{g['replays']} replays, {g['eager_calls']} eager calls, one "
                             f"graph launch standing for {nodes}{why}")
    for t in r.get("targets", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["passed"]]
        value = t["value"] if isinstance(t["value"], dict) else f"{t['value']:.3g}"
        lines.append(f"- {verdict} {t['target']}: {value} (target {t['limit']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("speed.json"))
    parser.add_argument("--dry", action="store_true", help="numpy and PyTorch CPU, small")
    parser.add_argument("--peak", type=float, default=None,
                        help="cuBLAS float32 peak in TFLOP/s (default: from checks.json "
                        "beside --out)")
    args = parser.parse_args()
    backend = mlcore.get_backend("numpy" if args.dry else "cupy")
    peak = args.peak
    checks = args.out.parent / "checks.json"
    if peak is None and checks.exists():
        peak = json.loads(checks.read_text()).get("gemm_peak", {}).get("peak_tflops")
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backend": backend.name,
              **measure(backend, args, peak)}
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print("\n".join(summary_lines(args.out)))
    failed = [t for t in result["targets"] if t["passed"] is False]
    errors = [c for c in result["cases"] if "error" in c]
    sys.exit(1 if errors or (failed and not args.dry) else 0)


if __name__ == "__main__":
    main()
