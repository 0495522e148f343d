"""The JAX reference (``jax-hand``): a hand-written training step, jitted whole.

Same network, initial weights, data and maths as the other competitors: ``z = x Wᵀ + b``
(eq. 1.5, W of shape (out, in)), ReLU or tanh, softmax cross-entropy from logits (class
indices) or sigmoid binary cross-entropy from logits, gradients written out by hand (as
``jax.grad`` would give them), and ``torch.optim``'s Adam or plain SGD. The whole step is
one ``jax.jit`` function with the parameters and optimiser state donated, which is what a
JAX user writing the step by hand would time. Imported only when JAX is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["JaxMLP"]


def _forward(params: Sequence[Any], X: Any, hidden: str) -> tuple[Any, list[Any]]:
    acts, h = [X], X
    n = len(params) // 2
    for i in range(n):
        z = h @ params[2 * i].T + params[2 * i + 1]
        h = z if i == n - 1 else (jnp.maximum(z, 0.0) if hidden == "relu" else jnp.tanh(z))
        acts.append(h)
    return h, acts


def _loss_grad(out: Any, y: Any, loss: str) -> tuple[Any, Any]:
    n = out.shape[0]
    if loss == "softmax_ce":
        s = out - jnp.max(out, axis=1, keepdims=True)
        e = jnp.exp(s)
        total = jnp.sum(e, axis=1, keepdims=True)
        onehot = (y[:, None] == jnp.arange(out.shape[1])).astype(out.dtype)
        value = (jnp.sum(jnp.log(total)) - jnp.sum(onehot * s)) / n
        return value, (e / total - onehot) / n
    z, t = out[:, 0], y
    value = jnp.mean(jnp.maximum(z, 0.0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z))))
    return value, ((jax.nn.sigmoid(z) - t) / n)[:, None]


def _grads(params: Sequence[Any], X: Any, y: Any, hidden: str, loss: str) -> tuple[Any, list]:
    out, acts = _forward(params, X, hidden)
    value, d = _loss_grad(out, y, loss)
    grads: list[Any] = [None] * len(params)
    for i in reversed(range(len(params) // 2)):
        grads[2 * i], grads[2 * i + 1] = d.T @ acts[i], jnp.sum(d, axis=0)
        if i:
            d = d @ params[2 * i]
            a = acts[i]
            d = d * (a > 0.0) if hidden == "relu" else d * (1.0 - a * a)
    return value, grads


class JaxMLP:
    """Parameters ``[W0, b0, W1, b1, ...]`` and a jitted ``step(X, y)``."""

    def __init__(self, weights: Sequence[np.ndarray], dtype: Any, hidden: str = "relu",
                 loss: str = "softmax_ce", optimizer: str = "adam", lr: float = 1e-3) -> None:
        self.params = tuple(jnp.asarray(np.asarray(w, dtype)) for w in weights)
        def zeros() -> tuple[Any, ...]:  # m and v: separate buffers (both are donated)
            return tuple(jnp.zeros_like(p) for p in self.params)

        t0 = jnp.zeros((), self.params[0].dtype)
        self.state: tuple[Any, ...] = (t0, zeros(), zeros()) if optimizer == "adam" else ()
        b1, b2, eps = 0.9, 0.999, 1e-8

        def step(params: tuple[Any, ...], state: tuple[Any, ...], X: Any,
                 y: Any) -> tuple[Any, Any, Any]:
            value, grads = _grads(params, X, y, hidden, loss)
            if optimizer != "adam":
                return tuple(p - lr * g for p, g in zip(params, grads, strict=True)), (), value
            t, m, v = state
            t = t + 1.0
            m = tuple(b1 * a + (1.0 - b1) * g for a, g in zip(m, grads, strict=True))
            v = tuple(b2 * a + (1.0 - b2) * g * g for a, g in zip(v, grads, strict=True))
            c1, c2 = 1.0 - b1**t, 1.0 - b2**t
            new = tuple(p - lr / c1 * a / (jnp.sqrt(w / c2) + eps)
                        for p, a, w in zip(params, m, v, strict=True))
            return new, (t, m, v), value

        self._step = jax.jit(step, donate_argnums=(0, 1))

    def step(self, X: Any, y: Any) -> Any:
        self.params, self.state, value = self._step(self.params, self.state, X, y)
        return value

    def host_params(self) -> list[np.ndarray]:
        return [np.array(p) for p in self.params]
