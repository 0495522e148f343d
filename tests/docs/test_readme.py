"""The README's example runs as printed and says what it prints."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs_and_prints_what_it_says(tmp_path: pathlib.Path) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    assert len(code.group(1).strip().splitlines()) <= 11  # "a ten-line example"
    out = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    first, loaded = (ast.literal_eval(line) for line in out.stdout.splitlines())
    assert first == loaded  # the saved file gives back the same model
    assert abs(first["accuracy"] - 0.895) <= 0.03 and first["loss"] < 0.3  # as commented
    assert (tmp_path / "model.safetensors").is_file()
