"""Files written before the package was layered (commit 1e6bfc0: flat modules, the old
optimiser classes) still load: the model predicts as it did, and a checkpoint resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mlcore

DATA = Path(__file__).parent / "data"


def test_a_model_file_from_before_the_move_loads_and_predicts_the_same() -> None:
    with mlcore.use_backend("numpy"):
        model = mlcore.load(DATA / "mlp-v0.1-1e6bfc0.safetensors")
        x = np.load(DATA / "mlp-v0.1-1e6bfc0-X.npy")
        want = np.load(DATA / "mlp-v0.1-1e6bfc0-predict.npy")
        assert isinstance(model, mlcore.MLP)
        np.testing.assert_array_equal(np.asarray(model.predict(x)), want)


def test_a_checkpoint_from_before_the_move_resumes() -> None:
    with mlcore.use_backend("numpy"):
        ckpt = mlcore.load_checkpoint(DATA / "checkpoint-v0.1-1e6bfc0.safetensors")
        assert isinstance(ckpt.optimizer, mlcore.Adam) and ckpt.epoch == 2
        assert ckpt.optimizer.state["step"] == 10  # 2 epochs of 5 batches
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, size=40)
        history = ckpt.model.fit(x, y, loss="cross_entropy", optimizer=ckpt.optimizer,
                                 epochs=3, initial_epoch=2, batch_size=8, verbose=False)
        assert len(history["loss"]) == 1 and ckpt.optimizer.state["step"] == 15
