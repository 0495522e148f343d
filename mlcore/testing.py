"""mlcore's conformance kit: prove an activation or loss right on every backend.

Installing mlcore registers this module as a pytest plugin (pytest's ``pytest11`` entry
point), so a plugin's own test suite can write::

    import pytest

    @pytest.mark.mlcore_conformance("mlcore-plugin-template")
    def test_conformance(mlcore_case):
        mlcore_case.run()

and get one test per (activation or loss, backend, check). The same checks are plain
functions, :func:`check_activation` and :func:`check_loss`, raising ``AssertionError``;
metrics and optimisers have :func:`check_metric` and :func:`check_optimizer`
(:mod:`mlcore._trainkit`).

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
                (``mlcore.ShapeError`` is one) with a message, from forward and backward.
``reference``   (when the author supplies one) agreement with a float64 NumPy function.

NumPy is the host oracle here; it is imported inside functions only, so ``import mlcore``
stays free of array libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ._conformance import CHECK_FUNCS, takes
from ._trainkit import check_metric, check_optimizer
from .backend import Backend, get_backend
from .plugins import PluginRecord, registry

__all__ = ["Case", "BoundCase", "CHECKS", "check_activation", "check_loss", "check_metric",
           "check_optimizer",
           "conformance_params", "mlcore_case"]

CHECKS = ("contract", "dtypes", "reductions", "gradient", "extremes", "shapes", "reference")
_KINDS = {"activation": "activations", "loss": "losses"}
_LADDER = (-1e4, -1e3, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e3, 1e4)


@dataclass(frozen=True)
class Case:
    """One activation or loss to check, with its parameters and test data.

    ``inputs(rng)`` returns float64 NumPy data from a ``numpy.random.Generator``: ``x`` for
    an activation, ``(pred, target)`` for a loss (an integer target is kept integer). The
    defaults are ``x ~ N(0, 2²)`` of shape (3, 4); ``pred ~ N(0, 1)`` and
    ``target ~ U(0, 1)`` of shape (4, 3). ``extremes(rng)`` returns the same for the
    ``extremes`` check (default: ``inputs`` with x or pred filled with values from -1e4 to
    1e4). ``reference(x, **params)`` (activations) or ``reference(pred, target, **params)``
    (losses, per-sample values, i.e. ``reduction="none"``) is a float64 NumPy function.
    ``skip`` maps a check name to the reason it does not apply.
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

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def checks(self) -> list[str]:
        """The checks that apply to this case."""
        skipped = {"reductions", "shapes"} if self.kind == "activation" else set()
        if self.kind == "loss" and not takes(self._factory(), "reduction"):
            skipped.add("reductions")
        if self.reference is None:
            skipped.add("reference")
        return [c for c in CHECKS if c not in skipped]

    def _factory(self) -> Callable[..., Any]:
        if self.factory is not None:
            return self.factory
        return registry().get(_KINDS[self.kind], self.name)  # type: ignore[no-any-return]

    def build(self, **extra: Any) -> Any:
        """The activation or loss object, with ``params`` and ``extra`` keyword arguments."""
        return self._factory()(**{**self.params, **extra})


@dataclass(frozen=True)
class BoundCase:
    """A case on one backend, for one check: what a ``mlcore_case`` test runs."""

    case: Case
    backend: str
    check: str

    def run(self) -> None:
        """Run the check; raise ``AssertionError`` describing any failure."""
        reason = self.case.skip.get(self.check)
        if reason:
            pytest.skip(reason)
        _run(self.case, _backend(self.backend), self.check)

    def __str__(self) -> str:
        return f"{self.case.kind}:{self.case.label}-{self.backend}-{self.check}"


# -- the function API -----------------------------------------------------------------------
def check_activation(activation: Any, backend: Backend | str | None = None, *,
                     params: Mapping[str, Any] | None = None, checks: Sequence[str] = CHECKS,
                     **case: Any) -> None:
    """Run the conformance checks on an activation; raise ``AssertionError`` on failure.

    ``activation`` is a registered name, a factory (a class) or a built object; ``backend``
    a backend, its name, or None for the selected one. Further keywords (``reference``,
    ``inputs``, ``extremes``, ``grad_tol``, ...) are those of :class:`Case`.
    """
    _check("activation", activation, backend, params, checks, case)


