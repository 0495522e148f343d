"""The GPU check's own measurements (issue 7), written to one JSON file.

    python3 benchmarks/gpu/gpu_checks.py --backend cupy --out OUT/checks.json
    python3 benchmarks/gpu/gpu_checks.py --summary OUT       # OUT/summary.md from the JSON

Checks, each recorded even when another fails (the file is rewritten after each):

``environment``  versions of CuPy, CUDA, PyTorch, array-api-compat; the GPU's name.
``same_seed``    ``MLP(784-512-512-10, seed=123)`` has bit-identical weights on NumPy.
``save_load``    a model trained on the backend, saved, loaded on NumPy (same weights bit for
                 bit, same predictions within float32 rounding), saved again and loaded back
                 on the backend (same weights, same predictions).
``memory``       100 training steps: the memory pool's used bytes after step 10 equal those
                 after step 100 (nothing grows from step to step), and so after fit epochs.
``gemm_peak``    float32 matrix product 8192³ (CuPy and PyTorch, CUDA events): the measured
                 cuBLAS peak, TF32 off as both libraries default.
``mlp_step``     784-512-512-10 training step (Adam, cross-entropy from logits, float32) at
                 batch 256 and 4096 against PyTorch CUDA, through the benchmark runner
                 (same weights and data, results checked equal, interleaved rounds); the
                 achieved FLOP/s of the step's matrix products as a fraction of the peak.

``--backend numpy`` (with ``--quick``) runs the same code on the CPU, against PyTorch CPU, so
the script itself can be tested on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's mlcore, even when another is installed

import mlcore  # noqa: E402
from mlcore.saving.io import load  # noqa: E402

SIZES = (784, 512, 512, 10)
Check = Callable[[Any, argparse.Namespace], dict[str, Any]]


# -- helpers -----------------------------------------------------------------------------
def _torch(backend: Any) -> tuple[Any, str]:
    import torch

    on_gpu = backend.name == "cupy"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("PyTorch sees no CUDA device")
    return torch, "cuda" if on_gpu else "cpu"


def _data(n: int, features: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, features)).astype(np.float32), rng.integers(0, classes, n)


def _weights(model: Any, backend: Any) -> dict[str, np.ndarray]:
    return {k: backend.to_numpy(v) for k, v in model.state_dict().items()}


def _same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _pool(backend: Any) -> dict[str, int]:
    """Device memory pool bytes (host bytes traced by tracemalloc on a CPU backend).

    ``used`` as the loop leaves it, ``used_after_gc`` once reference cycles are collected.
    """
    import gc
    import tracemalloc

    stats = getattr(backend, "memory_stats", None)

    def read() -> tuple[int, int]:
        if stats is None:
            return tracemalloc.get_traced_memory()[0], 0
        backend.synchronize()
        s = stats()
        return s["pool_used_bytes"], s["pool_held_bytes"]

    used, held = read()
    gc.collect()
    return {"used": used, "held": held, "used_after_gc": read()[0]}


# -- the checks --------------------------------------------------------------------------
def environment(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    import array_api_compat

    env: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__,
                           "array_api_compat": array_api_compat.__version__,
                           "mlcore": mlcore.__version__, "backend": backend.name,
                           "device": str(backend.device), "ok": True}
    if backend.name == "cupy":
        cupy = backend.lib
        rt = cupy.cuda.runtime
        env |= {"cupy": cupy.__version__, "cuda_runtime": rt.runtimeGetVersion(),
                "cuda_driver": rt.driverGetVersion(), "gpu": backend._device_name(),
                "memory": backend.memory_info()}
    try:
        torch, dev = _torch(backend)
        env |= {"torch": torch.__version__, "torch_device": dev,
                "torch_gpu": torch.cuda.get_device_name(0) if dev == "cuda" else ""}
    except Exception as exc:  # noqa: BLE001 - PyTorch is a comparison only
        env["torch"] = f"unavailable: {exc}"
    return env


def same_seed(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The same seed gives the same initial weights as on NumPy, bit for bit."""
    def weights(name: str) -> dict[str, np.ndarray]:
        with mlcore.use_backend(name):
            model = mlcore.MLP(list(SIZES), seed=123)
        return _weights(model, mlcore.get_backend(name))

    mine, ref = weights(backend.name), weights("numpy")
    differ = [k for k in ref if not np.array_equal(mine.get(k), ref[k])]
    return {"parameters": len(ref), "differ": differ, "ok": not differ}


