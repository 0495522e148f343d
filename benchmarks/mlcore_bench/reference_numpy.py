"""The hand-written NumPy reference: what a careful engineer writes without a framework.

Same maths as mlcore's step, so the ratio ``mlcore / numpy-hand`` is the price of the
Array-API core alone: z = X Wᵀ + b with W of shape (out, in) (eq. 1.5), ReLU or tanh hidden
layers (eq. 1.10, 1.9), a fused softmax-cross-entropy from logits (eq. 1.16; gradient
``(softmax - onehot) / N``) or binary cross-entropy from logits (eq. 1.15; gradient
``(sigmoid - y) / N``), and Adam (PyTorch's definition, bias-corrected) or plain SGD,
updated in place.

Everything a step touches is preallocated once per batch shape and written with ``out=``;
parameters and gradients are views of one flat buffer each, so the optimiser updates all of
them in a handful of NumPy calls per L2-sized block, and Adam folds its bias corrections and
(1-β) factors into two scalars (equal to PyTorch's formula in real arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["NumpyMLP", "ACTIVATIONS", "LOSSES", "Adam", "Sgd"]

Params = list[np.ndarray]


BLOCK = 32768
"""Elements per block of the optimiser's passes: the ten passes over one block stay in the
L2 cache (the flat buffer of 784-512-512-10 is 2.7 MB in float32). Tiny nets are one block."""


def _blocks(n: int) -> list[slice]:
    return [slice(i, min(i + BLOCK, n)) for i in range(0, n, BLOCK)]


class Adam:
    """In-place Adam on one flat parameter buffer (β₁=0.9, β₂=0.999, ε=1e-8 as PyTorch).

    Keeps M = m/(1-β₁) and V = v/(1-β₂), so each step is 10 passes per cache-sized block:
    M = β₁M + g; V = β₂V + g²; p -= c·M / (√V + ε'), with c and ε' folding in the
    bias corrections of PyTorch's formula.
    """

    def __init__(self, flat: np.ndarray, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.p, self.lr, self.eps = flat, lr, eps
        self.b1, self.b2 = betas
        self.M, self.V = np.zeros_like(flat), np.zeros_like(flat)
        self.tmp = np.empty(min(BLOCK, flat.size), flat.dtype)
        self.blocks = _blocks(flat.size)
        self.t = 0

    def step(self, g: np.ndarray) -> None:
        self.t += 1
        bc1, bc2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        scale = (bc2 / (1.0 - self.b2)) ** 0.5  # sqrt(V)/scale = sqrt(v / bc2)
        c, eps = self.lr * (1.0 - self.b1) / bc1 * scale, self.eps * scale
        for b in self.blocks:
            self._block(self.p[b], g[b], self.M[b], self.V[b], c, eps)

    def _block(self, p: np.ndarray, g: np.ndarray, M: np.ndarray, V: np.ndarray, c: float,
               eps: float) -> None:
        tmp = self.tmp[:p.size]
        M *= self.b1
        M += g
        V *= self.b2
        np.multiply(g, g, out=tmp)
        V += tmp
        np.sqrt(V, out=tmp)
        tmp += eps
        np.divide(M, tmp, out=tmp)
        tmp *= c
        p -= tmp


class Sgd:
    """Plain in-place SGD on one flat buffer, block by block: p -= lr · g."""

    def __init__(self, flat: np.ndarray, lr: float = 0.01) -> None:
        self.p, self.lr = flat, lr
        self.tmp = np.empty(min(BLOCK, flat.size), flat.dtype)
        self.blocks = _blocks(flat.size)

    def step(self, g: np.ndarray) -> None:
        for b in self.blocks:
            tmp = self.tmp[:b.stop - b.start]
            np.multiply(g[b], self.lr, out=tmp)
            self.p[b] -= tmp


def _views(flat: np.ndarray, shapes: list[tuple[int, ...]]) -> Params:
    """Contiguous views of ``flat`` with the given shapes, in order."""
    out, at = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


class NumpyMLP:
    """A dense MLP with a fused loss and in-place update; one ``step(X, y)`` per batch.

    ``weights`` is ``[W0, b0, W1, b1, ...]`` (copied, cast to ``dtype``). ``loss`` is
    ``"softmax_ce"`` (integer labels) or ``"sigmoid_bce"`` (one output, 0/1 labels).
    """

    def __init__(self, weights: Sequence[np.ndarray], dtype: Any, hidden: str = "relu",
                 loss: str = "softmax_ce", optimizer: str = "adam", lr: float = 1e-3) -> None:
        shapes = [np.shape(w) for w in weights]
        self.flat = np.concatenate([np.ravel(w) for w in weights]).astype(dtype)
        self.flat_grad = np.empty_like(self.flat)
        self.params, self.grads = _views(self.flat, shapes), _views(self.flat_grad, shapes)
        self.W, self.b = self.params[0::2], self.params[1::2]
        self.dtype, self.hidden, self.loss = np.dtype(dtype), hidden, loss
        self.opt = Adam(self.flat, lr) if optimizer == "adam" else Sgd(self.flat, lr)
        self._n = -1

    def _alloc(self, n: int) -> None:
        """Preallocate the activations and their gradients for batch size ``n``."""
        outs = [w.shape[0] for w in self.W]
        self.A = [np.empty((n, k), self.dtype) for k in outs]
        self.dA = [np.empty((n, k), self.dtype) for k in outs]
        self.mask = [np.empty((n, k), self.dtype) for k in outs]
        self.rows = np.arange(n)
        self._n = n

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Logits of the last layer; hidden activations kept in ``self.A``."""
        if X.shape[0] != self._n:
            self._alloc(X.shape[0])
        a = X
        last = len(self.W) - 1
        for i, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            np.matmul(a, W.T, out=self.A[i])
            self.A[i] += b
            if i < last:
                self._activate(self.A[i])
            a = self.A[i]
        return a

    def _activate(self, z: np.ndarray) -> None:
        if self.hidden == "relu":
            np.maximum(z, 0, out=z)
        else:
            np.tanh(z, out=z)

    def _activation_grad(self, i: int) -> None:
        """dA[i] *= f'(z_i), reusing the forward output A[i]."""
        a, da, mask = self.A[i], self.dA[i], self.mask[i]
        if self.hidden == "relu":
            np.greater(a, 0, out=mask)
        else:
            np.multiply(a, a, out=mask)
            np.subtract(1, mask, out=mask)
        da *= mask

    def loss_and_grad(self, logits: np.ndarray, y: np.ndarray) -> float:
        """The mean loss; writes d loss / d logits into ``self.dA[-1]``."""
        n, g = logits.shape[0], self.dA[-1]
        if self.loss == "softmax_ce":
            picked = logits[self.rows, y]
            m = logits.max(axis=1, keepdims=True)
            np.subtract(logits, m, out=g)
            np.exp(g, out=g)
            s = g.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - picked))
            g /= s
            g[self.rows, y] -= 1
        else:
            z = logits[:, 0]
            loss = float(np.mean(np.logaddexp(0, z) - y * z))
            np.negative(logits, out=g)
            np.exp(g, out=g)
            g += 1
            np.reciprocal(g, out=g)
            g[:, 0] -= y
        g /= n
        return loss

    def backward(self, X: np.ndarray) -> None:
        """Parameter gradients into ``self.grads`` from ``self.dA[-1]`` (eq. 1.5 transposed)."""
        for i in range(len(self.W) - 1, -1, -1):
            d = self.dA[i]
            prev = X if i == 0 else self.A[i - 1]
            np.matmul(d.T, prev, out=self.grads[2 * i])
            np.sum(d, axis=0, out=self.grads[2 * i + 1])
            if i > 0:
                np.matmul(d, self.W[i], out=self.dA[i - 1])
                self._activation_grad(i - 1)

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        """One training step: forward, fused loss, backward, in-place update; the loss."""
        loss = self.loss_and_grad(self.forward(X), y)
        self.backward(X)
        self.opt.step(self.flat_grad)
        return loss

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.forward(X).argmax(axis=1))


