"""The PyTorch side of the worked examples' comparison (``--compare-torch``).

The same network from mlcore's initial weights, trained as mlcore's ``fit`` trains it: the
same validation split (the last 20%), batches of 32 in a fresh order each epoch, Adam with
the learning rate set from the same schedule each epoch, and early stopping on the
validation loss with the best weights restored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import mlcore


def train(sizes: list[int], X_tr: np.ndarray, y_tr: np.ndarray, loss_fn: Any,
          schedule: Callable[[int], float], epochs: int, patience: int) -> tuple[Any, float]:
    """``(network, seconds)``; the network is ``Linear, ReLU, Linear``."""
    net = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.ReLU(),
                              torch.nn.Linear(sizes[1], sizes[2]))
    start_weights = mlcore.MLP(sizes, activation="relu", seed=0).parameters()
    with torch.no_grad():
        for p, q in zip(net.parameters(), start_weights, strict=True):
            p.copy_(torch.from_numpy(np.asarray(mlcore.get_backend().to_numpy(q.value))))
    cut = int(len(X_tr) * 0.8)
    Xt, yt = torch.from_numpy(X_tr[:cut]), torch.from_numpy(y_tr[:cut])
    Xv, yv = torch.from_numpy(X_tr[cut:]), torch.from_numpy(y_tr[cut:])
    opt = torch.optim.Adam(net.parameters(), lr=schedule(0))
    best, best_state, wait, g = float("inf"), None, 0, torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for epoch in range(epochs):
        opt.param_groups[0]["lr"] = schedule(epoch)
        for idx in torch.randperm(cut, generator=g).split(32):
            opt.zero_grad()
            loss_fn(net(Xt[idx]), yt[idx]).backward()
            opt.step()
        with torch.no_grad():
            val = float(loss_fn(net(Xv), yv))
        if val < best:
            best, wait = val, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            wait += 1
            if wait >= patience:
                break
    net.load_state_dict(best_state)
    return net, time.perf_counter() - start
