"""``--plot PATH``: time per training step against batch size, one line per competitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cases import MNIST_SIZES

__all__ = ["plot"]

_NET = "-".join(map(str, MNIST_SIZES))


def _is_net(e: dict[str, Any]) -> bool:
    return e["group"] == "mlp_step" and tuple(e["params"]["sizes"]) == MNIST_SIZES


def _series(report: dict[str, Any], dtype: str, optimizer: str) -> dict[str, list[tuple[
        int, float, float, float]]]:
    """label -> [(batch, median, q1, q3)] for the 784-512-512-10 step."""
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for e in report["results"]:
        if not _is_net(e) or (e["dtype"], e["params"]["optimizer"]) != (dtype, optimizer):
            continue
        for label, row in e["rows"].items():
            if row["status"] == "ok":
                out.setdefault(label, []).append(
                    (e["batch"], row["median_s"], row["q1_s"], row["q3_s"]))
    return {k: sorted(v) for k, v in out.items()}


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Write a small PNG (or any format matplotlib infers from the suffix); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    dtypes = report["dtypes"]
    optimizers = sorted({e["params"]["optimizer"] for e in report["results"] if _is_net(e)})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.2 * len(dtypes), 3.4), squeeze=False,
                             sharey=True)
    colors: dict[str, str] = {}
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        if not optimizers:
            ax.text(0.5, 0.5, f"no {_NET} training-step case\nin this run", ha="center",
                    va="center", transform=ax.transAxes)
        for opt, style in zip(optimizers, ("-", "--", ":"), strict=False):
            for label, pts in _series(report, dtype, opt).items():
                color = colors.setdefault(label, f"C{len(colors)}")
                xs = [p[0] for p in pts]
                ys = [p[1] * 1e3 for p in pts]
                err = [[(p[1] - p[2]) * 1e3 for p in pts], [(p[3] - p[1]) * 1e3 for p in pts]]
                ax.errorbar(xs, ys, yerr=err, linestyle=style, marker="o", markersize=3,
                            capsize=2, color=color, label=f"{label} ({opt})")
        ax.set(xscale="log", yscale="log", xlabel="batch size", title=f"{_NET}, {dtype}")
        batches = sorted({p[0] for pts in _series(report, dtype, optimizers[0]).values()
                          for p in pts}) if optimizers else []
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time per training step (ms)")
    if optimizers:
        axes[0][-1].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
