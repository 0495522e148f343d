"""fit eager against fit with the compiled step, per optimiser and model form.

``python -m mlcore_bench.compiled_fit [--backend jax] [--epochs 3] [--rounds 3]`` trains a
64-128-128-10 MLP on 1797 rows of 64 features (the digits shape; synthetic, seeded) at batch
32 for every built-in optimiser and for Dropout and BatchNorm models, with
``jit_compile=False`` and ``jit_compile=True`` interleaved, and prints per form the median
time of the first epoch (tracing included) and of each later epoch, and the speed-up of the
compiled step over the eager one on the later epochs (min-max over the rounds). Run it on a
quiet machine: nothing else running.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

FORMS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "sgd": ("sgd", {"lr": 0.05, "momentum": 0.9}, {}),
    "adam": ("adam", {"lr": 1e-3}, {}),
    "adamw": ("adamw", {"lr": 1e-3}, {}),
    "rmsprop": ("rmsprop", {"lr": 1e-3}, {}),
    "adagrad": ("adagrad", {"lr": 0.05}, {}),
    "adam+clip_norm": ("adam", {"lr": 1e-3, "clip_norm": 1.0}, {}),
    "adam+dropout": ("adam", {"lr": 1e-3}, {"dropout": 0.2}),
    "adam+batchnorm": ("adam", {"lr": 1e-3}, {"norm": "batch"}),
    "adam+sample_weight": ("adam", {"lr": 1e-3}, {"weighted": True}),
}


def _fit_times(backend: str, form: str, jit: bool, epochs: int) -> list[float]:
    import mlcore

    name, opt_kw, model_kw = FORMS[form]
    model_kw = dict(model_kw)
    weighted = model_kw.pop("weighted", False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1797, 64)).astype(np.float32)  # noqa: N806 - a batch of rows
    y = rng.integers(0, 10, size=1797)
    extra = {"sample_weight": rng.uniform(0.5, 1.5, size=1797)} if weighted else {}
    times = []
    with mlcore.use_backend(backend):
        model = mlcore.MLP([64, 128, 128, 10], output_activation="softmax", seed=0, **model_kw)
        opt = mlcore.optimizers.get_optimizer(name, model.parameters(), opt_kw.pop("lr", None))
        for key, value in opt_kw.items():
            setattr(opt, key, value)
        for epoch in range(epochs):
            began = time.perf_counter()
            model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=epoch + 1,
                      initial_epoch=epoch, batch_size=32, seed=1, verbose=False,
                      jit_compile=jit, **extra)
            model.backend.synchronize()
            times.append(time.perf_counter() - began)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forms", default=",".join(FORMS))
    args = parser.parse_args(argv)
    print(f"fit, 64-128-128-10, 1797 rows, batch 32, float32, backend {args.backend}; "
          f"{args.rounds} interleaved rounds of {args.epochs} epochs")
    print(f"{'form':22s} {'eager 1st':>10s} {'eager next':>11s} {'compiled 1st':>13s} "
          f"{'compiled next':>14s} {'speed-up [min-max]':>22s}")
    for form in args.forms.split(","):
        runs: dict[bool, list[list[float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for jit in (False, True):
                runs[jit].append(_fit_times(args.backend, form, jit, args.epochs))
        first = {j: statistics.median(r[0] for r in runs[j]) for j in runs}
        later = {j: [statistics.median(r[1:]) for r in runs[j]] for j in runs}
        ups = [e / c for e, c in zip(later[False], later[True], strict=True)]
        print(f"{form:22s} {first[False]:9.2f}s {statistics.median(later[False]):10.3f}s "
              f"{first[True]:12.2f}s {statistics.median(later[True]):13.3f}s "
              f"{statistics.median(ups):10.1f}x [{min(ups):.1f}-{max(ups):.1f}]")


if __name__ == "__main__":
    main()
