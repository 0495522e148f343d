"""mlcore.sklearn: scikit-learn's own estimator checks, Pipeline and GridSearchCV."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlcore.errors import InvalidParameterError  # noqa: E402
from mlcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Checks expected to fail, with the reason (the same list is in docs/training.md).
EXPECTED_FAILED: dict[str, dict[str, str]] = {"MLPClassifier": {}, "MLPRegressor": {}}


def _expected(estimator: object) -> dict[str, str]:
    return EXPECTED_FAILED[type(estimator).__name__]


SMALL = {"hidden_layer_sizes": (16,), "epochs": 30, "lr": 0.01}


# On numpy only: the checks exercise scikit-learn's side of the contract (strict would take 4x
# as long); the Pipeline test below runs on every backend.
@parametrize_with_checks([MLPClassifier(**SMALL), MLPRegressor(**SMALL)],
                         expected_failed_checks=_expected)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_importing_mlcore_does_not_import_sklearn():
    code = "import sys, mlcore; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pipeline_with_scaler_classifies_iris(backend):
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(),
                         MLPClassifier((16,), epochs=60, lr=0.01, random_state=0,
                                       backend=backend.name))
    pipe.fit(X, y)
    proba = pipe.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert set(pipe.predict(X)) <= {0, 1, 2}
    assert pipe.score(X, y) > 0.9


def test_string_labels_and_binary_probabilities():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "other"])[(y > 0).astype(int)]
    clf = MLPClassifier((8,), epochs=40, lr=0.02, random_state=1).fit(X, names)
    assert list(clf.classes_) == ["other", "setosa"]
    assert clf.predict_proba(X).shape == (150, 2)
    assert clf.score(X, names) > 0.95


def test_grid_search_over_width_and_lr():
    X, y = make_regression(n_samples=80, n_features=4, noise=0.1, random_state=0)
    y = y / y.std()
    grid = GridSearchCV(MLPRegressor(epochs=40, random_state=0),
                        {"hidden_layer_sizes": [(4,), (16,)], "lr": [0.001, 0.02]}, cv=2)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"hidden_layer_sizes", "lr"}
    assert grid.best_params_["lr"] == 0.02
    assert grid.best_estimator_.score(X, y) > 0.9


def test_same_random_state_same_predictions_and_max_iter_alias():
    X, y = load_iris(return_X_y=True)
    a = MLPClassifier((8,), epochs=5, random_state=3).fit(X, y)
    b = MLPClassifier((8,), max_iter=5, epochs=99, random_state=3).fit(X, y)
    c = MLPClassifier((8,), epochs=5, seed=3).fit(X, y)
    assert a.n_iter_ == b.n_iter_ == 5
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))


def test_seed_and_random_state_together_are_refused():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(InvalidParameterError, match="random_state or seed"):
        MLPClassifier(epochs=1, seed=1, random_state=2).fit(X, y)
