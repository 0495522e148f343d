"""Learning curves: :func:`plot_history` draws what ``fit`` returned, or a CSVLogger file.

One panel per quantity (``loss`` first, then every metric), the training values and their
``val_`` twins on the same axes, against the epoch (counted from 1); with ``best_epoch``
(an int, or the :class:`~mlcore.callbacks.EarlyStopping` that restored its best weights) a
dashed line marks the epoch whose weights the model kept. Needs matplotlib, the ``[plot]``
extra (``pip install 'mlcore[plot]'``), imported only when a plot is drawn.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from .errors import InvalidParameterError

__all__ = ["plot_history", "read_history"]


def read_history(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """The history a :class:`~mlcore.callbacks.CSVLogger` wrote to ``path`` (its ``epoch``
    column dropped; blank cells, from columns a resumed run added, become NaN)."""
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.DictReader(f, dialect=dialect))
    if not rows:
        raise InvalidParameterError(
            f"{os.fspath(path)!r} holds no epoch rows; expected a file written by "
            f"mlcore.callbacks.CSVLogger (a header, then one row per epoch).", path)
    keys = [k for k in rows[0] if k != "epoch"]
    return {k: [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows]
            for k in keys}


def plot_history(history: Any, path: str | os.PathLike[str] | None = None, *,
                 best_epoch: Any = None, title: str | None = None) -> Any:
    """Draw the learning curves of ``history`` (``fit``'s return value, or the path of a
    CSVLogger file); save the figure to ``path`` when given; return the matplotlib Figure.

    ``best_epoch``: the epoch index (from 0, as callbacks count) whose weights were kept,
    or an :class:`~mlcore.callbacks.EarlyStopping` with ``restore_best_weights=True``.
    """
    if isinstance(history, (str, os.PathLike)):
        history = read_history(history)
    if not isinstance(history, dict) or "loss" not in history:
        raise InvalidParameterError(
            f"plot_history takes the dict fit returns (with a 'loss' list) or the path of a "
            f"CSVLogger file; received {type(history).__name__}.", history)
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_")]
    names.sort(key=lambda k: k != "loss")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    best = _best_epoch(best_epoch)
    for ax, name in zip(axes[0], names, strict=True):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                values = list(history[key])
                ax.plot(range(1, len(values) + 1), values, style, label=key)
        if best is not None:
            ax.axvline(best + 1, color="grey", linestyle=":", label=f"kept (epoch {best + 1})")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _best_epoch(best_epoch: Any) -> int | None:
    if best_epoch is None or (isinstance(best_epoch, int) and not isinstance(best_epoch, bool)):
        return best_epoch
    if hasattr(best_epoch, "best_epoch") and hasattr(best_epoch, "restore_best_weights"):
        return int(best_epoch.best_epoch) if best_epoch.restore_best_weights else None
    raise InvalidParameterError(
        f"best_epoch must be an epoch index or an EarlyStopping callback; received "
        f"{best_epoch!r}.", best_epoch)


def _pyplot() -> Any:
    try:
        import matplotlib

        if not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plot_history needs matplotlib, the [plot] extra: pip install 'mlcore[plot]' "
            "(or pip install matplotlib).") from err
    return plt
