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


SMALL = {"hidden_layer_sizes": (16,), "max_iter": 30, "learning_rate_init": 0.01}


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
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)  # float32 on torch
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


def test_same_random_state_same_predictions_and_the_aliases():
    X, y = load_iris(return_X_y=True)
    a = MLPClassifier((8,), max_iter=5, learning_rate_init=0.01, random_state=3).fit(X, y)
    b = MLPClassifier((8,), max_iter=99, epochs=5, lr=0.01, random_state=3).fit(X, y)
    c = MLPClassifier((8,), epochs=5, learning_rate_init=0.01, seed=3).fit(X, y)
    assert a.n_iter_ == b.n_iter_ == 5
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))


def test_seed_and_random_state_together_are_refused():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(InvalidParameterError, match="random_state or seed"):
        MLPClassifier(epochs=1, seed=1, random_state=2).fit(X, y)


# -- scikit-learn's MLP parameters, with its meanings (issue 24) ---------------------------
import warnings  # noqa: E402

from sklearn.datasets import load_digits, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize(("ours", "theirs"), [(MLPClassifier, SkClassifier),
                                              (MLPRegressor, SkRegressor)])
def test_every_sklearn_parameter_is_accepted_with_its_default(ours, theirs):
    mine, sk = ours().get_params(), theirs().get_params()
    sk.pop("loss", None)  # MLPRegressor(loss="poisson") is scikit-learn 1.7's; not offered
    assert {k: mine[k] for k in sk} == sk
    assert {"backend", "dtype", "epochs", "lr", "seed"} <= set(mine)


def test_lbfgs_is_refused_with_the_alternatives():
    X, y = _iris()
    with pytest.raises(InvalidParameterError, match="solver='adam'"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_fitted_attributes_as_sklearn_names_them():
    X, y = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((16, 8), max_iter=20, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(4, 16), (16, 8), (8, 3)]
    assert [b.shape for b in clf.intercepts_] == [(16,), (8,), (3,)]
    assert type(clf.coefs_[0]) is np.ndarray
    assert (clf.n_layers_, clf.n_outputs_, clf.out_activation_) == (4, 3, "softmax")
    assert clf.n_iter_ == len(clf.loss_curve_) == 20 and clf.t_ == 20 * 150
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_max_iter_without_convergence_warns_as_sklearn():
    X, y = _iris()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)


def test_tol_and_n_iter_no_change_stop_on_the_training_loss():
    X, y = _iris()
    clf = MLPClassifier((16,), max_iter=500, tol=1e-2, n_iter_no_change=3,
                        learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.n_iter_ < 500
    tail = clf.loss_curve_[-4:]
    assert all(v > clf.best_loss_ - 1e-2 for v in tail)


def test_partial_fit_in_a_loop_as_the_sklearn_tutorial():
    X, y = _iris()
    clf = MLPClassifier((16,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(60):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.n_iter_ == 1 and clf.t_ == 60 * 150 and len(clf.loss_curve_) == 60
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] and clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, y + 5)


def test_partial_fit_keeps_the_adam_state_between_calls():
    X, y = _iris()
    clf = MLPClassifier((8,), random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    first = clf._optimizer
    clf.partial_fit(X, y)
    assert clf._optimizer is first and first.state["step"] == 2


def test_warm_start_continues_from_the_last_weights():
    X, y = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((8,), max_iter=10, random_state=0, warm_start=True).fit(X, y)
        before = clf.coefs_[0]
        clf.fit(X, y)
        cold = MLPClassifier((8,), max_iter=10, random_state=0).fit(X, y)
    assert len(clf.loss_curve_) == 20 and clf.n_iter_ == 10
    assert clf.loss_curve_[10] < clf.loss_curve_[0]
    np.testing.assert_array_equal(cold.coefs_[0].shape, before.shape)
    assert not np.allclose(clf.coefs_[0], before)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X[y < 2], y[y < 2])


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = _iris()
    clf = MLPClassifier((16,), max_iter=400, early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=5, learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_ < 400
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the weights kept are the best epoch's: the held-out split scores them at the best
    from sklearn.model_selection import train_test_split
    _, X_v, _, y_v = train_test_split(X, y, random_state=0, test_size=0.2, stratify=y)
    assert clf.score(X_v, y_v) == clf.best_validation_score_


def test_early_stopping_refused_in_partial_fit():
    X, y = _iris()
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_sample_weight_two_is_the_row_repeated():
    X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
    w = np.ones(40)
    w[:10] = 2.0
    kw = {"hidden_layer_sizes": (8,), "max_iter": 20, "batch_size": 50, "alpha": 0.1,
          "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = MLPRegressor(**kw).fit(X, y / 100, sample_weight=w)
        repeated = MLPRegressor(**kw).fit(np.vstack([X, X[:10]]),
                                          np.concatenate([y, y[:10]]) / 100)
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-9)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)


def test_multilabel_y_gets_one_sigmoid_per_label():
    X, Y = make_multilabel_classification(n_samples=200, n_classes=5, random_state=0)
    clf = MLPClassifier((32,), max_iter=300, learning_rate_init=0.01, random_state=0).fit(X, Y)
    sk = SkClassifier((32,), max_iter=300, learning_rate_init=0.01, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.predict(X).shape == (200, 5)
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 5) and 0.0 <= proba.min() and proba.max() <= 1.0
    assert set(np.unique(clf.predict(X))) <= {0, 1}
    # scikit-learn's loss is summed over the labels: loss_curve_ is on its scale
    assert abs(clf.loss_curve_[0] - sk.loss_curve_[0]) < 0.5 * sk.loss_curve_[0]
    assert clf.score(X, Y) > 0.8 * sk.score(X, Y)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 10.0])
