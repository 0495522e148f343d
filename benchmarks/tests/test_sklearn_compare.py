"""The scikit-learn comparison script: one round on the smallest data set, and its table."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from mlcore_bench import sklearn_compare  # noqa: E402


def test_one_round_on_wine_prints_a_table(capsys):
    sklearn_compare.main(["--rounds", "1", "--data", "wine"])
    out = capsys.readouterr().out
    assert out.startswith("| data |") and "| wine | 133 |" in out and "BLAS:" in out
    row = sklearn_compare.compare("wine", 1, None)
    assert row["mlcore_score"] > 0.9 and row["sklearn_score"] > 0.9
