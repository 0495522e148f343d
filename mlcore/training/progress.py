"""Progress display for ``fit``: a tqdm bar, one line per epoch, or nothing."""

from __future__ import annotations

import sys
from typing import Any

from ..errors import InvalidParameterError

__all__ = ["progress", "check_verbose"]


class _Quiet:
    """A progress bar that shows nothing."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, stats: dict[str, float]) -> None:
        return None


class _Lines(_Quiet):
    """Progress as one line per epoch on stderr (``verbose=2``, Keras' one line per epoch
    for logs and CI; or when tqdm is not installed)."""

    epoch = 0

    def set_postfix(self, stats: dict[str, float]) -> None:
        self.epoch += 1
        text = " ".join(f"{k}={v:.4f}" for k, v in stats.items())
        print(f"epoch {self.epoch}: {text}", file=sys.stderr)


def check_verbose(verbose: object) -> None:
    """``fit``'s ``verbose`` must be True, False (or 0, 1), ``"auto"`` or 2."""
    if not isinstance(verbose, bool) and verbose not in (0, 1, 2, "auto"):
        raise InvalidParameterError(
            f"verbose must be True, False, 'auto' or 2 (one line per epoch, as Keras' "
            f"verbose=2), received {verbose!r}.", verbose)


def progress(verbose: bool | int | str, total: int | None) -> Any:
    check_verbose(verbose)
    if verbose == 2 and not isinstance(verbose, bool):
        return _Lines()
    show = sys.stderr.isatty() if verbose == "auto" else bool(verbose)
    if not show:
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines()
    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True)
