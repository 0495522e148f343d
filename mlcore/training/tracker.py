"""``fit``'s metric tracker: the metric states of one pass over data (an epoch, a
validation pass, ``evaluate``), fed the model's outputs batch by batch and read once at the
end (:mod:`.loop` runs it)."""

from __future__ import annotations

from typing import Any

from ..activations import activation
from ..layers.stack import LayerStack, chain
from ..metrics import Metric
from ..types import Array, Namespace
from .lossplan import LossPlan

__all__ = ["Tracker"]


class Tracker:
    """The metric states of one pass over data, fed the model's outputs batch by batch.

    The batches are gathered into chunks of at least :attr:`CHUNK` rows before the metrics
    see them (a copy of each batch's outputs, which a compiled step may reuse or donate;
    the targets are the data's own): a metric's result does not depend on how its data is
    cut into batches (:class:`~mlcore.metrics.Metric`), and a chunk costs the ~25 small
    array operations of accuracy and F1 once instead of per batch (at batch 32, 128 times
    fewer)."""

    CHUNK = 4096
    """Rows gathered before the metrics are updated (at most this many outputs held)."""

    def __init__(self, metrics: list[Metric[Any]], model: LayerStack, plan: LossPlan) -> None:
        self.metrics = metrics
        self.states: list[Any] = [None] * len(metrics)
        self.tail = model.layers[len(model.layers) - plan.trim:]
        logits = plan.task is not None and (plan.fused or getattr(plan.fn, "from_logits", False))
        self.squash = None
        if logits and not self.tail:  # the model outputs logits: metrics see probabilities
            self.squash = activation("sigmoid" if plan.task == "binary" else "softmax")
        self._held: list[tuple[Array, Array]] = []
        self._rows = 0
        self._xp: Namespace | None = None

    def reset(self) -> None:
        self.states = [None] * len(self.metrics)
        self._held, self._rows = [], 0

    def update(self, xp: Namespace, out: Array | None, y_true: Array) -> None:
        if out is None:  # no rows here (only a distributed fit's empty share has none)
            return
        self._held.append((xp.asarray(out, copy=True), y_true))
        self._rows += int(out.shape[0])
        self._xp = xp
        if self._rows >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        """The held batches, as one, into every metric."""
        xp, held = self._xp, self._held
        if xp is None or not held:
            return
        self._held, self._rows = [], 0
        out = held[0][0] if len(held) == 1 else xp.concat([o for o, _ in held], axis=0)
        y_true = held[0][1] if len(held) == 1 else xp.concat([y for _, y in held], axis=0)
        if self.tail:
            out = chain(self.tail, out, xp, False)[0]
        elif self.squash is not None:
            out = self.squash.forward(out)
        for i, m in enumerate(self.metrics):
            self.states[i] = m.update(self.states[i], out, y_true)

    def results(self, prefix: str = "") -> dict[str, float]:
        self._flush()
        return {prefix + m.name: m.result(s) for m, s in zip(self.metrics, self.states,
                                                              strict=True)}
