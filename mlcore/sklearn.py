"""scikit-learn estimators built on :class:`mlcore.MLP` and :func:`mlcore.training.fit.fit`.

``MLPClassifier`` and ``MLPRegressor`` take the constructor parameters of
``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` with the same meanings and
defaults (``hidden_layer_sizes``, ``activation``, ``solver`` ("adam" or "sgd"), ``alpha``,
``batch_size``, ``learning_rate``, ``learning_rate_init``, ``power_t``, ``max_iter``,
``shuffle``, ``random_state``, ``tol``, ``verbose``, ``warm_start``, ``momentum``,
``nesterovs_momentum``, ``early_stopping``, ``validation_fraction``, ``beta_1``, ``beta_2``,
``epsilon``, ``n_iter_no_change``, ``max_fun``), have ``partial_fit`` and
``fit(X, y, sample_weight=)``, take multilabel ``y`` (one sigmoid output per label, as
scikit-learn's) and set the same fitted attributes (``loss_curve_``, ``best_loss_``,
``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``t_``, ``loss_``,
``coefs_``/``intercepts_`` as NumPy arrays of shape (in, out) and (out,), ``n_layers_``,
``n_outputs_``, ``out_activation_``). So a grid, a ``partial_fit`` loop or an
``early_stopping=True`` fit written for scikit-learn runs unchanged; how ``alpha`` and the
solvers are matched is in :mod:`mlcore._sklearn_solver`. ``solver="lbfgs"`` is refused
(mlcore trains by mini-batches).

Beside them, mlcore's own: ``backend`` (an mlcore backend name; ``None``: the current
choice, see :func:`mlcore.get_backend`), ``dtype`` (``None``: the backend's default
floating dtype, float64 on NumPy, float32 on JAX without 64-bit mode and on PyTorch), and
the aliases ``epochs`` (for ``max_iter``), ``lr`` (for ``learning_rate_init``) and ``seed``
(for ``random_state``), which win when given. Weights start Glorot-uniform as
scikit-learn's do (its intercepts start uniform too, mlcore's at zero).

``sample_weight`` is rescaled to mean 1 over the training rows, so the loss is the weighted
mean ``sum w_i l_i / sum w_i`` scikit-learn uses (over the data set; scikit-learn divides
per batch). scikit-learn is an optional extra (``pip install 'mlcore[sklearn]'``); this
module and :mod:`mlcore._sklearn_solver` are the only ones that import it, and
``import mlcore`` does not import this module. Inputs are checked by scikit-learn
(``validate_data``: finite, 2-D, dense) and converted once to the model's backend and
dtype; outputs come back as NumPy arrays.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from numbers import Integral
from typing import Any

from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._sklearn_solver import EpochBook, check_choice, make_solver
from .backend import get_backend, use_backend
from .errors import InvalidParameterError
from .models.sequential import MLP
from .training.fit import fit as train
from .types import ArrayLike

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("adam", "sgd")


def _dense_rows(X: Any) -> Any:
    """A SciPy sparse ``X`` as a dense array (mlcore's layers take dense arrays)."""
    return X.toarray() if hasattr(X, "toarray") else X


class _MLPEstimator(BaseEstimator):  # type: ignore[misc]  # sklearn ships no types
    """What the classifier and the regressor share: the parameters, the network, the fit."""

    _loss_ratio = 1.0  # mlcore's loss / scikit-learn's (see mlcore._sklearn_solver)
    _report = 1.0  # scikit-learn's reported loss / mlcore's

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: bool = False,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000,
                 backend: str | None = None, dtype: Any = None, epochs: int | None = None,
                 lr: float | None = None, seed: int | None = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.epochs = epochs
        self.lr = lr
        self.seed = seed

    # -- the settings ----------------------------------------------------------------------
    def _seed(self) -> int:
        """One integer seed: ``random_state`` (scikit-learn's name) or ``seed`` (mlcore's)."""
        if self.random_state is not None and self.seed is not None:
            raise InvalidParameterError(
                f"Pass random_state or seed, not both (received random_state="
                f"{self.random_state!r}, seed={self.seed!r}); they are the same setting.",
                self.seed)
        chosen = self.seed if self.random_state is None else self.random_state
        if isinstance(chosen, Integral) and not isinstance(chosen, bool):
            return int(chosen)
        return int(check_random_state(chosen).randint(2**31 - 1))

    def _max_iter(self) -> int:
        return int(self.max_iter if self.epochs is None else self.epochs)

    def _lr(self) -> float:
        return float(self.learning_rate_init if self.lr is None else self.lr)

    def _hidden(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        found = [sizes] if isinstance(sizes, Integral) else list(sizes)
        if any(not isinstance(h, Integral) or h <= 0 for h in found):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {found}.")
        return [int(h) for h in found]

    def _check_settings(self) -> None:
        if self.solver == "lbfgs":
            raise InvalidParameterError(
                "solver='lbfgs' is not available in mlcore, which trains by mini-batches "
                "(scikit-learn's L-BFGS needs the whole data set per step). Use "
                "solver='adam' (the default) or solver='sgd'; for a small data set set "
                "batch_size to the number of samples.", self.solver)
        check_choice("solver", self.solver, _SOLVERS)
        check_choice("activation", self.activation, tuple(_ACTIVATIONS))
        check_choice("learning_rate", self.learning_rate, ("constant", "invscaling",
                                                           "adaptive"))
        if not (0.0 <= float(self.validation_fraction) < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}.")
        if self.alpha < 0 or self._lr() <= 0 or self._max_iter() < 1:
            raise ValueError(
                f"alpha must be >= 0, learning_rate_init > 0 and max_iter >= 1; got "
                f"alpha={self.alpha!r}, learning_rate_init={self._lr()!r}, "
                f"max_iter={self._max_iter()!r}.")

    def _batch(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n or self.batch_size < 1:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", stacklevel=3)
        return int(min(max(int(self.batch_size), 1), n))

    def _dtype(self) -> Any:
        """The parameters' dtype: ``dtype``, or the backend's default floating dtype."""
        backend = get_backend(self.backend)
        if self.dtype is not None:
            return self.dtype
        xp = backend.xp
        info = getattr(xp, "__array_namespace_info__", None)
        if info is not None:
            return info().default_dtypes(device=backend.device)["real floating"]
        return xp.asarray(0.0).dtype

    # -- training --------------------------------------------------------------------------
    def _initialize(self, n_in: int, n_out: int, seed: int) -> None:
        """A fresh network and fresh fitted attributes (scikit-learn's ``_initialize``)."""
        sizes = [n_in, *self._hidden(), n_out]
        with use_backend(self.backend) if self.backend is not None else nullcontext():
            self.model_ = MLP(sizes, activation=_ACTIVATIONS[self.activation],
                              output_activation=self._output_activation(),
                              init="glorot_uniform", seed=seed, dtype=self._dtype())
        self.n_iter_, self.t_, self.n_outputs_ = 0, 0, n_out
        self.n_layers_ = len(sizes)
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        self._optimizer: Any = None
        self._best_state: Any = None
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = float("-inf")
            self.best_loss_: float | None = None
        else:
            self.best_loss_, self.validation_scores_ = float("inf"), None
            self.best_validation_score_ = None

    def _train(self, X: Any, target: Any, y: Any, sample_weight: Any, incremental: bool,
               seed: int) -> None:
        """Train ``model_`` on ``X`` and ``target`` (the loss's form; ``y`` is what the
        validation score compares with) for ``max_iter`` epochs, or one (``incremental``)."""
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        mean_w = 1.0  # scikit-learn divides the penalty by the batch's weight sum
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
            mean_w = float(sample_weight.mean()) or 1.0
            sample_weight = sample_weight / mean_w
        validation = None
        if self.early_stopping:
            X, target, sample_weight, validation = self._split(X, target, y, sample_weight,
                                                               seed)
        n = X.shape[0]
        batch = self._batch(n)
        if not incremental or self._optimizer is None:
            self._optimizer = make_solver(self, self.model_.parameters(), self._lr(),
                                          self._loss_ratio, batch * mean_w)
        book = EpochBook(self, n, n * mean_w, -(-n // batch), validation, self._report)
        self.n_iter_ = 0
        epochs = 1 if incremental else self._max_iter()
        train(self.model_, X, target, loss=self._loss(), optimizer=self._optimizer,
              epochs=epochs, batch_size=batch, shuffle=bool(self.shuffle), seed=seed,
              sample_weight=sample_weight, callbacks=[book], verbose=False)
        if self.early_stopping and getattr(self, "_best_state", None) is not None:
            self.model_.load_state_dict(self._best_state)
            self._best_state = None
        if not incremental and not book.stopped and self.n_iter_ == self._max_iter():
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self._max_iter()}) "
                          f"reached and the optimization hasn't converged yet.",
                          ConvergenceWarning, stacklevel=3)

    def _split(self, X: Any, target: Any, y: Any, sample_weight: Any,
               seed: int) -> tuple[Any, Any, Any, Any]:
        """scikit-learn's early-stopping split (stratified for single-output classifiers)
        and the validation score of a model on the held-out part."""
        stratify = y if self._stratify() else None
        parts = [X, target, y] + ([] if sample_weight is None else [sample_weight])
        split = train_test_split(*parts, random_state=seed, test_size=self.validation_fraction,
                                 stratify=stratify)
        X_t, X_v, t_t, _, _, y_v = split[:6]
        w_t, w_v = (None, None) if sample_weight is None else split[6:8]
        if X_v.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")

        def score(model: Any) -> float:
            out = model.backend.to_numpy(model.predict(X_v))
            return float(self._score_outputs(out.reshape(X_v.shape[0], -1), y_v, w_v))

        return X_t, t_t, w_t, score

    def _stratify(self) -> bool:
        return False

    def _output_activation(self) -> str | None:
        return None

    def _loss(self) -> str:
        return "mse"

    def _score_outputs(self, out: Any, y: Any, sample_weight: Any) -> float:
        raise NotImplementedError

    # -- the fitted network as scikit-learn shows it ----------------------------------------
    def _output(self, X: Any) -> Any:
        """The network's output for ``X`` as a 2-D NumPy array (after the usual checks)."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=("float64", "float32"),
                             accept_sparse=("csr", "csc"))
        X = _dense_rows(X)
        model = self.model_
        out = model.backend.to_numpy(model.predict(X, batch_size=None))
        return out.astype("float64").reshape(X.shape[0], -1)

    def _dense(self) -> list[Any]:
        if "model_" not in self.__dict__:
            raise AttributeError("This estimator is not fitted yet: coefs_ and intercepts_ "
                                 "exist after fit.")
        return [layer for layer in self.model_.layers if hasattr(layer, "in_features")]

    def __getstate__(self) -> dict[str, Any]:
        """The estimator without its optimiser (which holds its array module); a
        ``partial_fit`` after unpickling starts a fresh one, as a new ``fit`` does."""
        state = dict(super().__getstate__())
        state["_optimizer"] = None
        return state

    @property
    def coefs_(self) -> list[Any]:
        """The weight matrices as NumPy arrays of shape (in, out), as scikit-learn's."""
        to = self.model_.backend.to_numpy if self._dense() else None
        return [to(layer.weight.value).T.copy() for layer in self._dense()]  # type: ignore[misc]

    @property
    def intercepts_(self) -> list[Any]:
        """The bias vectors as NumPy arrays of shape (out,), as scikit-learn's."""
        to = self.model_.backend.to_numpy if self._dense() else None
        return [to(layer.bias.value).copy() for layer in self._dense()]  # type: ignore[misc]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # accepted, and made dense
        return tags

    def _solver_ok(self) -> bool:
        if self.solver not in _SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True


class MLPClassifier(ClassifierMixin, _MLPEstimator):  # type: ignore[misc]  # sklearn ships no types
    """A multi-layer perceptron classifier with scikit-learn's parameters, trained by mlcore.

    Two classes: one sigmoid output trained with ``binary_cross_entropy``; more: a softmax
    output trained with ``cross_entropy`` (fused with the loss, eq. 1.15/1.16); a multilabel
    indicator ``y``: one sigmoid output per label (``out_activation_`` is ``"logistic"`` or
    ``"softmax"`` as in scikit-learn). Labels may be any values scikit-learn accepts
    (``classes_`` holds them, sorted). The parameters are described in :mod:`mlcore.sklearn`
    and mean what they mean in ``sklearn.neural_network.MLPClassifier``.
    """

    def _output_activation(self) -> str | None:
        return "softmax" if self._multiclass else "sigmoid"

    def _loss(self) -> str:
        return "cross_entropy" if self._multiclass else "binary_cross_entropy"

    def _stratify(self) -> bool:
        return not self._multilabel

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike = None) -> MLPClassifier:
        """Train for up to ``max_iter`` epochs (from the current weights with
        ``warm_start=True``); returns ``self``."""
        return self._fit(X, y, sample_weight, incremental=False, classes=None)

    @available_if(_MLPEstimator._solver_ok)  # type: ignore[untyped-decorator]
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike = None,
                    classes: ArrayLike = None) -> MLPClassifier:
        """One epoch over ``(X, y)``; ``classes`` (every label there will be) is needed on
        the first call."""
        if "model_" not in self.__dict__ and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
             classes: Any) -> MLPClassifier:
        self._check_settings()
        first = "model_" not in self.__dict__ or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, multi_output=True, dtype=("float64", "float32"),
                             accept_sparse=("csr", "csc"), reset=first)
        X = _dense_rows(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self._labels(y, first, incremental, classes)
        Y = self._label_binarizer.transform(y)
        target = Y.argmax(axis=1).astype("int64") if self._multiclass else Y.astype("float64")
        seed = self._seed()
        if first:
            self._initialize(X.shape[1], Y.shape[1], seed)
        self._train(X, target if target.ndim == 1 or self._multilabel else target.ravel(), y,
                    sample_weight, incremental, seed)
        return self

    def _labels(self, y: Any, first: bool, incremental: bool, classes: Any) -> None:
        """``classes_`` and the binarizer (scikit-learn's ``_validate_input`` rules)."""
        multilabel = type_of_target(y).startswith("multilabel")
        if first:
            binarizer = LabelBinarizer()
            binarizer.fit(y if classes is None or multilabel else classes)
            if len(binarizer.classes_) < 2 and not multilabel:
                raise ValueError(
                    f"MLPClassifier needs samples of at least 2 classes in y; received 1 "
                    f"class ({binarizer.classes_[0]!r}). Pass data with two or more labels.")
            self._label_binarizer, self.classes_ = binarizer, binarizer.classes_
            self._multilabel = multilabel
            self._multiclass = not multilabel and len(binarizer.classes_) > 2
            k = len(binarizer.classes_) if multilabel else 1
            self._loss_ratio, self._report = 1.0 / k, float(k)
            return
        found = unique_labels(y)
        if self.warm_start and not incremental:
            if set(found) != set(self.classes_):
                raise ValueError(
                    f"warm_start can only be used where `y` has the same classes as in the "
                    f"previous call to fit. Previously got {self.classes_}, `y` has {found}")
        elif len(set(found) - set(self.classes_)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {found}.")

    @property
    def out_activation_(self) -> str:
        """``"softmax"`` for more than two classes, else ``"logistic"`` (scikit-learn's)."""
        check_is_fitted(self, "model_")
        return "softmax" if self._multiclass else "logistic"

    def _score_outputs(self, out: Any, y: Any, sample_weight: Any) -> float:
        return float(accuracy_score(y, self._decode(out), sample_weight=sample_weight))

    def _decode(self, out: Any) -> Any:
        return self._label_binarizer.inverse_transform(
            out[:, 0] if out.shape[1] == 1 else out)

    def predict_proba(self, X: ArrayLike) -> Any:
        """Class probabilities, one column per entry of ``classes_`` (rows sum to 1, except
        for multilabel ``y``: one probability per label)."""
        out = self._output(X)
        if out.shape[1] > 1:
            return out
        return array_namespace(out).concat([1.0 - out, out], axis=1)

    def predict_log_proba(self, X: ArrayLike) -> Any:
        """The logarithm of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return array_namespace(proba).log(proba)

    def predict(self, X: ArrayLike) -> Any:
        """The most probable class of each row (multilabel: the labels above 1/2)."""
        return self._decode(self._output(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MLPEstimator):  # type: ignore[misc]  # sklearn ships no types
    """A multi-layer perceptron regressor with scikit-learn's parameters, trained by mlcore.

    A linear output per target trained with ``mse`` (scikit-learn's half squared error
    times two; ``loss_curve_`` shows scikit-learn's value); ``y`` may be (n,) or
    (n, targets). The parameters are those of :class:`MLPClassifier`.
    """

    out_activation_ = "identity"

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike = None) -> MLPRegressor:
        """Train for up to ``max_iter`` epochs (from the current weights with
        ``warm_start=True``); returns ``self``."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_MLPEstimator._solver_ok)  # type: ignore[untyped-decorator]
    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike = None) -> MLPRegressor:
        """One epoch over ``(X, y)``."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> MLPRegressor:
        self._check_settings()
        first = "model_" not in self.__dict__ or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=("float64", "float32"),
                             accept_sparse=("csr", "csc"), reset=first)
        X = _dense_rows(X)
        target = y.astype("float64").reshape(len(y), -1)
        k = target.shape[1]
        self._loss_ratio, self._report = 2.0 / k, 0.5
        seed = self._seed()
        if first:
            self._initialize(X.shape[1], k, seed)
        elif k != self.n_outputs_:
            raise ValueError(f"y has {k} targets; this regressor was fitted on "
                             f"{self.n_outputs_}. Fit it again with warm_start=False.")
        self._train(X, target, target, sample_weight, incremental, seed)
        return self

    def _score_outputs(self, out: Any, y: Any, sample_weight: Any) -> float:
        return float(r2_score(y, out, sample_weight=sample_weight))

    def predict(self, X: ArrayLike) -> Any:
        """The predicted targets: shape (n,) for one target, else (n, targets)."""
        out = self._output(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
