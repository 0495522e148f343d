"""The documentation site builds with warnings as errors and documents every public name."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import mlcore

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "SITE_DIR": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(ROOT / ".ci" / "docs.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_every_public_name_has_a_reference_entry(site: pathlib.Path) -> None:
    pages = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    anchors = set(re.findall(r'id="(mlcore\.[\w.]+)"', pages))
    documented = {a.rsplit(".", 1)[1] for a in anchors} | {a for a in anchors}
    missing = [name for name in mlcore.__all__ if name != "__version__"
               and name not in documented and f"mlcore.{name}" not in documented]
    assert missing == []
    for name in ("MLPClassifier", "partial_fit", "plot_history", "EarlyStopping"):
        assert name in pages


def test_guides_and_reference_are_cross_linked(site: pathlib.Path) -> None:
    index = (site / "index.html").read_text()
    assert 'href="api/sklearn/' in index and 'href="training/' in index
    assert (site / "training" / "index.html").exists()
