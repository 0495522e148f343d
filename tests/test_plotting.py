"""Learning curves: mlcore.plot_history, the demo's --plot and mlcore plot-history."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.callbacks import CSVLogger, EarlyStopping
from mlcore.errors import InvalidParameterError
from mlcore.plotting import read_history

pytest.importorskip("matplotlib")


def _trained(tmp_path: Any) -> tuple[dict[str, list[float]], EarlyStopping]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("int64")
    model = mlcore.MLP([6, 32, 2], output_activation="softmax", seed=0)
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    history = model.fit(x, y, loss="cross_entropy", lr=0.01, epochs=12, validation_split=0.3,
                        metrics=["auc"], verbose=False,
                        callbacks=[CSVLogger(tmp_path / "log.csv"), stop])
    return history, stop


def test_plot_history_draws_every_metric_with_its_val_twin(tmp_path: Any) -> None:
    history, stop = _trained(tmp_path)
    fig = mlcore.plot_history(history, tmp_path / "curves.png", best_epoch=stop)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy", "auc"]
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[:2] == ["loss", "val_loss"] and labels[2].startswith("kept (epoch")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_csvlogger_file_reads_back_as_the_history(tmp_path: Any) -> None:
    history, _ = _trained(tmp_path)
    back = read_history(tmp_path / "log.csv")
    assert list(back) == list(history)
    np.testing.assert_allclose(back["val_loss"], history["val_loss"], rtol=1e-6)
    fig = mlcore.plot_history(tmp_path / "log.csv")
    assert len(fig.axes) == 3


def test_plot_history_refuses_what_is_no_history() -> None:
    with pytest.raises(InvalidParameterError, match="'loss' list"):
        mlcore.plot_history({"accuracy": [0.5]})
    with pytest.raises(InvalidParameterError, match="EarlyStopping"):
        mlcore.plot_history({"loss": [1.0]}, best_epoch="last")


def test_missing_matplotlib_names_the_extra(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"mlcore\[plot\]"):
        mlcore.plot_history({"loss": [1.0, 0.5]})


def test_importing_mlcore_does_not_import_matplotlib() -> None:
    code = "import sys, mlcore; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_cli_plot_history_and_demo_plot(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from mlcore.cli import main

    _trained(tmp_path)
    result = CliRunner().invoke(main, ["plot-history", str(tmp_path / "log.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "log.png").exists()
    pytest.importorskip("sklearn")
    png = tmp_path / "digits.png"
    result = CliRunner().invoke(main, ["demo", "digits", "--epochs", "2", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "learning curves saved" in result.output and png.exists()
