"""A tqdm progress bar over the cases on stderr, kept clear of the tables printed meanwhile."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(total: int, enabled: bool | None,
                 echo: Callable[[str], None]) -> Iterator[tuple[Any, Callable[[str], None]]]:
    """``(bar, echo)``: a bar of ``total`` cases (``enabled=None``: only when stderr is a
    terminal) and the ``echo`` to print with while it shows (it clears and redraws it)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="case", desc="mlcore bench", file=sys.stderr, leave=False,
               dynamic_ncols=True, disable=None if enabled is None else not enabled)
    try:
        if bar.disable:
            yield bar, echo
        else:
            yield bar, lambda line: bar.write(line, file=sys.stdout)
    finally:
        bar.close()