def check_loss(loss: Any, backend: Backend | str | None = None, *,
               params: Mapping[str, Any] | None = None, checks: Sequence[str] = CHECKS,
               **case: Any) -> None:
    """Run the conformance checks on a loss; as :func:`check_activation`."""
    _check("loss", loss, backend, params, checks, case)


def _check(kind: str, obj: Any, backend: Backend | str | None,
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
            _run(case, b, check)


def _name_of(obj: Any) -> str:
    return str(getattr(obj, "name", "") or getattr(obj, "__name__", type(obj).__name__))


def _as_factory(obj: Any) -> Callable[..., Any]:
    if isinstance(obj, type) or not hasattr(obj, "forward"):
        return obj  # type: ignore[no-any-return]

    def built() -> Any:  # an object already built: nothing to pass
        return obj

    built.mlcore_prebuilt = True  # type: ignore[attr-defined]
    return built


def _backend(backend: Backend | str | None) -> Backend:
    return get_backend(backend) if backend is None or isinstance(backend, str) else backend


# -- running one check ----------------------------------------------------------------------
def _run(case: Case, b: Backend, check: str) -> None:
    ctx = _Ctx(case, b)
    try:
        CHECK_FUNCS[case.kind][check](ctx)
    except AssertionError as exc:
        raise AssertionError(f"[{case.kind} {case.label} on {b.name}] {check}: {exc}") from None


class _Ctx:
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
        base = (self.case.inputs or _DEFAULT_INPUTS[self.case.kind])(rng)
        if not extreme:
            return base
        ladder = self.np.asarray(_LADDER)
        if self.case.kind == "activation":
            return ladder
        return self.np.resize(ladder, self.np.shape(base[0])), base[1]

    def arr(self, host: Any, dtype: Any) -> Any:
        """A backend array; floating host data is cast to ``dtype``, integers kept."""
        host = self.np.asarray(host)
        if host.dtype.kind == "f":
            return self.b.asarray(host.astype(self.np.float64), dtype=dtype)
        return self.b.asarray(host)

    def host(self, x: Any) -> Any:
        return self.np.asarray(self.b.to_numpy(x), dtype=self.np.float64)

    def dtypes(self) -> list[Any]:
        return [self.xp.float32, self.xp.float64]


def _default_activation_inputs(rng: Any) -> Any:
    return rng.normal(0.0, 2.0, (3, 4))


def _default_loss_inputs(rng: Any) -> Any:
    return rng.normal(0.0, 1.0, (4, 3)), rng.uniform(0.0, 1.0, (4, 3))


_DEFAULT_INPUTS = {"activation": _default_activation_inputs, "loss": _default_loss_inputs}


# -- pytest integration -----------------------------------------------------------------------
def conformance_params(*plugins: str, cases: Sequence[Case] = (),
                       checks: Sequence[str] = CHECKS) -> list[Any]:
    """``pytest.param(BoundCase)`` for every activation and loss the named plugins provide
    (distribution or entry-point names; ``"mlcore"`` for the built-ins), on every installed
    backend (only ``MLCORE_BACKEND`` when it is set), for each applicable check.

    ``cases`` replace the default case of their name (give several to check one name with
    several parameter sets). Unusable backends give skipped params carrying the reason.
    """
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
    if not plugins:
        raise pytest.UsageError("mlcore_conformance needs at least one plugin name")
    by_name: dict[str, list[Case]] = {}
    for c in cases:
        by_name.setdefault(c.name, []).append(c)
    out, provided = [], set()
    for rec in _records(plugins):
        for kind, plural in _KINDS.items():
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
        reason = "" if b is not None and b.is_available() else (
            b.unavailable_reason() if b is not None else f"backend {name!r} is not installed")
        out.append((name, f"{name} unavailable: {reason}" if reason else ""))
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mlcore_conformance(*plugins, cases=(), checks=CHECKS): run the test "
        "once per (activation or loss of the plugins, backend, check) with the mlcore_case "
        "fixture (mlcore.testing)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mlcore_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("mlcore_conformance")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} uses mlcore_case: mark it "
                                f"@pytest.mark.mlcore_conformance('your-distribution')")
    params = conformance_params(*marker.args, **marker.kwargs)
    metafunc.parametrize("mlcore_case", params, indirect=True)


@pytest.fixture
def mlcore_case(request: pytest.FixtureRequest) -> BoundCase:
    """One (activation or loss, backend, check); call ``mlcore_case.run()``."""
    return request.param  # type: ignore[no-any-return]