def save_load(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    X, y = _data(512, 64, 10)
    tmp = Path(tempfile.mkdtemp())
    with mlcore.use_backend(backend.name):
        model = mlcore.MLP([64, 32, 10], output_activation="softmax", seed=0)
        history = model.fit(X, y, loss="cross_entropy", epochs=3, batch_size=64, seed=0,
                            verbose=False)
        pred = backend.to_numpy(model.predict(X))
        trained = _weights(model, backend)
        model.save(tmp / "on-backend.safetensors")
    host_model = load(tmp / "on-backend.safetensors", backend="numpy")
    host_pred = np.asarray(host_model.predict(X))
    host_model.save(tmp / "on-numpy.safetensors")
    back = load(tmp / "on-numpy.safetensors", backend=backend.name)
    back_pred = backend.to_numpy(back.predict(X))
    diff = float(np.max(np.abs(host_pred - pred)))
    return {
        "loss_history": [float(v) for v in history["loss"]],
        "weights_equal_on_numpy": _same_weights(trained, _weights(host_model, mlcore.get_backend(
            "numpy"))),
        "weights_equal_back_on_backend": _same_weights(trained, _weights(back, backend)),
        "max_abs_pred_diff_numpy": diff,
        "argmax_agree_numpy": float(np.mean(host_pred.argmax(1) == pred.argmax(1))),
        "pred_equal_back_on_backend": bool(np.array_equal(back_pred, pred)),
        "ok": bool(_same_weights(trained, _weights(back, backend)) and diff < 1e-4
                   and np.allclose(back_pred, pred, rtol=0, atol=1e-6)),
    }


def memory(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    import tracemalloc

    from mlcore.training.fit import make_train_step

    batch = 256
    X, y = _data(batch * 4, SIZES[0], SIZES[-1])
    if not hasattr(backend, "memory_stats"):
        tracemalloc.start()
    try:
        with mlcore.use_backend(backend.name):
            model = mlcore.MLP(list(SIZES), output_activation="softmax", seed=0)
            step = make_train_step(model, "cross_entropy", "adam", lr=1e-3)
            Xb, yb = backend.asarray(X[:batch]), backend.asarray(y[:batch])
            seen: dict[str, dict[str, int]] = {}
            for i in range(1, 101):
                step(Xb, yb)
                if i in (10, 100):
                    seen[f"step_{i}"] = _pool(backend)
            for epoch in range(1, 6):
                model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=1,
                          batch_size=batch, verbose=False)
                if epoch in (2, 5):
                    seen[f"fit_epoch_{epoch}"] = _pool(backend)
    finally:
        tracemalloc.stop()
    steps_flat = seen["step_10"]["used"] == seen["step_100"]["used"]
    fit_flat = seen["fit_epoch_2"]["used"] == seen["fit_epoch_5"]["used"]
    held_flat = seen["step_100"]["held"] <= seen["step_10"]["held"]
    return seen | {"used_flat_steps": steps_flat, "used_flat_fit": fit_flat,
                   "held_flat_steps": held_flat,
                   "ok": bool(steps_flat and fit_flat) or backend.name != "cupy"}


def _cupy_matmul_tflops(cupy: Any, n: int, reps: int) -> float:
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    for _ in range(3):
        a @ b
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        a @ b
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3
    return 2 * n**3 * reps / seconds / 1e12


def _torch_matmul_tflops(torch: Any, dev: str, n: int, reps: int) -> float:
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def gemm_peak(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    n, reps = (1024, 3) if args.quick else (8192, 20)
    out: dict[str, Any] = {"n": n, "reps": reps, "dtype": "float32"}
    if backend.name == "cupy":
        import os

        with backend.device:
            out["cupy_tflops"] = _cupy_matmul_tflops(backend.lib, n, reps)
        out["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
    try:
        torch, dev = _torch(backend)
        out["torch_tflops"] = _torch_matmul_tflops(torch, dev, n, reps)
        out["torch_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception as exc:  # noqa: BLE001
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    out["peak_tflops"] = out.get("cupy_tflops", out.get("torch_tflops"))
    out["ok"] = out["peak_tflops"] is not None
    return out


def gemm_flops(sizes: tuple[int, ...], batch: int) -> int:
    """FLOPs of one step's matrix products: forward X Wᵀ (eq. 1.5), backward dW and dX.

    The first layer's dX is not needed (the input has no gradient), in mlcore as in PyTorch.
    """
    pairs = list(itertools.pairwise(sizes))
    macs = sum(3 * i * o for i, o in pairs) - pairs[0][0] * pairs[0][1]
    return 2 * batch * macs


def mlp_step(backend: Any, args: argparse.Namespace, peak: float | None) -> dict[str, Any]:
    from mlcore_bench import cases, runner

    torch_label = "torch-cuda" if backend.name == "cupy" else "torch-cpu"
    comps = runner.competitors([backend.name, torch_label])
    opts = runner.Options(quick=args.quick, backends=[backend.name, torch_label],
                          dtypes=["float32"], rounds=2 if args.quick else 5)
    batches = (32, 256) if args.quick else (256, 4096)
    out: dict[str, Any] = {"sizes": list(SIZES), "dtype": "float32", "optimizer": "adam",
                           "peak_tflops": peak, "batches": {}}
    for batch in batches:
        entry = runner.run_case(cases.StepCase(SIZES, batch), "float32", comps, opts)
        flops = gemm_flops(SIZES, batch)
        row: dict[str, Any] = {"check": entry["check"], "rows": entry["rows"],
                               "gemm_flops": flops}
        for label, r in entry["rows"].items():
            if r.get("status") == "ok":
                achieved = flops / r["median_s"] / 1e12
                row[f"{label}_ms"] = r["median_s"] * 1e3
                row[f"{label}_gemm_tflops"] = achieved
                row[f"{label}_fraction_of_peak"] = achieved / peak if peak else None
        for rat in entry["ratios"]:
            if rat["a"] == backend.name and rat["b"] == torch_label:
                row["ratio_to_torch"] = {k: rat[k] for k in ("median", "min", "max")}
        out["batches"][str(batch)] = row
    out["ok"] = all(r["check"]["passed"] and "ratio_to_torch" in r
                    for r in out["batches"].values())
    return out


# -- running and reporting ---------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    backend = mlcore.get_backend(args.backend)
    report: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    checks: list[tuple[str, Check]] = [
        ("environment", environment), ("same_seed", same_seed), ("save_load", save_load),
        ("memory", memory),
        ("gemm_peak", gemm_peak),
        ("mlp_step", lambda b, a: mlp_step(b, a, report.get("gemm_peak", {}).get(
            "peak_tflops"))),
    ]
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            report[name] = fn(backend, args)
        except Exception as exc:  # noqa: BLE001 - record it and go on to the next check
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc()}
        report[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu_checks] {name}: {'ok' if report[name]['ok'] else 'FAILED'} "
              f"({report[name]['seconds']} s)", flush=True)
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if all(report[n]["ok"] for n, _ in checks) else 1


def _fmt(x: Any, spec: str = ".3g") -> str:
    return format(x, spec) if isinstance(x, int | float) else "n/a"


def summary(folder: Path) -> str:
    """Markdown of the figures the issue asks for, from checks.json (and bench.json)."""
    r = json.loads((folder / "checks.json").read_text())
    env, peak = r.get("environment", {}), r.get("gemm_peak", {})
    lines = [f"# GPU check {r.get('created', '')}", "",
             f"- GPU: {env.get('gpu', env.get('device'))}; CuPy {env.get('cupy')}, CUDA "
             f"runtime {env.get('cuda_runtime')}, driver {env.get('cuda_driver')}; PyTorch "
             f"{env.get('torch')}; NumPy {env.get('numpy')}",
             f"- measured float32 GEMM peak (n={peak.get('n')}): CuPy "
             f"{_fmt(peak.get('cupy_tflops'))} TFLOP/s, PyTorch "
             f"{_fmt(peak.get('torch_tflops'))} TFLOP/s"]
    sl, mem, seed = r.get("save_load", {}), r.get("memory", {}), r.get("same_seed", {})
    lines.append(f"- same seed, same initial weights as NumPy: "
                 f"{'yes' if seed.get('ok') else 'NO ' + str(seed.get('differ'))}")
    lines.append(f"- save/load across backends: {'ok' if sl.get('ok') else 'FAILED'} "
                 f"(max |pred diff| on numpy {_fmt(sl.get('max_abs_pred_diff_numpy'))})")
    flat = mem.get("used_flat_steps") and mem.get("used_flat_fit")
    lines.append(f"- memory pool used after step 10 / 100: {mem.get('step_10', {}).get('used')}"
                 f" / {mem.get('step_100', {}).get('used')} bytes; after fit epoch 2 / 5: "
                 f"{mem.get('fit_epoch_2', {}).get('used')} / "
                 f"{mem.get('fit_epoch_5', {}).get('used')} -> "
                 f"{'equal' if flat else 'DIFFER'}"
                 f"{'' if env.get('backend') == 'cupy' else ' (host bytes, informational)'}")
    lines += ["", "| batch | mlcore ms | torch ms | ratio (median, min-max) | "
              "mlcore GEMM TFLOP/s | fraction of peak | check |", "|---|---|---|---|---|---|---|"]
    step = r.get("mlp_step", {})
    torch_label = "torch-cuda" if env.get("backend") == "cupy" else "torch-cpu"
    for batch, row in step.get("batches", {}).items():
        ratio = row.get("ratio_to_torch", {})
        b = env.get("backend")
        lines.append(
            f"| {batch} | {_fmt(row.get(f'{b}_ms'))} | {_fmt(row.get(f'{torch_label}_ms'))} | "
            f"{_fmt(ratio.get('median'))} ({_fmt(ratio.get('min'))}-{_fmt(ratio.get('max'))}) "
            f"| {_fmt(row.get(f'{b}_gemm_tflops'))} | "
            f"{_fmt(row.get(f'{b}_fraction_of_peak'), '.1%')} | "
            f"{'ok' if row.get('check', {}).get('passed') else 'FAILED'} |")
    failed = [k for k, v in r.items() if isinstance(v, dict) and v.get("ok") is False]
    lines += ["", f"failed checks: {', '.join(failed) or 'none'}"]
    from cupy_speed import summary_lines

    lines += summary_lines(folder / "speed.json")
    lines += _tests_line(folder / "junit.xml") + _bench_lines(folder / "bench.json")
    return "\n".join(lines) + "\n"


def _tests_line(path: Path) -> list[str]:
    if not path.exists():
        return ["tests: no junit.xml"]
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    a = suite.attrib if suite is not None else {}
    bad = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
           if c.find("failure") is not None or c.find("error") is not None]
    return [f"tests: {a.get('tests')} run, {a.get('failures')} failed, {a.get('errors')} "
            f"errors, {a.get('skipped')} skipped in {a.get('time')} s"] + [
            f"  - {b}" for b in bad[:25]]


def _bench_lines(path: Path) -> list[str]:
    if not path.exists():
        return ["bench: no bench.json"]
    report = json.loads(path.read_text())
    lines = [f"bench ({'quick' if report.get('quick') else 'full'}, "
             f"{report.get('elapsed_s', 0):.0f} s): {len(report.get('results', []))} cases"]
    for res in report.get("results", []):
        for rat in res.get("ratios", []) if res.get("group") in ("mlp_step", "dense") else []:
            if rat["b"].startswith("torch"):
                lines.append(f"  - {res['case']} batch {res['batch']} {res['dtype']}: "
                             f"{rat['a']} / {rat['b']} = {rat['median']:.3g}")
    return lines + [f"  - {r}" for r in report.get("recommendations", [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cupy")
    parser.add_argument("--out", type=Path, default=Path("checks.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU dry run)")
    parser.add_argument("--summary", type=Path, metavar="FOLDER",
                        help="write FOLDER/summary.md from FOLDER/checks.json and print it")
    args = parser.parse_args()
    if args.summary:
        text = summary(args.summary)
        (args.summary / "summary.md").write_text(text)
        print(text)
        return
    sys.exit(run(args))


if __name__ == "__main__":
    main()
