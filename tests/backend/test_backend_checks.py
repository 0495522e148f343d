"""The backend conformance check (mlcore.testing.check_backend): every installed backend
passes it, a third party's (the template, installed through an entry point) passes it the
same way, and a faulty backend is told which check fails and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlcore
from mlcore.testing import BACKEND_CHECKS, check_backend

TEMPLATE = Path(__file__).resolve().parents[2] / "backends" / "template"


@pytest.mark.parametrize("check", BACKEND_CHECKS)
def test_installed_backend_passes(backend: Any, check: str) -> None:
    check_backend(backend, checks=[check])


def test_unknown_check_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown backend check.*'nope'|nope"):
        check_backend("numpy", checks=["nope"])


@pytest.fixture
def with_template(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The template backend's package on sys.path, plus a distribution that declares the
    entry points given (``make_dist`` builds the dist-info, as pip would)."""
    monkeypatch.syspath_prepend(str(TEMPLATE))
    return make_dist


def test_third_party_template_passes(with_template: Any) -> None:
    with_template("mlcore-backend-template", "template_entry",
                  "from mlcore_backend_template import *  # noqa: F403\n"
                  "from mlcore_backend_template import mlcore_backends  # noqa: F401\n",
                  ep_name="template")
    assert "template" in mlcore.backend_names()
    check_backend("template")


_BROKEN = """
import numpy as np
from mlcore_backend_template import TemplateBackend, hookimpl

class Broken(TemplateBackend):
    name = "{name}"

    def {method}

@hookimpl
def mlcore_backends():
    return [Broken()]
"""

FAULTS = [
    ("to_numpy(self, x):\n        return np.asarray(x)", "conversions",
     "to_numpy of a transposed array must be a C-ordered copy of its values"),
    ("rng(self, seed=None):\n        return super().rng(None)", "random",
     "rng(7) twice gave different numbers"),
    ("owns(self, x):\n        return False", "protocol", "owns() is False for its own array"),
]


@pytest.mark.parametrize(("method", "check", "message"), FAULTS, ids=[f[1] for f in FAULTS])
def test_faulty_backend_is_told_what_is_wrong(with_template: Any, method: str, check: str,
                                              message: str) -> None:
    with_template("mlcore-broken", "broken_backend",
                  _BROKEN.format(name="broken", method=method), ep_name="broken")
    with pytest.raises(AssertionError, match=rf"\[backend broken\] {check}: .*"
                       + message.replace("(", r"\(").replace(")", r"\)")):
        check_backend("broken", checks=[check])


_LAZY = """
from mlcore_backend_template import TemplateBackend, hookimpl

CALLS = []

class Lazy(TemplateBackend):
    name = "lazy"

    def materialize(self, arrays):
        CALLS.append(len(arrays))
        return tuple(a.copy() for a in arrays)

@hookimpl
def mlcore_backends():
    return [Lazy()]
"""


def test_a_lazy_backend_materialises_parameters_and_state_each_step(with_template: Any) -> None:
    """The per-step hook: after each eager update, the parameters and optimiser state go
    through the backend's ``materialize`` and its results are stored (dask's persist)."""
    import sys

    import numpy as np

    with_template("mlcore-lazy", "lazy_backend", _LAZY, ep_name="lazy")
    with mlcore.use_backend("lazy"):
        model = mlcore.MLP([3, 4, 2], seed=0)
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(12, 3)), rng.integers(0, 2, size=12), loss="cross_entropy",
                  optimizer="adam", epochs=2, batch_size=4, verbose=False)
    n = len(model.parameters())
    calls = sys.modules["lazy_backend"].CALLS
    assert calls == [3 * n] * 6  # params, m, v; 6 steps
    for optimizer, arrays in ((mlcore.RMSprop(model.parameters(), momentum=0.9, centered=True),
                               4 * n), (mlcore.Adagrad(model.parameters()), 2 * n)):
        calls.clear()  # every declared slot goes through materialize (was: Adam's and SGD's)
        with mlcore.use_backend("lazy"):
            model.fit(rng.normal(size=(12, 3)), rng.integers(0, 2, size=12),
                      loss="cross_entropy", optimizer=optimizer, epochs=1, batch_size=4,
                      verbose=False)
        assert calls == [arrays] * 3, type(optimizer).__name__
