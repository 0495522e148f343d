"""Fixtures shared by every test folder (tests/, backends/*/tests, plugins/*/tests): a
``backend`` fixture over every installed backend, registries rebuilt per test, throwaway
installed distributions.

Ids are the backend names, so ``pytest -k strict`` runs one backend. A backend that is
installed but unusable here (cupy without a GPU) is reported once: its tests (through this
fixture, the conformance kit's ``mlcore_case`` or the ``needs_backend("cupy")`` marker) are
collected, then all but one deselected, and that one skips with the reason and the count. When
``MLCORE_BACKEND`` is set, the fixture runs that backend only (``MLCORE_BACKEND=strict
pytest`` runs the whole suite on array-api-strict).

Without ``MLCORE_BACKEND`` the matrix is every installed backend but JAX: JAX compiles each
eager operation for each new shape and dtype, so the thousands of small cases of the suite
take minutes there. CI runs the core tests on JAX in a run of their own
(``MLCORE_BACKEND=jax``, see the README's test command). JAX's 64-bit mode is switched on for
the tests (``JAX_ENABLE_X64``, unless set), since the oracles compare in float64; the jax
backend's own tests check the 32-bit default in a subprocess.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import mlcore
from mlcore.plugins import registry

os.environ.setdefault("JAX_ENABLE_X64", "1")

OWN_RUN = frozenset({"jax"})
"""Backends left out of the default matrix (each runs the suite with ``MLCORE_BACKEND``)."""


def _unavailable() -> dict[str, str]:
    """The skip reason of each installed backend that cannot run here, by name."""
    return {n: f"{n} unavailable: {b.unavailable_reason()}"
            for n, b in sorted(registry().backends.items()) if not b.is_available()}


def _backend_params() -> list[Any]:
    chosen = os.environ.get("MLCORE_BACKEND", "").strip()
    names = [chosen] if chosen else sorted(set(registry().backends) - OWN_RUN)
    skip = _unavailable()
    return [pytest.param(n, id=n, marks=[pytest.mark.skip(reason=skip[n])] if n in skip else [])
            for n in names]


@pytest.fixture(params=_backend_params())
def backend(request: pytest.FixtureRequest) -> Any:
    """Every installed backend that can run here, in turn (the others: reported once)."""
    b = registry().backends.get(request.param)
    if b is None:
        pytest.fail(f"backend {request.param!r} is not installed")
    if not b.is_available():
        pytest.skip(f"{request.param} unavailable: {b.unavailable_reason()}")
    with mlcore.use_backend(request.param):
        yield b


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_backend(name): the test runs on that backend "
                            "only; where it cannot run, it is reported with the backend's "
                            "other tests, once")


def _skipped_for(item: pytest.Item, reasons: dict[str, str]) -> str | None:
    """The unavailable backend ``item`` runs on (its skip reason says so), or None."""
    marker = item.get_closest_marker("needs_backend")
    if marker is not None and marker.args[0] in reasons:
        return str(marker.args[0])
    for mark in item.iter_markers("skip"):
        reason = mark.kwargs.get("reason", mark.args[0] if mark.args else "")
        for name, text in reasons.items():
            if reason == text:
                return name
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each unavailable backend reported once: its first test skips with the backend's
    reason and how many tests it stands for; the others are deselected."""
    reasons = _unavailable()
    if not reasons:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    first: dict[str, pytest.Item] = {}
    count: dict[str, int] = {}
    for item in items:
        name = _skipped_for(item, reasons)
        if name is None:
            kept.append(item)
            continue
        count[name] = count.get(name, 0) + 1
        if name not in first:
            first[name] = item
            kept.append(item)
        else:
            dropped.append(item)
    for name, item in first.items():
        item.add_marker(pytest.mark.skip(
            reason=f"{reasons[name]} ({count[name]} tests on {name} not run)"),
            append=False)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.fixture
def xp(backend: Any) -> Any:
    """The Array API namespace of the current ``backend``."""
    return backend.xp


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Rebuild the plugin registry for this test and again afterwards."""
    from mlcore import plugins

    plugins.reset()
    yield plugins
    plugins.reset()


@pytest.fixture
def make_dist(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fresh_registry: Any) -> Any:
    """Build a throwaway installed distribution with an ``mlcore`` entry point.

    ``make_dist("mlcore-bad", "bad_plugin", "raise ImportError('boom')")`` writes the module
    and a ``.dist-info`` (METADATA + entry_points.txt) into a folder put on ``sys.path``,
    which is exactly what importlib.metadata sees for a pip-installed distribution.
    """
    import sys
    import textwrap

    root = tmp_path / "site"
    root.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(root))

    def make(dist: str, module: str, source: str, ep_name: str | None = None,
             version: str = "1.0") -> Any:
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[mlcore]\n{ep_name or module} = {module}\n")
        sys.modules.pop(module, None)
        fresh_registry.reset()
        return root

    return make


@pytest.fixture
def agree() -> Any:
    """``agree(ours, theirs, dtype, what, atol=0.0)``: where the reference (PyTorch) is
    finite, ours agrees within ``tol * (1 + |theirs|)`` (2e-6 in float32, 1e-13 in float64);
    everywhere, ours is finite (torch's autograd gives NaN for (1 - p_t)**gamma with
    gamma < 1 at saturated logits; ours 0)."""
    import numpy as np

    tolerance = {"float32": 2e-6, "float64": 1e-13}

    def check(ours: Any, theirs: Any, dtype: str, what: str, atol: float = 0.0) -> None:
        bad = np.flatnonzero(~np.isfinite(ours))
        assert bad.size == 0, f"{what} ({dtype}): not finite at indices {bad[:5]}"
        keep = np.isfinite(theirs)
        ours, theirs = ours[keep], theirs[keep]
        err = np.abs(ours - theirs)
        bound = tolerance[dtype] * (1.0 + np.abs(theirs)) + atol
        worst = int(np.argmax(err - bound))
        assert np.all(err <= bound), (
            f"{what} ({dtype}): max abs error {err.max():.3g}; worst at index {worst}: "
            f"ours {ours[worst]!r}, torch {theirs[worst]!r}")

    return check


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per skip reason with its count, instead of one line per skipped test.

    The suite skips hundreds of cases for the same reason (CuPy without a GPU); ``-ra``
    listed each of them. Failures and errors are still reported in full (``-rfE``).
    """
    from collections import Counter

    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"skipped {count}: {reason}")
