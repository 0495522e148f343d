"""mlcore.sklearn against scikit-learn's own MLP on four data sets: test scores and fit times.

    python -m mlcore_bench.sklearn_compare [--rounds 5] [--backend numpy]

The same estimator settings (scikit-learn's defaults, ``hidden_layer_sizes=(100,)``,
``max_iter=200``, ``random_state``) on digits, wine, breast cancer (accuracy) and diabetes
(R², ``max_iter=1000``); the features standardised, a 75/25 split. Each round fits both
libraries, interleaved (mlcore, scikit-learn, then the other order) with a pause between
them (OpenBLAS threads spin on); the table shows the median fit time of each, their ratio
with its spread (min-max over rounds), the mean test score and the epochs run. The weights
start differently, so scores are compared as statistics over ``rounds`` seeds, not equal.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

DATASETS = ("digits", "wine", "breast_cancer", "diabetes")


def _data(name: str) -> tuple[Any, ...]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if name == "diabetes":
        y = (y - y.mean()) / y.std()
    Xa, Xb, ya, yb = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(Xa)
    return scaler.transform(Xa), scaler.transform(Xb), ya, yb


def _fit(make: Any, data: tuple[Any, ...]) -> tuple[float, float, int]:
    Xa, Xb, ya, yb = data
    est = make()
    start = time.perf_counter()
    est.fit(Xa, ya)
    took = time.perf_counter() - start
    return took, float(est.score(Xb, yb)), int(est.n_iter_)


def compare(name: str, rounds: int, backend: str | None) -> dict[str, Any]:
    import sklearn.neural_network as theirs

    import mlcore.sklearn as ours

    data = _data(name)
    kind = "MLPRegressor" if name == "diabetes" else "MLPClassifier"
    kw = {"max_iter": 1000 if name == "diabetes" else 200}
    rows: dict[str, list[tuple[float, float, int]]] = {"mlcore": [], "sklearn": []}
    for r in range(rounds):
        makers = {"mlcore": lambda r=r: getattr(ours, kind)(random_state=r, backend=backend,
                                                            **kw),
                  "sklearn": lambda r=r: getattr(theirs, kind)(random_state=r, **kw)}
        order = ["mlcore", "sklearn"] if r % 2 == 0 else ["sklearn", "mlcore"]
        for who in order:
            rows[who].append(_fit(makers[who], data))
            time.sleep(0.15)
    ratios = [a[0] / b[0] for a, b in zip(rows["mlcore"], rows["sklearn"], strict=True)]
    return {"data": name, "n": len(data[2]),
            **{f"{who}_{k}": f(v) for who, rs in rows.items()
               for k, f, v in (("time", statistics.median, [t for t, _, _ in rs]),
                               ("score", statistics.mean, [s for _, s, _ in rs]),
                               ("epochs", statistics.mean, [e for _, _, e in rs]))},
            "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| data | train rows | mlcore score | sklearn score | mlcore epochs | sklearn "
             "epochs | mlcore fit (s) | sklearn fit (s) | time ratio (min-max) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(
            f"| {r['data']} | {r['n']} | {r['mlcore_score']:.3f} | {r['sklearn_score']:.3f} "
            f"| {r['mlcore_epochs']:.0f} | {r['sklearn_epochs']:.0f} | {r['mlcore_time']:.3f} "
            f"| {r['sklearn_time']:.3f} | {r['ratio']:.2f} ({r['ratio_min']:.2f}-"
            f"{r['ratio_max']:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="seeds, fits per library")
    parser.add_argument("--backend", default=None, help="mlcore backend (default: current)")
    parser.add_argument("--data", nargs="*", default=list(DATASETS), choices=DATASETS)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter, both libraries
        print(table([compare(name, args.rounds, args.backend) for name in args.data]))
    print("BLAS:", ", ".join(f"{i['internal_api']} {i['num_threads']} threads"
                             for i in threadpool_info()))


if __name__ == "__main__":
    main()
