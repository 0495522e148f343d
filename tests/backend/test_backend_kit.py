"""The backend kit (``mlcore_numpy.kit``) and the one reader of the optional Backend members
(``mlcore.backend.optional_members``): the kit declares the core's defaults, the core reads
the optional members in one place, and a kit backend's hooks answer for it alone."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from mlcore_numpy.kit import BackendBase, LibraryBackend

from mlcore.backend import OptionalMembers, optional_members
from mlcore.plugins import registry

CORE = Path(__file__).resolve().parents[2] / "mlcore"
OPTIONAL = [f.name for f in fields(OptionalMembers)]


@pytest.mark.parametrize("member", OPTIONAL)
def test_the_kit_declares_the_core_defaults(member: str) -> None:
    assert getattr(BackendBase, member) == getattr(OptionalMembers(), member)


def test_a_backend_without_optional_members_gets_the_defaults() -> None:
    assert optional_members(object()) == OptionalMembers()
    torch = optional_members(registry().backends["torch"])
    assert torch.inplace and torch.shape_errors == (RuntimeError,)
    assert torch.on_device is not None and torch.enters_device is None


def test_the_core_reads_optional_members_in_one_place() -> None:
    """No ``getattr(x, "<optional member>", ...)`` in mlcore/ outside mlcore/backend.py."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "backend.py" and path.parent == CORE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in OPTIONAL):
                found.append(f"{path.relative_to(CORE.parent)}:{node.lineno}")
    assert not found, f"read through mlcore.backend.optional_members instead: {found}"


def test_kit_hooks_answer_for_their_own_backend_only() -> None:
    import mlcore_jax
    import mlcore_torch

    torch_xp, numpy_xp = registry().backends["torch"].xp, registry().backends["numpy"].xp
    assert mlcore_torch.mlcore_kernel("sgd_update", torch_xp) is not None
    assert mlcore_torch.mlcore_kernel("sgd_update", numpy_xp) is None
    assert mlcore_torch.mlcore_kernel("no_such_kernel", torch_xp) is None
    step = lambda p, s, x, y: (p, s, x)  # noqa: E731 - a step never run
    assert mlcore_jax.mlcore_compile_step(registry().backends["torch"], step) is None
    assert callable(mlcore_jax.mlcore_compile_step(registry().backends["jax"], step))


def test_the_one_device_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument, else MLCORE_DEVICE (read when asked), else the default; a bad one
    makes the backend unavailable naming the setting."""

    class Kit(LibraryBackend):
        name, library, array_type, label, install_hint = "kit", "numpy", "ndarray", "N", "-"

        @staticmethod
        def parse_device(spec: object, source: str = "device") -> Any:
            if spec in (None, "cpu", "cpu:0"):
                return "cpu"
            raise ValueError(f"{source}={spec!r} is not a kit device")

    monkeypatch.setenv("MLCORE_DEVICE", "cpu:0")
    assert Kit().wanted_device() == ("cpu", "MLCORE_DEVICE")
    assert Kit("cpu").wanted_device() == ("cpu", "device")
    monkeypatch.setenv("MLCORE_DEVICE", "gpu")
    assert Kit().unavailable_reason() == "MLCORE_DEVICE='gpu' is not a kit device"
    with pytest.raises(ValueError, match="device='gpu'"):
        Kit("gpu")
