"""The training toolkit's documentation runs: every Python block of its section of
docs/training.md, in order, on every backend; the worked examples in docs/examples."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

import mlcore

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks() -> list[str]:
    text = (DOCS / "training.md").read_text()
    start = text.index("## The training toolkit")
    end = text.index("\n## ", start + 10)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


@pytest.mark.slow
def test_the_toolkit_section_runs(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    namespace: dict[str, Any] = {}
    blocks = _blocks()
    assert len(blocks) >= 8
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "val_auc" in out and "Trainable parameters" in out
    assert "[0.00333, 0.00667, 0.01, 0.01]" in out


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes"])
def test_worked_examples_stop_early(backend: Any, name: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.setattr(sys, "argv", [name, "--backend", backend.name, "--quiet"])
    result = runpy.run_path(str(DOCS / "examples" / f"{name}.py"), run_name="__main__")["RESULT"]
    assert result["stopped_early"], result
    if name == "breast_cancer":
        assert result["test_accuracy"] >= 0.93 and result["test_auc"] >= 0.98
    else:
        assert result["test_r2"] >= 0.3
    assert mlcore.get_backend().name == backend.name
