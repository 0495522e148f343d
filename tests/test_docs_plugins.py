"""docs/plugins.md's optimiser section runs: the Lion example, its fit and the kit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _blocks() -> list[str]:
    text = (DOCS / "plugins.md").read_text()
    start = text.index("## 13. What an optimiser must provide")
    return re.findall(r"```python\n(.*?)```", text[start:], re.S)


@pytest.mark.slow
def test_the_optimiser_section_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Once: its kit call checks every installed backend itself."""
    blocks = _blocks()
    assert len(blocks) == 3
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102
    first, last = map(float, re.findall(r"loss ([\d.]+) -> ([\d.]+)", capsys.readouterr().out)[0])
    assert last < first
