"""Whether a backend computes in float64, and the skip a check takes where it cannot.

JAX computes in 32 bits unless its 64-bit mode is on (``JAX_ENABLE_X64=1``); the kit runs its
float64 cases only where the backend can, and says so, instead of blaming the plugin for
its own data meeting a 32-bit backend.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SkippedCheck", "float64_reason"]


class SkippedCheck(Exception):  # noqa: N818 - a skip, not an error
    """A check that cannot run on this backend (the message says why)."""


def float64_reason(b: Any) -> str:
    """``""`` when backend ``b`` makes float64 arrays, else why not (the backend's words)."""
    import numpy as np

    try:
        a = b.asarray(np.zeros(2, dtype=np.float64), dtype=b.xp.float64)
    except Exception as exc:  # noqa: BLE001 - any refusal means no float64 here
        first = (str(exc).splitlines() or [""])[0]
        return f"the {b.name} backend refuses ({type(exc).__name__}: {first})"
    if a.dtype != b.xp.float64:
        return f"the {b.name} backend gives {a.dtype} for float64"
    return ""