def test_alpha_means_sklearns_penalty(alpha):
    """A seed-free statistic: the penalised training loss and the weights' size at the end,
    averaged over three seeds, are scikit-learn's to a few per cent (the weights start
    differently and the batches come in another order, so equality is impossible)."""
    X, y = _iris()
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(3):
            kw = {"hidden_layer_sizes": (16,), "alpha": alpha, "max_iter": 300,
                  "learning_rate_init": 0.01, "random_state": seed}
            for est, out in ((MLPClassifier(**kw), ours), (SkClassifier(**kw), theirs)):
                est.fit(X, y)
                out.append((est.loss_curve_[-1], sum((c ** 2).sum() for c in est.coefs_)))
    (loss, size), (sk_loss, sk_size) = np.mean(ours, axis=0), np.mean(theirs, axis=0)
    if alpha:
        assert loss == pytest.approx(sk_loss, rel=0.1)
        assert size == pytest.approx(sk_size, rel=0.1)
    else:
        assert loss < 0.15 and sk_loss < 0.15


def test_sgd_schedules_as_sklearns_training_curves_example():
    """The parameter sets of scikit-learn's example "Compare Stochastic learning strategies
    for MLPClassifier" (plot_mlp_training_curves.py), on iris as there."""
    params = [
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0,
         "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9,
         "nesterovs_momentum": False, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9,
         "nesterovs_momentum": True, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0,
         "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9,
         "nesterovs_momentum": False, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9,
         "nesterovs_momentum": True, "learning_rate_init": 0.2},
        {"solver": "adam", "learning_rate_init": 0.01},
    ]
    X, y = load_iris(return_X_y=True)
    X = MinMaxScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for param in params:
            mlp = MLPClassifier(random_state=0, max_iter=400, **param).fit(X, y)
            sk = SkClassifier(random_state=0, max_iter=400, **param).fit(X, y)
            assert mlp.score(X, y) >= sk.score(X, y) - 0.1, param


def test_grid_search_as_the_sklearn_user_guide_advises():
    """"Finding a reasonable regularization parameter alpha is best done using
    GridSearchCV, usually in the range 10.0 ** -np.arange(1, 7)" (scikit-learn's user
    guide, 1.17.9 Tips on practical use), with its other parameter names."""
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X[:300])
    y = y[:300]
    grid = GridSearchCV(MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=1),
                        {"alpha": 10.0 ** -np.arange(1, 7), "learning_rate_init": [0.01]},
                        cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.85


def test_default_dtype_is_what_the_backend_computes_in(backend):
    X, y = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((4,), max_iter=2, backend=backend.name, random_state=0).fit(X, y)
    xp = backend.xp
    info = getattr(xp, "__array_namespace_info__", None)
    expected = (info().default_dtypes(device=backend.device)["real floating"] if info
                else xp.asarray(0.0).dtype)
    assert clf.model_.dtype == expected
    assert clf.predict(X).shape == (150,)


def test_pickled_estimator_predicts_and_trains_on():
    import pickle

    X, y = _iris()
    clf = MLPClassifier((8,), random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    again.partial_fit(X, y)
    assert len(again.loss_curve_) == 2
