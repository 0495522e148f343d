"""``--plot PATH``: two charts of the training-step cases (matplotlib, Agg).

``PATH``: time per step against batch size, one panel per network (a row per dtype), one
colour per competitor, the optimiser by line style and marker. ``PATH`` with ``-ratios``
before the suffix: each mlcore backend's time divided by each reference's (and by the
``numpy`` backend's), median with the min-max over rounds, against a line at 1.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot", "ratios_path"]

_STYLES = {"adam": ("-", "o"), "sgd": ("--", "s")}
_NAMES = {"784-512-512-10": "784-512-512-10 (MNIST-sized MLP)", "2-4-1": "2-4-1 (XOR)"}


def ratios_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-ratios{p.suffix}")


def _steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in report["results"] if e["group"] == "mlp_step"]


def _net(e: dict[str, Any]) -> str:
    return "-".join(map(str, e["params"]["sizes"]))


def _style(opt: str) -> tuple[str, str]:
    return _STYLES.get(opt, (":", "^"))


def _colors(report: dict[str, Any]) -> dict[str, str]:
    """One colour per competitor that ran, the same in both charts."""
    labels = [c["label"] for c in report["competitors"] if c["available"]]
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def _legend(fig: Any, colors: dict[str, str], opts: list[str], used: set[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="-", label=label)
               for label, c in colors.items() if label in used]
    handles += [Line2D([], [], color="0.3", linestyle=_style(o)[0], marker=_style(o)[1],
                       label=o) for o in opts]
    width = fig.get_figwidth()
    per_row = max(1, min(len(handles), int(width / 1.35)))
    fig.legend(handles=handles, loc="outside lower center", ncol=per_row, frameon=False)


def _time_panel(ax: Any, entries: list[dict[str, Any]], colors: dict[str, str]) -> set[str]:
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    used: set[str] = set()
    for opt in sorted({e["params"]["optimizer"] for e in entries}):
        line, marker = _style(opt)
        mine = sorted((e for e in entries if e["params"]["optimizer"] == opt),
                      key=lambda e: e["batch"])
        for k, (label, color) in enumerate(colors.items()):
            pts = [(e["batch"], e["rows"][label]) for e in mine
                   if e["rows"].get(label, {}).get("status") == "ok"]
            if not pts:
                continue
            used.add(label)
            shift = 1.04 ** (k - (len(colors) - 1) / 2)  # markers side by side, not on top
            ys = [r["median_s"] * 1e3 for _, r in pts]
            err = [[(r["median_s"] - r["q1_s"]) * 1e3 for _, r in pts],
                   [(r["q3_s"] - r["median_s"]) * 1e3 for _, r in pts]]
            ax.errorbar([b * shift for b, _ in pts], ys, yerr=err, color=color,
                        linestyle=line, marker=marker, markersize=5, capsize=2)
    batches = sorted({e["batch"] for e in entries})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlim(batches[0] / 1.6, batches[-1] * 1.6)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)
    return used


def plot_times(report: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    steps, colors = _steps(report), _colors(report)
    nets = list(dict.fromkeys(_net(e) for e in steps)) or ["(no training-step case)"]
    dtypes = [d for d in report["dtypes"] if any(e["dtype"] == d for e in steps)] or ["-"]
    fig, axes = plt.subplots(len(dtypes), len(nets), squeeze=False, layout="constrained",
                             figsize=(max(7.0, 5.2 * len(nets)), 3.4 * len(dtypes) + 1.0))
    used: set[str] = set()
    for row, dtype in zip(axes, dtypes, strict=True):
        for ax, net in zip(row, nets, strict=True):
            mine = [e for e in steps if _net(e) == net and e["dtype"] == dtype]
            ax.set_title(f"{_NAMES.get(net, net)}, {dtype}")
            if not mine:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
                continue
            used |= _time_panel(ax, mine, colors)
            ax.set_xlabel("batch size")
        row[0].set_ylabel("ms per training step")
    opts = sorted({e["params"]["optimizer"] for e in steps})
    _legend(fig, colors, opts, used)
    fig.suptitle("Time per training step: median, bars the interquartile range (lower is "
                 "faster)", fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ratio_rows(report: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The dtype shown (float32 when run) and its (row label, entry) pairs, in case order."""
    steps = _steps(report)
    dtype = "float32" if any(e["dtype"] == "float32" for e in steps) else (
        steps[0]["dtype"] if steps else "-")
    rows = [(f"{_net(e)} {e['params']['optimizer']}, batch {e['batch']}", e)
            for e in sorted((e for e in steps if e["dtype"] == dtype),
                            key=lambda e: (-e["params"]["sizes"][0], e["params"]["optimizer"],
                                           e["batch"]))]
    return dtype, rows


def _panels(report: dict[str, Any]) -> list[tuple[str, set[str]]]:
    """(title, reference labels): one per reference family, then the numpy backend."""
    out: dict[str, set[str]] = {}
    for c in report["competitors"]:
        if c["kind"] == "reference" and c["available"]:
            out.setdefault(c.get("family") or c["label"], set()).add(c["label"])
    panels = [(f"÷ {family}", labels) for family, labels in out.items()]
    return [*panels, ("÷ mlcore numpy backend", {"numpy"})]


def _ratio_axis(ax: Any, ratios: list[dict[str, Any]]) -> None:
    """A log axis that always shows 1.0, labelled 0.5, 1, 2, 5 rather than 10^x."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    lo = min([0.7, *(r["min"] / 1.25 for r in ratios)])
    hi = max([1.4, *(r["max"] * 1.25 for r in ratios)])
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    wide = hi / lo > 200  # over two decades: 1-2-5 labels would run into each other
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_ratios(report: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    dtype, rows = _ratio_rows(report)
    colors = _colors(report)
    panels = [(t, labels) for t, labels in _panels(report)
              if any(r["b"] in labels for _, e in rows for r in e["ratios"])] or [("-", set())]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=True, layout="constrained",
                             figsize=(4.4 * len(panels) + 1.6, 0.42 * max(len(rows), 2) + 1.9))
    used: set[str] = set()
    for ax, (title, labels) in zip(axes[0], panels, strict=True):
        mlcore = [c for c in colors if any(r["a"] == c for _, e in rows for r in e["ratios"])]
        for k, label in enumerate(mlcore):
            offset = (k - (len(mlcore) - 1) / 2) * 0.18
            for y, (_, e) in enumerate(rows):
                r = next((r for r in e["ratios"] if r["a"] == label and r["b"] in labels), None)
                if r is None:
                    continue
                used.add(label)
                ax.errorbar([r["median"]], [y + offset], color=colors[label], marker="o",
                            xerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]],
                            capsize=2, markersize=5)
        ax.axvline(1.0, color="black", linewidth=1)
        _ratio_axis(ax, [r for _, e in rows for r in e["ratios"] if r["b"] in labels])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(title)
        ax.set_xlabel("time ratio (below 1: mlcore faster)")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [name for name, _ in rows])
    _legend(fig, colors, [], used)
    fig.suptitle(f"mlcore's training step time ÷ each reference's, {dtype}: median, bars the "
                 f"min-max over rounds", fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(report: dict[str, Any], path: str | Path) -> list[Path]:
    """Write both charts (the format follows the suffix); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(path)
    return [plot_times(report, out), plot_ratios(report, ratios_path(out))]
