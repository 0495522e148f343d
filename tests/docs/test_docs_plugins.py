"""docs/plugins.md's optimiser section runs: the Lion example, its fit and the kit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks() -> list[str]:
    text = (DOCS / "plugins.md").read_text()
    start = text.index("## 13. What an optimiser must provide")
    end = text.index("## 14. What a layer must provide")
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


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


# -- sections 13 to 16: every kind, run from a copy of the template outside the checkout -------
ROOT = DOCS.parent


def _kind_blocks() -> tuple[str, str]:
    """Sections 13 to 16's code: ``(plugin module code, the code using it)``; a block with
    a hook implementation belongs to the plugin module."""
    text = (DOCS / "plugins.md").read_text()
    start = text.index("## 13. What an optimiser must provide")
    blocks = re.findall(r"```python\n(.*?)```", text[start:], re.S)
    module = [b for b in blocks if "@hookimpl" in b]
    script = [b for b in blocks if "@hookimpl" not in b]
    return "\n\n".join(module), "\n\n".join(script)


def _outside_copy(tmp: Path) -> Path:
    """plugins/template copied to ``tmp``, "installed" there by a dist-info folder (its
    entry point found through sys.path, as pip would leave it), with the docs' examples."""
    import shutil

    copy = tmp / "template"
    shutil.copytree(ROOT / "plugins/template", copy,
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    info = copy / "mlcore_plugin_template-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlcore-plugin-template\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[mlcore]\nplugin_template = mlcore_plugin_template\n")
    module, script = _kind_blocks()
    init = copy / "mlcore_plugin_template" / "__init__.py"
    init.write_text(init.read_text() + "\n\n# docs/plugins.md, sections 13 to 16\n" + module)
    (copy / "examples.py").write_text(
        "import mlcore_plugin_template as _plugin\n\nglobals().update(vars(_plugin))\n\n"
        + script)
    return copy


@pytest.mark.parametrize("x64", ["0", "1"], ids=["jax-32-bit", "jax-x64"])
def test_every_kind_runs_outside_the_checkout(tmp_path: Path, x64: str) -> None:
    """The five kinds' examples and the template's own tests, from a folder outside the
    checkout (no conftest of ours), with JAX's 64-bit mode off and on."""
    import os
    import subprocess
    import sys

    copy = _outside_copy(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLCORE_", "PYTEST_", "JAX_ENABLE"))}
    env.update(JAX_ENABLE_X64=x64, JAX_PLATFORMS="cpu", PYTHONPATH=str(copy))
    printed = ""
    for args in ([sys.executable, "examples.py"],
                 [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                  "no:xdist", "tests"]):
        out = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, f"{args[1:]}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        printed += out.stdout
    assert re.search(r"count_error [\d.]+ -> [\d.]+", printed), printed[-2000:]
    assert "passed" in printed
