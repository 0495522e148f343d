"""scikit-learn estimators built on :class:`mlcore.MLP` and :func:`mlcore.training.fit.fit`.

``MLPClassifier`` and ``MLPRegressor`` follow scikit-learn's estimator contract (``fit``,
``predict``, ``predict_proba`` for the classifier, ``score``, ``get_params`` /
``set_params``), so they work inside ``Pipeline`` and ``GridSearchCV``. scikit-learn is an
optional extra (``pip install scikit-learn``); this module is the only one that imports it,
and ``import mlcore`` does not import this module.

Inputs are checked and converted by scikit-learn (``validate_data``: float64, finite, 2-D,
dense), then trained on the chosen mlcore ``backend`` (``None``: the current choice, see
:func:`mlcore.get_backend`); outputs come back as NumPy arrays.
"""

from __future__ import annotations

from contextlib import nullcontext
from numbers import Integral
from typing import Any

from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .backend import use_backend
from .errors import InvalidParameterError
from .models.sequential import MLP

__all__ = ["MLPClassifier", "MLPRegressor"]


class _MLPEstimator(BaseEstimator):  # type: ignore[misc]  # sklearn ships no types
    """What the classifier and the regressor share: the parameters, the network, the fit."""

    _output_activation: str | None = None
    _loss = "mse"

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 epochs: int = 200, max_iter: int | None = None, batch_size: int = 32,
                 optimizer: str = "adam", lr: float | None = None, seed: int | None = None,
                 random_state: Any = None, backend: str | None = None,
                 dtype: str = "float64", shuffle: bool = True, verbose: bool = False) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.epochs = epochs
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.seed = seed
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.shuffle = shuffle
        self.verbose = verbose

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

    def _epochs(self) -> int:
        return self.epochs if self.max_iter is None else self.max_iter

    def _hidden(self) -> list[Any]:
        sizes = self.hidden_layer_sizes
        return [sizes] if isinstance(sizes, Integral) else list(sizes)

    def _train(self, X: Any, y: Any, n_out: int) -> None:
        """Build a fresh MLP for ``X`` and train it on ``y`` (already in the loss's form)."""
        seed = self._seed()
        with use_backend(self.backend) if self.backend is not None else nullcontext():
            sizes = [X.shape[1], *self._hidden(), n_out]
            model = MLP(sizes, activation=self.activation,
                        output_activation=self._output_activation, seed=seed, dtype=self.dtype)
            history = model.fit(X, y, loss=self._loss, optimizer=self.optimizer, lr=self.lr,
                                epochs=self._epochs(), batch_size=self.batch_size,
                                shuffle=self.shuffle, seed=seed, verbose=self.verbose)
        self.model_ = model
        self.loss_curve_ = list(history["loss"])
        self.n_iter_ = len(self.loss_curve_)

    def _output(self, X: Any) -> Any:
        """The network's output for ``X`` as a 2-D NumPy array (after the usual checks)."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype="float64")
        model = self.model_
        out = model.predict(X, batch_size=None)
        return model.backend.to_numpy(out).astype("float64").reshape(X.shape[0], -1)


class MLPClassifier(ClassifierMixin, _MLPEstimator):  # type: ignore[misc]  # sklearn ships no types
    """A multi-layer perceptron classifier (scikit-learn estimator) trained by mlcore.

    Two classes: one sigmoid output trained with ``binary_cross_entropy``; more: a softmax
    output trained with ``cross_entropy`` (fused with the loss, eq. 1.15/1.16). Labels may be
    any values scikit-learn accepts (``classes_`` holds them, sorted).
    ``hidden_layer_sizes`` (a tuple of widths, or one int), ``activation`` (any registered
    activation), ``epochs`` (``max_iter`` is scikit-learn's name for it and wins when
    given), ``batch_size``, ``optimizer`` and ``lr`` are passed to :func:`mlcore.training.fit.fit`;
    ``random_state`` (or ``seed``) seeds the weights and the shuffling; ``backend`` names an
    mlcore backend (``None``: the current one); ``dtype`` the parameters' dtype.
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        X, y = validate_data(self, X, y, dtype="float64")
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        codes = encoder.transform(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes in y; received 1 class "
                f"({self.classes_[0]!r}). Pass data with two or more labels.")
        binary = len(self.classes_) == 2
        self._output_activation = "sigmoid" if binary else "softmax"
        self._loss = "binary_cross_entropy" if binary else "cross_entropy"
        target = codes.astype("float64" if binary else "int64")
        self._train(X, target, 1 if binary else len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, one column per entry of ``classes_`` (rows sum to 1)."""
        out = self._output(X)
        if out.shape[1] > 1:
            return out
        return array_namespace(out).concat([1.0 - out, out], axis=1)

    def predict(self, X: Any) -> Any:
        """The most probable class of each row, as a label of ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLPEstimator):  # type: ignore[misc]  # sklearn ships no types
    """A multi-layer perceptron regressor (scikit-learn estimator) trained by mlcore.

    A linear output per target trained with ``mse``; ``y`` may be (n,) or (n, targets).
    The parameters are those of :class:`MLPClassifier`.
    """

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        X, y = validate_data(self, X, y, dtype="float64", multi_output=True, y_numeric=True)
        y = y.astype("float64")
        self._y_1d = y.ndim == 1
        target = y.reshape(len(y), -1)
        self._train(X, target, target.shape[1])
        return self

    def predict(self, X: Any) -> Any:
        """The predicted targets, shaped like the ``y`` given to ``fit``."""
        out = self._output(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
