"""Breast-cancer classification, 30-16-1 with sigmoid and binary cross-entropy.

scikit-learn's bundled Wisconsin data set (569 samples, 30 features; no download), split
80/20 stratified, standardised with the training statistics. The network trains with Adam
under a cosine schedule with warm-up, reports accuracy, AUC and F1 on the training and
validation data each epoch, and stops early when the validation loss stalls, keeping its
best weights. ``--compare-torch`` trains the same network (same initial weights, schedule and
stopping rule) with PyTorch and prints both.

    python docs/examples/breast_cancer.py [--backend strict] [--compare-torch]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import mlcore
from mlcore import callbacks, schedules

EPOCHS, LR, PATIENCE = 300, 0.01, 10


def data() -> tuple[np.ndarray, ...]:
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    return ((X_tr - mean) / std).astype(np.float32), ((X_te - mean) / std).astype(np.float32), \
        y_tr.astype(np.float32), y_te.astype(np.float32)


def train_mlcore(X_tr: np.ndarray, y_tr: np.ndarray) -> tuple[mlcore.MLP, dict, float]:
    model = mlcore.MLP([30, 16, 1], activation="relu", output_activation="sigmoid", seed=0)
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE,
                                   restore_best_weights=True)
    sched = callbacks.LearningRateScheduler(schedules.cosine(LR, EPOCHS, warmup=5))
    start = time.perf_counter()
    history = model.fit(X_tr, y_tr, loss="binary_cross_entropy", epochs=EPOCHS, batch_size=32,
                        seed=0, validation_split=0.2, metrics=["accuracy", "auc", "f1"],
                        callbacks=[stop, sched], verbose=False)
    return model, history, time.perf_counter() - start


def train_torch(X_tr: np.ndarray, y_tr: np.ndarray) -> tuple[object, float]:
    """The same network, initial weights, split, schedule and stopping rule in PyTorch."""
    import torch
    from torch_baseline import train  # beside this file

    return train([30, 16, 1], X_tr, y_tr[:, None], torch.nn.BCEWithLogitsLoss(), schedules.cosine(LR, EPOCHS, warmup=5), EPOCHS,
                 PATIENCE)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    X_tr, X_te, y_tr, y_te = data()
    with mlcore.use_backend(args.backend or mlcore.get_backend().name):
        model, history, seconds = train_mlcore(X_tr, y_tr)
        test = model.evaluate(X_te, y_te, metrics=["accuracy", "auc", "f1"])
        backend = model.backend.name
    result = {"backend": backend, "epochs": len(history["loss"]),
              "stopped_early": len(history["loss"]) < EPOCHS, "seconds": seconds,
              "test_accuracy": test["accuracy"], "test_auc": test["auc"], "test_f1": test["f1"]}
    if args.compare_torch:
        import torch

        net, t_seconds = train_torch(X_tr, y_tr)
        with torch.no_grad():
            p = torch.sigmoid(net(torch.from_numpy(X_te)))[:, 0].numpy()
        result |= {"torch_seconds": t_seconds,
                   "torch_test_accuracy": float(np.mean((p > 0.5) == y_te)),
                   "torch_test_auc": mlcore.metric("auc")(p, y_te)}
    if not args.quiet:
        for k, v in result.items():
            print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {v}")
    return result


if __name__ == "__main__":
    RESULT = main()
