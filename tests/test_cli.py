"""The ``mlcore`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import click
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_closed_pipe_ends_quietly_with_exit_0() -> None:
    """``mlcore info | head -1``: the reader is gone before mlcore writes (as git log | head)."""
    proc = subprocess.Popen([sys.executable, "-m", "mlcore", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        out += (_commands(cmd, [*prefix, name]) if isinstance(cmd, click.Group)
                else [[*prefix, name]])
    return out


@pytest.mark.parametrize("path", _commands(main, []), ids=lambda p: " ".join(p) or "mlcore")
def test_every_help_shows_options_and_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Options:" in result.output
    assert "Example" in result.output and "  mlcore " in result.output


def test_bench_without_the_suite_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlcore_bench", None)  # as if mlcore-bench were absent
    result = CliRunner().invoke(main, ["bench", "--quick"])
    assert result.exit_code == 1
    assert result.stderr == ("Error: mlcore bench needs the benchmark suite, which is not "
                             "installed. Install it with: pip install mlcore-bench\n")


def test_bench_refuses_cases_that_name_nothing() -> None:
    result = CliRunner().invoke(main, ["bench", "--cases", ","])
    assert result.exit_code == 2
    assert "--cases" in result.output and "names no case" in result.output


def test_demo_digits_names_a_negative_seed() -> None:
    result = CliRunner().invoke(main, ["demo", "digits", "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output


def test_launch_checks_the_module_and_the_host_file(tmp_path: Any) -> None:
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    base = ["launch", "-n", "2", "--mpiexec", str(fake), "--dry-run"]
    result = CliRunner().invoke(main, [*base, "-m", "missing.module"])
    assert result.exit_code == 2 and "no module named 'missing.module'" in result.output
    hosts = tmp_path / "hosts"
    hosts.write_text("node1:4\nnode2 :x\n")
    result = CliRunner().invoke(main, [*base, "--hostfile", str(hosts), "-m", "mlcore"])
    assert result.exit_code == 2 and "line 2" in result.output
    hosts.write_text("# two hosts\nnode1:4\nnode2 slots=2\n")
    result = CliRunner().invoke(main, [*base, "--hostfile", str(hosts), "-m", "mlcore"])
    assert result.exit_code == 0, result.output
