"""The ``mlcore`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import mlcore
from mlcore.cli import main


def test_info_lists_backends_and_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "selected backend: numpy (from default)" in result.output
    assert "strict   available" in result.output
    assert "mlcore-numpy" in result.output
    assert "kernels: adam_update (" in result.output and "sgd_update (" in result.output


def test_info_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_BACKEND", "strict")
    result = CliRunner().invoke(main, ["info", "--json"])
    report = json.loads(result.output)
    assert report["backend"] == {"name": "strict", "source": "environment (MLCORE_BACKEND)",
                                 "device": "array_api_strict.Device('CPU_DEVICE')", "error": ""}
    names = {b["name"]: b for b in report["backends"]}
    assert names["numpy"]["available"] is True
    assert "sgd_update" in names["numpy"]["kernel"]
    assert any(p["distribution"] == "mlcore-strict" for p in report["plugins"])


def test_unknown_backend_exits_nonzero_with_list() -> None:
    env = {"MLCORE_BACKEND": "nope", "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "mlcore", "info"], capture_output=True,
                         text=True, env=env)
    assert out.returncode != 0
    installed = ", ".join(mlcore.backend_names())
    assert f"Unknown backend 'nope'. Installed: {installed}." in out.stderr
    assert "Traceback" not in out.stderr


def test_plugins_command() -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    rows = json.loads(result.output)
    assert {"numpy", "strict", "mlcore.activations"} <= {r["name"] for r in rows}
