# ruff: noqa: N806, E501, B023 - X is a batch; each lambda is timed inside its own iteration
"""Cost of fit's non-finite guard (mlcore.training.guards), measured in one process: run
``python .ci/guard_cost.py`` (under ``flock /tmp/mlcore-bench.lock`` on a shared machine).

Cost of the non-finite guard, measured in one process: the per-batch check and the
per-epoch copy, against the fit step they sit in (best of many repeats: robust to stalls)."""
import timeit

import numpy as np

import mlcore
from mlcore.training.fit import make_train_step
from mlcore.training.guards import NonFiniteGuard

print(open("/proc/loadavg").read().strip())
for backend in ("numpy", "strict"):
    with mlcore.use_backend(backend):
        for sizes, bs in (([2, 4, 2], 4), ([64, 128, 10], 32), ([784, 512, 512, 10], 32)):
            b = mlcore.get_backend()
            m = mlcore.MLP(sizes, seed=0)
            X = b.asarray(np.random.default_rng(0).standard_normal((bs, sizes[0])), dtype=b.xp.float32)
            y = b.asarray(np.zeros(bs, np.int64))
            step = make_train_step(m, "cross_entropy", "adam")
            value = step(X, y)
            g = NonFiniteGuard(m, X, 0.001, "raise")
            g.start_epoch(0)
            n = 200 if sizes[0] < 100 else 20
            t_step = min(timeit.repeat(lambda: step(X, y), number=n, repeat=7)) / n
            t_check = min(timeit.repeat(lambda: g(value), number=20000, repeat=7)) / 20000
            t_copy = min(timeit.repeat(lambda: (setattr(g, "_since", 8), g.start_epoch(1)), number=200, repeat=7)) / 200
            print(f"{backend:<6} {'-'.join(map(str, sizes)):<16} batch {bs:<3} step {t_step*1e6:9.1f} us  "
                  f"check/batch {t_check*1e6:5.2f} us ({t_check/t_step:6.2%})  "
                  f"copy {t_copy*1e6:7.1f} us, at most 1 per 8 batches ({t_copy/8/t_step:6.2%} per batch)")
print(open("/proc/loadavg").read().strip())
