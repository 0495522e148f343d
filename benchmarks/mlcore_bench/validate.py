"""Every option of ``mlcore bench`` checked before anything runs: a bad one is a ValueError
whose message names the option, what it got, and the choices or the fix."""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import bench_mlcore
from .bench_reference import REFERENCES

if TYPE_CHECKING:
    from .runner import Options

__all__ = ["check_options", "check_backends", "check_output"]


def check_options(opts: Options, json_path: str | None, plot_path: str | None) -> None:
    """Raise ValueError for an unknown or unusable ``--backend``, ``--cases`` that match
    nothing, or an output path that cannot be written."""
    from .runner import case_list

    check_backends(opts.backends)
    case_list(opts)
    if json_path:
        check_output("--json", json_path)
    if plot_path:
        check_output("--plot", plot_path)
        _check_plot(plot_path)


def check_backends(wanted: list[str]) -> None:
    import mlcore

    refs = {r.label: r for r in REFERENCES}
    choices = [*mlcore.backend_names(), *refs]
    for name in wanted:
        if name not in choices:
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown --backend {name!r}.{hint} Choices: "
                             f"{', '.join(choices)}.")
        reason = refs[name].reason() if name in refs else bench_mlcore.status(name)
        if reason:
            raise ValueError(f"--backend {name} cannot run here: {reason}")


def check_output(flag: str, path: str) -> None:
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name inside it.")
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: the folder {str(folder)!r} does not exist. "
                         f"Create it first, or choose another path.")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"{flag} {path} cannot be written here (permission denied). "
                         f"Choose another path.")


def _check_plot(path: str) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib, which is not installed. Install it with: "
                         "pip install 'mlcore-bench[plot]'.")
    from matplotlib.figure import Figure

    kinds = sorted(Figure().canvas.get_supported_filetypes())
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in kinds:
        what = f"{suffix!r} files" if suffix else "a file without a suffix"
        raise ValueError(f"--plot {path}: matplotlib cannot write {what}. Use one of: "
                         f"{', '.join('.' + k for k in kinds)}.")