# Element-wise activations: name -> (forward, backward(x, y, dy)), the hand-written way.
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _log_softmax(x: np.ndarray) -> np.ndarray:
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows; the two branches are joined without np.where.
    e = np.exp(-np.abs(x))
    pos = 1.0 / (1.0 + e)
    return np.asarray(np.where(x >= 0, pos, 1.0 - pos))


Fn = Callable[..., np.ndarray]
ACTIVATIONS: dict[str, tuple[Fn, Fn]] = {
    "identity": (lambda x: x.copy(), lambda x, y, dy: dy.copy()),
    "relu": (lambda x: np.maximum(x, 0), lambda x, y, dy: dy * (x > 0)),
    "leaky_relu": (lambda x: np.maximum(x, 0.01 * x),
                   lambda x, y, dy: dy * np.where(x > 0, 1.0, 0.01).astype(x.dtype)),
    "sigmoid": (_sigmoid, lambda x, y, dy: dy * y * (1 - y)),
    "tanh": (np.tanh, lambda x, y, dy: dy * (1 - y * y)),
    "step": (lambda x: (x > 0).astype(x.dtype), lambda x, y, dy: np.zeros_like(dy)),
    "softmax": (_softmax,
                lambda x, y, dy: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
    "log_softmax": (_log_softmax,
                    lambda x, y, dy: dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)),
}


def _ce_logits(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(p.shape[0])
    m = p.max(axis=1, keepdims=True)
    e = np.exp(p - m)
    s = e.sum(axis=1, keepdims=True)
    value = np.mean(np.log(s[:, 0]) + m[:, 0] - p[rows, t])
    e /= s
    e[rows, t] -= 1
    e /= p.shape[0]
    return np.asarray(value), e


def _ce_probs(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, rows = p.shape[0], np.arange(p.shape[0])
    eps = 1e-7 if p.dtype == np.float32 else 1e-12
    q = np.clip(p[rows, t], eps, 1.0)
    g = np.zeros_like(p)
    g[rows, t] = -1.0 / (q * n)
    return np.asarray(-np.mean(np.log(q))), g


def _bce_logits(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    value = np.mean(np.logaddexp(0, p) - t * p)
    return np.asarray(value), (_sigmoid(p) - t) / p.size


def _bce_probs(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eps = 1e-7 if p.dtype == np.float32 else 1e-12
    q = np.clip(p, eps, 1 - eps)
    value = -np.mean(t * np.log(q) + (1 - t) * np.log(1 - q))
    return np.asarray(value), (q - t) / (q * (1 - q) * p.size)


def _kl(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eps = 1e-7 if p.dtype == np.float32 else 1e-12
    q = np.clip(p, eps, 1.0)
    value = np.sum(t * (np.log(np.maximum(t, eps)) - np.log(q))) / p.shape[0]
    return np.asarray(value), -t / (q * p.shape[0])


LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "cross_entropy(logits)": _ce_logits,
    "cross_entropy": _ce_probs,
    "binary_cross_entropy(logits)": _bce_logits,
    "binary_cross_entropy": _bce_probs,
    "kl_divergence": _kl,
    "mse": lambda p, t: (np.asarray(np.mean((p - t) ** 2)), 2 * (p - t) / p.size),
    "mae": lambda p, t: (np.asarray(np.mean(np.abs(p - t))), np.sign(p - t) / p.size),
}
"""Loss variants by benchmark name -> (value, gradient) in one pass, mean reduction."""
