"""mlcore's conformance kit: prove an activation or loss right on every backend.

Installing mlcore registers its pytest plugin (:mod:`mlcore.testing.pytest_plugin`, through
pytest's ``pytest11`` entry point), so a plugin's own test suite can write::

    import pytest

    @pytest.mark.mlcore_conformance("mlcore-plugin-template")
    def test_conformance(mlcore_case):
        mlcore_case.run()

and get one test per (activation or loss, backend, check). The same checks are plain
functions, :func:`check_activation` and :func:`check_loss`, raising ``AssertionError``;
metrics and optimisers have :func:`check_metric` and :func:`check_optimizer`
(:mod:`.training`), layers :func:`check_layer` (:mod:`.layers`; marker
``@pytest.mark.mlcore_layer(LayerClass, params=..., inputs=...)`` with the fixture
``mlcore_layer_case``). Where a backend lacks float64 (JAX without 64-bit mode), the
float64 cases are skipped, saying so (:mod:`.float64`).

The checks (``CHECKS``), on every installed backend that is usable here:

``contract``    the factory builds an object with ``forward``/``backward``; an unknown
                keyword parameter is rejected with a ``TypeError``.
``dtypes``      float32 and float64 in, same namespace, device and dtype out (and the shape:
                ``x``'s for activations and gradients, ``()`` or ``(N,)`` for loss values);
                inputs are not modified.
``reductions``  (losses taking ``reduction``) ``"sum"`` and ``"mean"`` are the sum and mean of
                the ``"none"`` per-sample values, and so are their gradients.
``gradient``    ``backward`` against central finite differences, in float64.
``extremes``    no NaN or infinity from forward or backward at extreme finite inputs
                (±1e4 by default), in float32 and float64.
``shapes``      (losses) a target with another number of samples raises ``ValueError``
                (``mlcore.ShapeError`` is one), or the error the backend declares its
                library raises for such shapes (``Backend.shape_errors``: torch's
                RuntimeError), with a message, from forward and backward.
``reference``   (when the author supplies one) agreement with a float64 NumPy function, on
                the case's inputs and, where the inputs are free (no ``inputs`` declared),
                also *relative* agreement element by element at tiny and huge magnitudes
                (``Case.magnitudes``, default 1e-8 and 1e4 times the inputs), which is where
                cancellation (``log(cosh(x))``, ``exp(x) - 1``) loses digits.

Inputs respect each function's domain: a case's ``inputs`` / ``extremes`` when given, else
the object's own ``conformance_inputs(rng)`` / ``conformance_extremes(rng)`` when it has them
(mlcore's probability losses do: cross-entropy gets probability rows and labels, KL two
distributions, binary cross-entropy probabilities), else the defaults below.

For an array *backend*, :func:`check_backend` (with ``BACKEND_CHECKS``, see
:mod:`mlcore.testing.backend_checks`) checks the protocol, conversions both ways, the seeded random
source, every built-in activation and loss against NumPy, shape errors, one training step
and saving and loading::

    @pytest.mark.parametrize("check", mlcore.testing.BACKEND_CHECKS)
    def test_my_backend(check):
        mlcore.testing.check_backend("mybackend", checks=[check])

NumPy is the host oracle here; it is imported inside functions only, so ``import mlcore``
stays free of array libraries, and importing this kit does not import pytest. The package:
this module (the API), :mod:`.case` (a case and its context), :mod:`.checks` (the checks),
:mod:`.pytest_plugin` (marker and fixture), :mod:`.training` (metrics and optimisers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from ..backend import Backend, backend_status, get_backend
from ..hookspecs import ActivationFn, LossFn
from ..plugins import PluginRecord, registry
from .backend_checks import BACKEND_CHECKS, check_backend
from .case import CHECKS, KINDS, Case
from .checks import run
from .float64 import SkippedCheck, float64_reason
from .layers import LAYER_CHECKS, LayerCase, check_layer, layer_params
from .training import check_metric, check_optimizer

__all__ = ["Case", "BoundCase", "CHECKS", "check_activation", "check_loss", "check_metric",
           "check_optimizer", "check_layer", "LAYER_CHECKS", "LayerCase", "layer_cases",
           "float64_reason", "SkippedCheck",
           "conformance_params", "BACKEND_CHECKS", "check_backend"]

@dataclass(frozen=True)
class BoundCase:
    """A case on one backend, for one check: what a ``mlcore_case`` test runs."""

    case: Case
    backend: str
    check: str

    def run(self) -> None:
        """Run the check; raise ``AssertionError`` describing any failure."""
        import pytest

        reason = self.case.skip.get(self.check)
        if reason:
            pytest.skip(reason)
        try:
            run(self.case, _backend(self.backend), self.check)
        except SkippedCheck as why:
            pytest.skip(str(why))

    def __str__(self) -> str:
        return f"{self.case.kind}:{self.case.label}-{self.backend}-{self.check}"


# -- the function API -----------------------------------------------------------------------
def check_activation(activation: str | Callable[..., ActivationFn] | ActivationFn,
                     backend: Backend | str | None = None, *,
                     params: Mapping[str, Any] | None = None, checks: Sequence[str] = CHECKS,
                     **case: Any) -> None:
    """Run the conformance checks on an activation; raise ``AssertionError`` on failure.

    ``activation`` is a registered name, a factory (a class) or a built object; ``backend``
    a backend, its name, or None for the selected one. Further keywords (``reference``,
    ``inputs``, ``extremes``, ``grad_tol``, ...) are those of :class:`Case`.
    """
    _check("activation", activation, backend, params, checks, case)


def check_loss(loss: str | Callable[..., LossFn] | LossFn, backend: Backend | str | None = None, *,
               params: Mapping[str, Any] | None = None, checks: Sequence[str] = CHECKS,
               **case: Any) -> None:
    """Run the conformance checks on a loss; as :func:`check_activation`."""
    _check("loss", loss, backend, params, checks, case)


def _check(kind: str, obj: object, backend: Backend | str | None,
           params: Mapping[str, Any] | None, checks: Sequence[str], extra: dict[str, Any]) -> None:
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"Unknown check(s) {', '.join(unknown)}; the checks are "
                         f"{', '.join(CHECKS)}.")
    name, factory = (obj, None) if isinstance(obj, str) else (_name_of(obj), _as_factory(obj))
    case = Case(name, dict(params or {}), kind=kind, factory=factory, **extra)
    b = _backend(backend)
    for check in case.checks():
        if check in checks and check not in case.skip:
            try:
                run(case, b, check)
            except SkippedCheck as why:
                warnings.warn(str(why), UserWarning, stacklevel=3)


def _name_of(obj: object) -> str:
    return str(getattr(obj, "name", "") or getattr(obj, "__name__", type(obj).__name__))


def _as_factory(obj: object) -> Callable[..., object]:
    if isinstance(obj, type) or not hasattr(obj, "forward"):
        return cast("Callable[..., object]", obj)  # a factory (checked where it is called)

    def built() -> object:  # an object already built: nothing to pass
        return obj

    built.mlcore_prebuilt = True  # type: ignore[attr-defined]
    return built


def _backend(backend: Backend | str | None) -> Backend:
    return get_backend(backend) if backend is None or isinstance(backend, str) else backend


# -- pytest integration -----------------------------------------------------------------------
def layer_cases(layer: Any, *, params: Mapping[str, Any] | None = None,
                inputs: Callable[[Any], Any] | None = None,
                checks: Sequence[str] = LAYER_CHECKS, tol: float = 1e-6) -> list[Any]:
    """``pytest.param(LayerCase)`` for every installed backend (only ``MLCORE_BACKEND``
    when it is set) and layer check: what the ``mlcore_layer`` marker parametrises."""
    return layer_params(layer, params=params, inputs=inputs, checks=checks, tol=tol,
                        backends=_backend_names())



def conformance_params(*plugins: str, cases: Sequence[Case] = (),
                       checks: Sequence[str] = CHECKS) -> list[Any]:
    """``pytest.param(BoundCase)`` for every activation and loss the named plugins provide
    (distribution or entry-point names; ``"mlcore"`` for the built-ins), on every installed
    backend (only ``MLCORE_BACKEND`` when it is set), for each applicable check.

    ``cases`` replace the default case of their name (give several to check one name with
    several parameter sets). Unusable backends give skipped params carrying the reason.
    """
    import pytest

    out = []
    for case in _plugin_cases(plugins, cases):
        for name, reason in _backend_names():
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            for check in case.checks():
                if check in checks:
                    bound = BoundCase(case, name, check)
                    out.append(pytest.param(bound, id=str(bound), marks=marks))
    return out


def _plugin_cases(plugins: Sequence[str], cases: Sequence[Case]) -> list[Case]:
    import pytest

    if not plugins:
        raise pytest.UsageError("mlcore_conformance needs at least one plugin name")
    by_name: dict[str, list[Case]] = {}
    for c in cases:
        by_name.setdefault(c.name, []).append(c)
    out, provided = [], set()
    for rec in _records(plugins):
        for kind, plural in KINDS.items():
            for name in rec.provides.get(plural, []):
                provided.add(name)
                factory = _factory_of(plural, name, rec)
                for c in by_name.get(name, [Case(name)]):
                    out.append(replace(c, kind=kind, factory=c.factory or factory))
    unknown = sorted(set(by_name) - provided)
    if unknown:
        raise pytest.UsageError(
            f"mlcore_conformance: cases for {', '.join(map(repr, unknown))}, which "
            f"{', '.join(plugins)} do not provide. They provide: {', '.join(sorted(provided))}.")
    return out


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _records(plugins: Sequence[str]) -> list[PluginRecord]:
    import pytest

    wanted = {_norm(p) for p in plugins}
    records = registry().records
    found = [r for r in records if _norm(r.distribution) in wanted or _norm(r.name) in wanted]
    missing = wanted - {_norm(r.distribution) for r in found} - {_norm(r.name) for r in found}
    if missing:
        known = ", ".join(sorted({r.distribution for r in records}))
        raise pytest.UsageError(f"mlcore_conformance: no installed plugin named "
                                f"{', '.join(sorted(missing))}. Installed: {known}.")
    broken = [f"{r.describe()}: {r.status} {r.error}" for r in found if r.status != "loaded"]
    if broken:
        raise pytest.UsageError("mlcore_conformance: " + "; ".join(broken))
    return found


def _factory_of(plural: str, name: str, rec: PluginRecord) -> Any:
    for factory, owner in registry().providers(plural, name):
        if owner is rec:
            return factory
    raise LookupError(f"{rec.describe()} lists {name!r} but the registry does not hold it")


def _backend_names() -> list[tuple[str, str]]:
    import os

    chosen = os.environ.get("MLCORE_BACKEND", "").strip()
    backends = registry().backends
    names = [chosen] if chosen else sorted(backends)
    out = []
    for name in names:
        b = backends.get(name)
        reason = backend_status(b).reason if b is not None else (
            f"backend {name!r} is not installed")
        out.append((name, f"{name} unavailable: {reason}" if reason else ""))
    return out
