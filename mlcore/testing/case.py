"""What the conformance kit checks: a :class:`Case` and the context its checks run in.

Imports nothing of pytest and no array library at import; NumPy, the host oracle, is
imported when a :class:`Context` is made.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..backend import Backend
from ..plugins import registry
from .float64 import SkippedCheck, float64_reason

__all__ = ["Case", "Context", "CHECKS", "KINDS", "takes"]

CHECKS = ("contract", "dtypes", "reductions", "gradient", "extremes", "shapes", "reference")
KINDS = {"activation": "activations", "loss": "losses"}
_LADDER = (-1e4, -1e3, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e3, 1e4)


def takes(factory: Callable[..., object], param: str) -> bool:
    try:
        ps = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return param in ps or any(p.kind is p.VAR_KEYWORD for p in ps.values())


@dataclass(frozen=True)
class Case:
    """One activation or loss to check, with its parameters and test data.

    ``inputs(rng)`` returns float64 NumPy data from a ``numpy.random.Generator``: ``x`` for
    an activation, ``(pred, target)`` for a loss (an integer target is kept integer). The
    defaults are ``x ~ N(0, 2²)`` of shape (3, 4); ``pred ~ N(0, 1)`` and
    ``target ~ U(0, 1)`` of shape (4, 3). ``extremes(rng)`` returns the same for the
    ``extremes`` check (default: ``inputs`` with x or pred filled with values from -1e4 to
    1e4). ``reference(x, **params)`` (activations) or ``reference(pred, target, **params)``
    is a float64 NumPy function. How it meets ``reduction``: when the loss takes a
    ``reduction`` parameter and ``params`` do not set one, the loss is built with
    ``reduction="none"`` and ``reference`` returns the **per-sample values**, shape (N,);
    when ``params`` set a reduction, or the loss has no such parameter, the loss is compared
    as built, so ``reference`` returns what its ``forward`` returns (a scalar for "mean").
    ``magnitudes`` scale the inputs for the relative-precision part of ``reference`` (only
    when the inputs are the kit's defaults; ``()`` turns it off). ``skip`` maps a check name
    to the reason it does not apply.

    A loss may carry its own domain: ``conformance_inputs(rng)`` and
    ``conformance_extremes(rng)`` on the object give its data when the case gives none.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    reference: Callable[..., Any] | None = None
    inputs: Callable[[Any], Any] | None = None
    extremes: Callable[[Any], Any] | None = None
    skip: Mapping[str, str] = field(default_factory=dict)
    kind: str = ""  # "activation" or "loss"; found from the registry when empty
    factory: Callable[..., Any] | None = None  # None: the registered factory of ``name``
    grad_tol: float = 1e-6
    ref_tol: tuple[float, float] = (1e-4, 1e-7)  # (float32, float64), relative
    magnitudes: tuple[float, ...] = (1e-8, 1e4)

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def checks(self) -> list[str]:
        """The checks that apply to this case."""
        skipped = {"reductions", "shapes"} if self.kind == "activation" else set()
        if self.kind == "loss" and getattr(self.factory, "mlcore_prebuilt", False):
            skipped.add("reductions")  # an object built by the caller: no reduction to pass
        if self.reference is None:
            skipped.add("reference")
        return [c for c in CHECKS if c not in skipped]

    def _factory(self) -> Callable[..., Any]:
        if self.factory is not None:
            return self.factory
        return registry().get(KINDS[self.kind], self.name)  # type: ignore[no-any-return]

    def build(self, **extra: Any) -> Any:
        """The activation or loss object, with ``params`` and ``extra`` keyword arguments."""
        return self._factory()(**{**self.params, **extra})


class Context:
    """What a check needs: the case, the backend, host NumPy and seeded data."""

    def __init__(self, case: Case, b: Backend) -> None:
        import numpy as np

        self.case, self.b, self.np = case, b, np
        self.xp = b.xp

    def data(self, extreme: bool = False) -> Any:
        rng = self.np.random.default_rng(20240531)
        maker = self.case.extremes if extreme else self.case.inputs
        if maker is not None:
            return maker(rng)
        own = self.own_data(rng, extreme)
        if own is not None:
            return own
        base = (self.case.inputs or _DEFAULT_INPUTS[self.case.kind])(rng)
        if not extreme:
            return base
        ladder = self.np.asarray(_LADDER)
        if self.case.kind == "activation":
            return ladder
        return self.np.resize(ladder, self.np.shape(base[0])), base[1]

    def own_data(self, rng: Any, extreme: bool = False) -> Any:
        """The object's own data for its domain (``conformance_inputs(rng)`` or
        ``conformance_extremes(rng)``), or None."""
        if self.case.inputs is not None:
            return None
        name = "conformance_extremes" if extreme else "conformance_inputs"
        maker = getattr(self.case.build(), name, None)
        return maker(rng) if callable(maker) else None

    def free_inputs(self) -> bool:
        """Whether the inputs are the kit's defaults (no domain declared): they may be scaled."""
        return self.case.inputs is None and self.own_data(
            self.np.random.default_rng(0)) is None

    def arr(self, host: Any, dtype: Any) -> Any:
        """A backend array; floating host data is cast to ``dtype``, integers kept."""
        host = self.np.asarray(host)
        if host.dtype.kind == "f":
            return self.b.asarray(host.astype(self.np.float64), dtype=dtype)
        return self.b.asarray(host)

    def host(self, x: Any) -> Any:
        return self.np.asarray(self.b.to_numpy(x), dtype=self.np.float64)

    def dtypes(self) -> list[Any]:
        """float32, and float64 where the backend has it (not JAX without 64-bit mode)."""
        return [self.xp.float32] + ([] if float64_reason(self.b) else [self.xp.float64])

    def tolerances(self) -> list[tuple[Any, float]]:
        """``(dtype, reference tolerance)`` for each dtype of :meth:`dtypes`."""
        return list(zip(self.dtypes(), self.case.ref_tol, strict=False))

    def float64(self) -> Any:
        """float64, or :class:`SkippedCheck` saying why this backend cannot run the check."""
        why = float64_reason(self.b)
        if why:
            raise SkippedCheck(f"[{self.case.kind} {self.case.label} on {self.b.name}] needs "
                               f"float64 (the kit's finite differences), which {why}")
        return self.xp.float64

    def widest(self) -> Any:
        """float64 where the backend has it, else float32."""
        return self.dtypes()[-1]


def _default_activation_inputs(rng: Any) -> Any:
    return rng.normal(0.0, 2.0, (3, 4))


def _default_loss_inputs(rng: Any) -> Any:
    return rng.normal(0.0, 1.0, (4, 3)), rng.uniform(0.0, 1.0, (4, 3))


_DEFAULT_INPUTS = {"activation": _default_activation_inputs, "loss": _default_loss_inputs}


