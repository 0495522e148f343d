"""The backend's on/off environment switches, and the base of what they switch: an optional
speed-up loaded on first use, or the reason it is off."""

from __future__ import annotations

import os

__all__ = ["switch", "Optional"]


def switch(name: str) -> str:
    """An on/off environment switch of this backend (``MLCORE_NUMPY_JIT``,
    ``MLCORE_NUMPY_BLAS``): ``"off"`` (0/false/no/off), ``"on"`` (1/true/yes/on) or
    ``"auto"`` (unset or anything else)."""
    value = os.environ.get(name, "auto").strip().lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    return "on" if value in ("1", "true", "yes", "on") else "auto"


class Optional:
    """A speed-up loaded when first built (``_load``), unless the environment switch
    ``SWITCH`` is off; any failure leaves ``available`` False with ``reason``."""

    SWITCH = ""

    def __init__(self) -> None:
        self.available = False
        self.reason = "not loaded"
        if switch(self.SWITCH) == "off":
            self.reason = f"disabled by {self.SWITCH}"
            return
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - any failure means: the NumPy passes run
            self.available = False
            self.reason = f"{type(exc).__name__}: {exc}".strip()

    def _load(self) -> None:
        raise NotImplementedError
