"""The digits example, data-parallel: ``mlcore launch -n 2 -m mlcore.distributed.digits``.

The same model, data split, optimiser and seed as ``mlcore demo digits``, with a global
batch of 64 shared by the processes (``64 // size`` rows each), so any number of processes
follows the single-process run up to float rounding. Rank 0 prints the test accuracy and
whether every process ended with the same weights (their SHA-256, compared).
"""

from __future__ import annotations

import hashlib
import sys
import time

from .. import distributed
from ..demo import DIGITS_SIZES, load_digits_split
from ..models.sequential import MLP

__all__ = ["main", "weights_digest"]


def weights_digest(model: MLP) -> str:
    """SHA-256 of every parameter's bytes, in order (equal iff the weights are equal)."""
    h = hashlib.sha256()
    for _, p in model.named_parameters():
        h.update(model.backend.to_numpy(p.value).tobytes())
    return h.hexdigest()


def main(epochs: int = 15, seed: int = 0, global_batch: int = 64, lr: float = 2e-3) -> int:
    comm = distributed.init()
    X_train, X_test, y_train, y_test = load_digits_split()
    model = MLP(list(DIGITS_SIZES), activation="relu", output_activation="softmax", seed=seed)
    start = time.perf_counter()
    model.fit(X_train, y_train, loss="cross_entropy", optimizer="adam", lr=lr, epochs=epochs,
              batch_size=max(1, global_batch // comm.size), seed=seed, verbose=False,
              distributed=True)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    digests = comm.allgather_object(weights_digest(model))
    same = len(set(digests)) == 1
    if comm.rank == 0:
        print(f"digits: {comm.size} processes x batch {max(1, global_batch // comm.size)}, "
              f"adam, {epochs} epochs, backend {model.backend.name}")
        print(f"test accuracy {accuracy:.2%}, training time {seconds:.2f} s")
        print(f"weights identical on all {comm.size} processes: {same} "
              f"(sha256 {digests[0][:16]}...)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
