"""The template backend passes mlcore's backend conformance check, one test per check.

A copy of the template keeps this file: it runs the same checks the first-party backends
run (``mlcore.testing.check_backend``) on the installed backend named here.
"""

from __future__ import annotations

import pytest

import mlcore
from mlcore.testing import BACKEND_CHECKS, check_backend

BACKEND = "template"  # Backend.name of the backend under test


@pytest.mark.parametrize("check", BACKEND_CHECKS)
def test_backend_conformance(check: str) -> None:
    if BACKEND not in mlcore.backend_names():
        pytest.skip(f"backend {BACKEND!r} is not installed (pip install -e .)")
    check_backend(BACKEND, checks=[check])
