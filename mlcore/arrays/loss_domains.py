"""The input domain of each probability loss, for the conformance kit (:mod:`mlcore.testing`).

A loss may offer ``conformance_inputs(rng)`` and ``conformance_extremes(rng)``: float64 NumPy
``(pred, target)`` in its domain, built from the ``numpy.random.Generator`` it is given (so
the core imports no array library); None leaves the kit's defaults (N(0, 1) predictions,
which are logits). The built-in probability losses mix these in; a plugin's loss may define
the same two methods.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BinaryProbabilities", "ClassProbabilities", "TwoDistributions", "EDGE_ROWS"]

EDGE_ROWS = [[1.0, 0.0, 0.0], [1.0 - 2e-12, 1e-12, 1e-12], [0.5, 0.5, 0.0],
             [1 / 3, 1 / 3, 1 / 3]]
"""Probability rows at the edges of the simplex, for the ``extremes`` check."""


class BinaryProbabilities:
    """Binary cross-entropy: probabilities (or logits with ``from_logits=True``), targets
    in [0, 1]."""

    from_logits: bool | None

    def conformance_inputs(self, rng: Any) -> Any:
        if self.from_logits:
            return None
        return rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0.0, 1.0, (4, 3))

    def conformance_extremes(self, rng: Any) -> Any:
        """Probabilities at and next to 0 and 1."""
        if self.from_logits:
            return None
        pred = rng.uniform(0.0, 1.0, (4, 3))
        pred[...] = [[0.0, 1e-12, 0.5], [1.0, 1.0 - 1e-12, 0.25], [0.0, 1.0, 1e-30],
                     [1.0, 0.0, 0.0]]
        return pred, rng.uniform(0.0, 1.0, (4, 3))


class ClassProbabilities:
    """Cross-entropy: probability rows (or logits with ``from_logits=True``) and labels."""

    from_logits: bool | None

    def conformance_inputs(self, rng: Any) -> Any:
        pred = rng.normal(0.0, 1.0, (4, 3)) if self.from_logits else rng.dirichlet(
            [2.0, 2.0, 2.0], 4)
        return pred, rng.integers(0, 3, 4)

    def conformance_extremes(self, rng: Any) -> Any:
        """Rows with zeros and 1e-12 entries (logits: ±1e4, with labels)."""
        pred = rng.dirichlet([1.0, 1.0, 1.0], 4)
        pred[...] = [[1e4, -1e4, 0.0]] * 4 if self.from_logits else EDGE_ROWS
        return pred, rng.integers(0, 3, 4)


class TwoDistributions:
    """KL divergence: two sets of probability rows."""

    def conformance_inputs(self, rng: Any) -> Any:
        return rng.dirichlet([2.0, 2.0, 2.0], 4), rng.dirichlet([2.0, 2.0, 2.0], 4)

    def conformance_extremes(self, rng: Any) -> Any:
        """Rows with zeros and 1e-12 entries on both sides."""
        pred, target = rng.dirichlet([1.0, 1.0, 1.0], 4), rng.dirichlet([1.0, 1.0, 1.0], 4)
        pred[...], target[...] = EDGE_ROWS, EDGE_ROWS[::-1]
        return pred, target
