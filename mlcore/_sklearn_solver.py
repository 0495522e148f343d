"""What ``mlcore.sklearn`` adds to a plain :func:`mlcore.training.fit.fit` to mean what
scikit-learn's MLP means: its L2 penalty ``alpha`` and its solvers, and its per-epoch bookkeeping.

scikit-learn's stochastic MLP minimises, on each batch of ``B`` samples (``sklearn.
neural_network._multilayer_perceptron._backprop``)::

    J = D + alpha / (2 B) · sum_l ||W_l||²      (intercepts are not penalised)

with ``D`` its data loss: the mean log-loss for classifiers (summed over the outputs of a
multilabel target), half the squared error for regressors (summed over the outputs in the
gradient). mlcore's losses are ``D`` times a constant ``r`` (``loss_ratio``: 1 for binary
and multi-class log-loss, ``1/k`` for ``k`` labels whose binary cross-entropy mlcore
averages, ``2/k`` for ``k`` regression targets whose mse mlcore averages). So the optimiser
here sees ``r·∇J``: its rule adds ``r·alpha/B · W`` to each weight matrix's gradient (a
2-D parameter; biases are 1-D and not decayed), SGD's step is ``lr / r`` and Adam's ``eps``
is ``eps · r`` (Adam is otherwise invariant to the scale). The two trajectories are then
the same up to the initial weights, the batch order and two small differences: sklearn
divides the penalty by each batch's own size (a short last batch gets a larger one), and
puts Adam's ``eps`` after the bias correction of ``v`` where PyTorch (and mlcore) put it
before. SGD's momentum is PyTorch's ``b ← μb + g, p ← p - lr·b`` (sklearn's velocity form
``v ← μv - lr·g`` is the same update while ``lr`` is constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .arrays.namespace import namespace
from .callbacks import Callback
from .errors import InvalidParameterError
from .layers.stack import LayerStack
from .optimizers import SGD, Adam, Optimizer, State
from .parameter import Parameter
from .types import Array, Namespace

if TYPE_CHECKING:
    from .sklearn import _MLPEstimator

__all__ = ["make_solver", "EpochBook", "penalty_of"]


class _Penalised(Optimizer):
    """An optimiser whose gradients get ``l2 · W`` for every 2-D parameter first: sklearn's
    ``alpha`` (scaled as the module says), then the optimiser's own rule (or its kernel)."""

    l2: float = 0.0

    def _penalised(self, params: Sequence[Array], grads: Sequence[Array]) -> list[Array]:
        l2 = self.l2
        if not l2:
            return list(grads)
        return [g + l2 * p if p.ndim == 2 else g for p, g in zip(params, grads, strict=True)]

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        return super().rule(xp, params, self._penalised(params, grads), state, lr)

    def fast_update(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array],
                    state: State, lr: float) -> State | None:
        return super().fast_update(xp, params, self._penalised(params, grads), state, lr)


class PenalisedSGD(_Penalised, SGD):
    """:class:`mlcore.SGD` with sklearn's ``alpha`` on the weight matrices."""

    hyperparameters = (*SGD.hyperparameters, "l2")  # type: ignore[assignment]


class PenalisedAdam(_Penalised, Adam):
    """:class:`mlcore.Adam` with sklearn's ``alpha`` on the weight matrices."""

    hyperparameters = (*Adam.hyperparameters, "l2")  # type: ignore[assignment]


def make_solver(est: _MLPEstimator, params: Sequence[Parameter], lr: float, ratio: float,
                batch_weight: float) -> Optimizer:
    """The optimiser for the estimator ``est``'s ``solver``, scaled by the loss ratio;
    ``batch_weight``: a batch's weight sum (its size for unit weights), which divides
    ``alpha``."""
    opt: Optimizer
    if est.solver == "sgd":
        mu = float(est.momentum)
        opt = PenalisedSGD(params, lr=lr / ratio, momentum=mu,
                           nesterov=bool(est.nesterovs_momentum) and mu > 0.0)
    else:
        opt = PenalisedAdam(params, lr=lr, betas=(est.beta_1, est.beta_2),
                            eps=float(est.epsilon) * ratio)
    opt.l2 = ratio * float(est.alpha) / batch_weight  # type: ignore[attr-defined]
    return opt


def penalty_of(model: LayerStack, alpha: float, n_batches: int, weight: float) -> float:
    """sklearn's epoch-mean penalty term, ``alpha/2 · sum ||W||² · batches / weight`` (each
    batch adds ``alpha/(2 w_b)·||W||²``, ``w_b`` its weight sum, weighted by its rows; the
    ``weight`` of all rows), on the current weights."""
    if not alpha:
        return 0.0
    weights = [p.value for p in model.parameters() if p.value.ndim == 2]
    xp = namespace(*weights)
    total = sum(float(xp.sum(w * w)) for w in weights)
    return 0.5 * alpha * total * n_batches / weight


class EpochBook(Callback):
    """sklearn's end-of-epoch bookkeeping, run inside one ``fit``: ``loss_curve_``,
    ``n_iter_``, ``t_``, the validation score and best weights of ``early_stopping``, the
    ``tol``/``n_iter_no_change`` stopping rule and SGD's ``invscaling``/``adaptive`` rates
    (``sklearn.neural_network._multilayer_perceptron._fit_stochastic``)."""

    def __init__(self, est: Any, n: int, weight: float, n_batches: int,
                 validation: Callable[[LayerStack], float] | None,
                 report: float) -> None:
        self.est, self.n, self.weight, self.n_batches = est, n, weight, n_batches
        self.validation, self.report = validation, report
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        est = self.est
        loss = (logs or {})["loss"] * self.report + penalty_of(
            self.model, float(est.alpha), self.n_batches, self.weight)
        est.n_iter_ += 1
        est.t_ += self.n
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        self._count(loss)
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            self.optimizer.lr = _scaled_lr(est) / (est.t_ + 1) ** float(est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            if self._adapt():
                est._no_improvement_count = 0
            else:
                self.stopped = True
                self.model.stop_training = True

    def _count(self, loss: float) -> None:
        """sklearn's ``_update_no_improvement_count``."""
        est = self.est
        if self.validation is not None:
            score = self.validation(self.model)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            worse = score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_state = {k: namespace(v).asarray(v, copy=True)
                                   for k, v in self.model.state_dict().items()}
        else:
            worse = loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = est._no_improvement_count + 1 if worse else 0

    def _adapt(self) -> bool:
        """SGD with ``learning_rate="adaptive"``: divide the rate by 5 and go on (True), or
        stop (False) as every other solver does, once it is at or below 1e-6."""
        est, opt = self.est, self.optimizer
        if (est.solver != "sgd" or est.learning_rate != "adaptive"
                or opt.lr * est._loss_ratio <= 1e-6):
            return False
        opt.lr = opt.lr / 5.0
        return True


def _scaled_lr(est: _MLPEstimator) -> float:
    """The first rate in the optimiser's terms (sklearn's divided by the loss ratio)."""
    return float(est._lr()) / float(est._loss_ratio)


def check_choice(name: str, value: object, choices: Sequence[str], extra: str = "") -> str:
    """``value`` if it is one of ``choices``, else an error listing them."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidParameterError(
            f"{name} must be one of {', '.join(map(repr, choices))}; received {value!r}."
            f"{extra}", value)
    return value
