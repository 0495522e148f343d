"""What a benchmark result depends on: machine, library versions, BLAS, threads, commit."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "git_commit", "blas_info", "cpu_model"]

_DISTRIBUTIONS = ("mlcore", "mlcore-bench", "mlcore-numpy", "mlcore-strict", "mlcore-cupy", "numpy",
                  "array-api-compat", "array-api-strict", "torch", "cupy", "matplotlib",
                  "threadpoolctl", "scikit-learn", "numba")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Installed versions of the libraries that matter here (absent ones left out)."""
    found = {d: _version(d) for d in _DISTRIBUTIONS}
    found |= {d: v for d in ("cupy-cuda12x", "cupy-cuda13x") if (v := _version(d))}
    return {d: v for d, v in found.items() if v}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def git_commit() -> dict[str, Any]:
    """The commit of the source checkout mlcore runs from (an editable install), and whether
    it had edits; None when mlcore is installed from a wheel."""
    import mlcore

    root = Path(mlcore.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != root:  # site-packages inside some repository
            return {"commit": None, "dirty": False}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or None, "dirty": dirty}


def blas_info() -> list[dict[str, Any]]:
    """Every native thread pool (BLAS, OpenMP) loaded now, via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed (pip install mlcore-bench)"}]
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "threading_layer", "architecture")
    return [{k: pool.get(k) for k in keep if k in pool} for pool in threadpool_info()]


def backend_kernels() -> dict[str, str]:
    """Each available backend's ``kernel_info()`` line (NumPy: whether BLAS serves the
    SGD update), so a report says which code paths it timed."""
    try:
        from mlcore.backend import backend_status, optional_members
        from mlcore.plugins import registry
    except ImportError:
        return {}
    out = {}
    for name, b in sorted(registry().backends.items()):
        fn = optional_members(b).kernel_info
        if fn is not None and backend_status(b).state == "available":
            out[name] = str(fn())
    return out


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def machine_info() -> dict[str, Any]:
    """Everything the JSON output records about where and with what it ran."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "load_average": load_average(),
        "versions": versions(),
        "thread_pools": blas_info(),
        "kernels": backend_kernels(),
        "torch_threads": _torch_threads(),
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.endswith("_NUM_THREADS") or k.startswith("MLCORE_")},
        **git_commit(),
    }
