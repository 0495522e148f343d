"""How a model's output meets its loss in training: the fusion, the targets, accuracy.

No formula lives here: the loss objects of :mod:`mlcore.losses` (or a plugin's) compute
everything. A loss that can be computed from the logits of an output activation says so
(protocol :class:`mlcore.hookspecs.LossKernels`): ``logits_activation`` names the
activation (softmax for cross-entropy, sigmoid for binary cross-entropy) and
``logits_form()`` is the same loss taking its logits z, with gradient ``softmax(z) - y``
(``sigmoid(z) - y``), eq. (1.15)/(1.16). Training then skips that last layer and calls the
loss's unchecked ``value_and_grad_unchecked``: the targets were checked once, at the
``fit``/``evaluate`` boundary, by the loss's ``prepare_target``. Any other loss runs its
checked ``value_and_grad`` (or ``forward`` and ``backward``) on every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..arrays.loss_checks import training_target
from ..errors import InvalidParameterError, ShapeError
from ..hookspecs import LossFn
from ..layers.core import Activation
from ..layers.stack import LayerStack
from ..losses import loss as make_loss
from ..types import Array, DType, Namespace

__all__ = ["LossPlan", "resolve_loss", "prepare_targets"]

_TASKS = {"cross_entropy": "multiclass", "binary_cross_entropy": "binary"}
"""Losses whose training reports accuracy, and how it is counted."""


@dataclass(frozen=True)
class LossPlan:
    """What training computes: ``fn`` on the output of all layers but the last ``trim``."""

    name: str | None
    task: str | None  # "multiclass", "binary" or None: accuracy is reported when set
    trim: int = 0
    fn: Any = None  # the loss object
    fused: bool = False  # fn takes logits and runs unchecked on prepared targets
    threshold: float = 0.0  # binary accuracy: output > threshold means class 1

    def value_and_grad(self, xp: Namespace, out: Array, t: Array) -> tuple[Any, Any]:
        if self.fused:
            return self.fn.value_and_grad_unchecked(xp, out, t)  # type: ignore[no-any-return]
        both = getattr(self.fn, "value_and_grad", None)
        if both is not None:
            return both(out, t)  # type: ignore[no-any-return]
        return self.fn.forward(out, t), self.fn.backward(out, t)

    def value(self, xp: Namespace, out: Array, t: Array) -> Any:
        if self.fused:
            return self.fn.forward_unchecked(xp, out, t)
        return self.fn.forward(out, t)

    def correct(self, xp: Namespace, out: Array, labels: Array) -> Any:
        """How many predictions in ``out`` match ``labels`` (a 0-d integer array)."""
        if self.task == "multiclass":
            return xp.count_nonzero(xp.argmax(out, axis=1) == labels)
        return xp.count_nonzero((out > self.threshold) == labels)


def _output_activation(model: LayerStack) -> str | None:
    last = model.layers[-1] if model.layers else None
    return last.name if isinstance(last, Activation) and not last.params else None


def _logits_loss(model: LayerStack, fn: Any) -> tuple[int, Any] | None:
    """``(layers to skip, the loss taking logits)`` when training can compute ``fn`` from
    the logits, else None.

    A model ending in the loss's ``logits_activation`` skips it and trains on the logits (a
    loss with ``from_logits=True`` there is refused: the activation would be applied twice).
    A model without that activation is taken to output logits when the loss takes logits or
    leaves ``from_logits`` at its default ``None`` (as PyTorch's losses assume), so a name
    and the object built from it train alike; with ``from_logits=False`` the loss checks
    that it receives probabilities, and refuses logits naming the fix.
    """
    act = getattr(fn, "logits_activation", None)
    if act is None or getattr(fn, "reduction", "mean") != "mean":
        return None
    logits = fn.logits_form()
    if not hasattr(logits, "value_and_grad_unchecked"):
        return None
    takes_logits = logits is fn
    if _output_activation(model) == act:
        if takes_logits:
            raise InvalidParameterError(
                f"The model ends in {act} (it outputs probabilities) but loss "
                f"{getattr(fn, 'name', fn)!r} has from_logits=True (it expects logits): {act} "
                f"would be applied twice. Drop from_logits=True, or remove the model's output "
                f"activation.", fn)
        return (1, logits)
    auto = getattr(fn, "from_logits", False) is None  # the default: the model decides
    return (0, logits) if takes_logits or auto else None


def resolve_loss(model: LayerStack, loss: str | LossFn) -> LossPlan:
    """The plan for training ``model`` with ``loss`` (a registered name or a loss object).

    A name is the object ``mlcore.loss(name)``: both mean the same. ``cross_entropy`` /
    ``binary_cross_entropy`` with ``reduction="mean"`` are computed from the logits when the
    model ends in a softmax / sigmoid, or outputs logits (see :func:`_logits_loss`).
    """
    fn = make_loss(loss) if isinstance(loss, str) else loss
    name = getattr(fn, "name", None)
    task = _TASKS.get(str(name))
    fused = _logits_loss(model, fn)
    if fused is not None:
        return LossPlan(name, task, trim=fused[0], fn=fused[1], fused=True)
    threshold = 0.0 if getattr(fn, "from_logits", False) is True else 0.5
    return LossPlan(name, task, fn=fn, threshold=threshold)


def _check_outputs(plan: LossPlan, y: Array, targets: Array, n_out: int | None) -> None:
    """One target per output for every loss but cross-entropy (whose targets are indices)."""
    per_row = 1
    for d in targets.shape[1:]:
        per_row *= int(d)
    if n_out is None or per_row == n_out:
        return
    n = int(targets.shape[0])
    hint = (" For one 0/1 label per sample, build the model with one sigmoid output; for "
            f"{n_out} exclusive classes, use cross_entropy with a softmax output."
            if plan.task == "binary" else "")
    raise ShapeError(
        f"y of shape {tuple(y.shape)} does not fit the model's {n_out} outputs: loss "
        f"{plan.name or type(plan.fn).__name__!r} needs one target per output, shape "
        f"({n}, {n_out}).{hint}", y)


def prepare_targets(xp: Namespace, plan: LossPlan, y: Array, n_out: int | None,
                    dtype: DType) -> tuple[Any, Any]:
    """Check ``y`` once (the loss's ``prepare_target``) and return ``(targets for the loss,
    labels for accuracy)``."""
    prepare = getattr(plan.fn, "prepare_target", None)
    targets = training_target(xp, y, n_out, dtype) if prepare is None else prepare(
        xp, y, n_out, dtype)
    if plan.task == "multiclass":
        return targets, targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
    _check_outputs(plan, y, targets, n_out)
    if plan.task == "binary":
        return targets, targets > 0.5
    return targets, None
