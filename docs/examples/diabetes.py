"""Diabetes progression regression, 10-64-1 with mean squared error.

scikit-learn's bundled diabetes data set (442 patients, 10 features; no download), split
80/20, inputs and target standardised with the training statistics. The network trains with
Adam under an exponential schedule, reports MAE and R² on the training and validation data
each epoch, and stops early when the validation loss stalls, keeping its best weights; the
test MAE is given in the target's own units. ``--compare-torch`` trains the same network
(same initial weights, schedule and stopping rule) with PyTorch and prints both.

    python docs/examples/diabetes.py [--backend strict] [--compare-torch]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import mlcore
from mlcore import callbacks, schedules

EPOCHS, LR, PATIENCE = 500, 0.005, 15


def data() -> tuple[np.ndarray, ...]:
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    y_mean, y_std = y_tr.mean(), y_tr.std()
    f32 = np.float32
    return (((X_tr - mean) / std).astype(f32), ((X_te - mean) / std).astype(f32),
            ((y_tr - y_mean) / y_std).astype(f32)[:, None],
            ((y_te - y_mean) / y_std).astype(f32)[:, None], np.float64(y_std))


def train_mlcore(X_tr: np.ndarray, y_tr: np.ndarray) -> tuple[mlcore.MLP, dict, float]:
    model = mlcore.MLP([10, 64, 1], activation="relu", seed=0)
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE,
                                   restore_best_weights=True)
    sched = callbacks.LearningRateScheduler(schedules.exponential(LR, gamma=0.99))
    start = time.perf_counter()
    history = model.fit(X_tr, y_tr, loss="mse", epochs=EPOCHS, batch_size=32, seed=0,
                        validation_split=0.2, metrics=["mae", "r2"], callbacks=[stop, sched],
                        verbose=False)
    return model, history, time.perf_counter() - start


def train_torch(X_tr: np.ndarray, y_tr: np.ndarray) -> tuple[object, float]:
    """The same network, initial weights, split, schedule and stopping rule in PyTorch."""
    import torch
    from torch_baseline import train  # beside this file

    return train([10, 64, 1], X_tr, y_tr, torch.nn.MSELoss(), schedules.exponential(LR, gamma=0.99), EPOCHS,
                 PATIENCE)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    X_tr, X_te, y_tr, y_te, y_std = data()
    with mlcore.use_backend(args.backend or mlcore.get_backend().name):
        model, history, seconds = train_mlcore(X_tr, y_tr)
        test = model.evaluate(X_te, y_te, metrics=["mae", "r2"])
        backend = model.backend.name
    result = {"backend": backend, "epochs": len(history["loss"]),
              "stopped_early": len(history["loss"]) < EPOCHS, "seconds": seconds,
              "test_r2": test["r2"], "test_mae": test["mae"] * float(y_std)}
    if args.compare_torch:
        import torch

        net, t_seconds = train_torch(X_tr, y_tr)
        with torch.no_grad():
            p = net(torch.from_numpy(X_te)).numpy()
        result |= {"torch_seconds": t_seconds,
                   "torch_test_r2": mlcore.metric("r2")(p, y_te),
                   "torch_test_mae": mlcore.metric("mae")(p, y_te) * float(y_std)}
    if not args.quiet:
        for k, v in result.items():
            print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {v}")
    return result


if __name__ == "__main__":
    RESULT = main()
