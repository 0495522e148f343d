"""Normalisation layers: LayerNorm (Ba et al., 2016) and BatchNorm (Ioffe & Szegedy, 2015).

Both normalise ``x̂ = (x - μ) / √(σ² + ε)`` and scale and shift it, ``y = γ x̂ + β`` (γ
``weight`` starts at 1, β ``bias`` at 0, as in PyTorch); σ² is the biased variance. With
``g = dY γ`` the input gradient is ``dX = (g - mean(g) - x̂ mean(g x̂)) / √(σ² + ε)``, the
means taken over the axis that was normalised; ``dγ = Σ dY x̂`` and ``dβ = Σ dY`` over the
batch. For BatchNorm in training the two means are over the batch, so they are
``γ dβ / N`` and ``γ dγ / N``: ``dX = (dY - dβ/N - x̂ dγ/N) γ / √(σ² + ε)`` reuses the
parameter gradients' sums (four passes over the batch fewer). LayerNorm normalises each
sample over its features, the same in training and
inference. BatchNorm normalises each feature over the batch while training and keeps running
statistics, ``r ← (1 - momentum) r + momentum · s`` (the variance unbiased, N/(N-1)), which
it uses in inference mode; they are saved and loaded with the model (buffers
``running_mean``, ``running_var``). Inputs are (N, num_features).

In a distributed fit BatchNorm's ``sync`` (a sum over the processes, set for the fit by
:class:`mlcore.distributed.DataParallel`) makes it SyncBatchNorm: μ and σ² are those of the
global batch (Σx and N, then Σ(x - μ)², summed over the processes), and backward sums
``A = Σ_r (n_r/N) Σ g`` and ``B = Σ_r (n_r/N) Σ g x̂`` over them: each process's gradient
is of its own mean loss (scaled N/n_r from the global one), so it returns
``dX = (g - (A + x̂ B)/n_r) / √(σ² + ε)``, which the gradient average then scales back:
one process with the global batch, up to the order of float additions.

BatchNorm's training forward and backward (not synced) ask the backend for the fused kernels
``batch_norm_forward`` and ``batch_norm_backward`` (:data:`mlcore.hookspecs.KERNELS`; NumPy's
are a few compiled passes where these formulas make seven each way): fast paths of the
formulas here, which run whenever there is no kernel or it answers None.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ..arrays.namespace import device_of, namespace
from ..backend import Backend, get_backend
from ..errors import DTypeError, InvalidParameterError, ShapeError
from ..plugins import kernel_for
from ..types import Array, DType, Namespace
from .core import Backprop, Layer, Parameter, dtype_name, on_device, positive_int, resolve_dtype

__all__ = ["LayerNorm", "BatchNorm"]


def _check_number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and low < value < high:
        return float(value)
    raise InvalidParameterError(
        f"{name} must be a number in ({low}, {high}), received {value!r}.", value)


class _Norm(Layer):
    """The affine parameters, the input checks and the shared backward formula."""

    def __init__(self, num_features: int, eps: float, dtype: DType) -> None:
        self.num_features = positive_int(num_features, "num_features")
        self.eps = _check_number("eps", eps, 0.0, 1.0)
        backend = get_backend()
        self.backend: Backend = backend
        dt = resolve_dtype(backend.xp, dtype)
        with on_device(backend.device):
            self.weight = Parameter(backend.xp.ones((self.num_features,), dtype=dt,
                                                    device=backend.device))
            self.bias = Parameter(backend.xp.zeros((self.num_features,), dtype=dt,
                                                   device=backend.device))

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        return [("weight", self.weight), ("bias", self.bias)]

    def _namespace(self, X: Array, xp: Namespace | None) -> Namespace:
        if xp is None:
            xp = namespace(X, self.weight.value, names=("X", f"{type(self).__name__}.weight"))
        if X.ndim != 2 or X.shape[1] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__} expected input of shape (N, {self.num_features}), "
                f"received shape {tuple(X.shape)}.", X)
        if X.dtype != self.weight.value.dtype:
            have = dtype_name(xp, self.weight.value.dtype)
            raise DTypeError(
                f"{type(self).__name__} has {have} parameters but received {X.dtype} input. "
                f"Convert the input with astype, or build the layer with that dtype.", X)
        return xp

    def _affine(self, xp: Namespace, xhat: Array, inv: Array, axis: int, input_grad: bool,
                synced: tuple[Callable[[Array], Array], int, int] | None = None,
                Y: Array | None = None) -> tuple[Array, Backprop]:
        """``Y = xhat gamma + beta`` (unless the kernel gave ``Y``) and its backprop."""
        gamma = self.weight.value
        if Y is None:
            Y = xhat * gamma + self.bias.value
        fast = kernel_for(xp, "batch_norm_backward") if axis == 0 and synced is None else None

        def backprop(dY: Array) -> Array | None:
            got = fast(dY, xhat, gamma, inv) if fast is not None and input_grad else None
            if got is not None:  # the fused kernel of the BatchNorm-training formula below
                dX, sum_dy_xhat, sum_dy = got
                self.weight.accumulate(sum_dy_xhat)
                self.bias.accumulate(sum_dy)
                return dX
            sum_dy_xhat, sum_dy = xp.sum(dY * xhat, axis=0), xp.sum(dY, axis=0)
            self.weight.accumulate(sum_dy_xhat)
            self.bias.accumulate(sum_dy)
            if not input_grad:
                return None
            if axis == 0 and synced is None:
                # this batch's statistics, per feature (BatchNorm training): the two means
                # of the general formula below are the parameter gradients' sums over n,
                # times gamma, so they are not computed again
                n = dY.shape[0]
                return (dY - sum_dy / n - xhat * (sum_dy_xhat / n)) * (gamma * inv)
            g = dY * gamma
            if axis < 0:  # statistics not from this batch (BatchNorm inference)
                return g * inv
            if synced is not None:  # SyncBatchNorm: the sums of every process (module doc)
                total, n, share = synced[0], synced[1], synced[1] / synced[2]
                ab = total(xp.concat([xp.sum(g, axis=0) * share,
                                      xp.sum(g * xhat, axis=0) * share]))
                f = self.num_features
                return (g - (ab[:f] + xhat * ab[f:]) / n) * inv
            mean_g = xp.mean(g, axis=axis, keepdims=True)
            mean_gx = xp.mean(g * xhat, axis=axis, keepdims=True)
            return (g - mean_g - xhat * mean_gx) * inv

        return Y, backprop

    def _config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "num_features": self.num_features,
                "eps": self.eps, "dtype": dtype_name(self.backend.xp, self.weight.value.dtype)}


class LayerNorm(_Norm):
    """Normalise each sample over its ``num_features`` features (``torch.nn.LayerNorm``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, *,
                 dtype: DType | str | None = None) -> None:
        super().__init__(num_features, eps, dtype)

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        xp = self._namespace(X, xp)
        d = X - xp.mean(X, axis=1, keepdims=True)
        inv = 1.0 / xp.sqrt(xp.mean(d * d, axis=1, keepdims=True) + self.eps)
        return self._affine(xp, d * inv, inv, 1, input_grad)

    def config(self) -> dict[str, Any]:
        return self._config()

    def __repr__(self) -> str:
        return f"LayerNorm({self.num_features}, eps={self.eps})"


class BatchNorm(_Norm):
    """Normalise each feature over the batch (``torch.nn.BatchNorm1d``), with running
    statistics for inference."""

    modal = True
    sync: Callable[[Array], Array] | None = None
    """A sum over the processes of a distributed fit (set by it for the fit): batch
    statistics over every process's rows (SyncBatchNorm). None: this batch's own."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 dtype: DType | str | None = None) -> None:
        super().__init__(num_features, eps, dtype)
        self.momentum = _check_number("momentum", momentum, 0.0, 1.0 + 1e-12)
        if self.momentum > 0.5:
            warnings.warn(
                f"BatchNorm momentum={momentum} is the weight of the new batch's statistics "
                f"(PyTorch's meaning: the running mean moves {momentum:g} of the way to each "
                f"batch's). Keras' momentum is the weight of the old value: Keras' "
                f"momentum={momentum:g} is mlcore's momentum={1 - self.momentum:.3g}.",
                UserWarning, stacklevel=2)
        xp, dt, device = self.backend.xp, self.weight.value.dtype, self.backend.device
        with on_device(device):
            self.running_mean = Parameter(xp.zeros((self.num_features,), dtype=dt,
                                                   device=device))
            self.running_var = Parameter(xp.ones((self.num_features,), dtype=dt,
                                                 device=device))

    def named_buffers(self) -> list[tuple[str, Parameter]]:
        return [("running_mean", self.running_mean), ("running_var", self.running_var)]

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        xp = self._namespace(X, xp)
        if not self.training:
            inv = 1.0 / xp.sqrt(self.running_var.value + self.eps)
            return self._affine(xp, (X - self.running_mean.value) * inv, inv, -1, input_grad)
        n = total = int(X.shape[0])
        synced = None
        if self.sync is not None:
            mean, var, total = self._global_statistics(xp, X, self.sync)
            synced = (self.sync, n, total)
        if total < 2:
            raise ShapeError(
                f"BatchNorm needs at least 2 samples per batch while training (the batch "
                f"variance of 1 sample is 0); received shape {tuple(X.shape)}. Use a larger "
                f"batch_size, or LayerNorm.", X)
        got = None
        if synced is None:
            fast = kernel_for(xp, "batch_norm_forward")
            got = (None if fast is None
                   else fast(X, self.weight.value, self.bias.value, self.eps))
            if got is not None:  # the fused kernel of the formula below
                Y, xhat, mean, var, inv = got
            else:
                mean = xp.mean(X, axis=0)
                d = X - mean
                var = xp.mean(d * d, axis=0)
        else:
            d = X - mean
        n = total
        m = self.momentum
        self.running_mean.value = (1.0 - m) * self.running_mean.value + m * mean
        self.running_var.value = (1.0 - m) * self.running_var.value + m * var * (n / (n - 1))
        if got is not None:
            return self._affine(xp, xhat, inv, 0, input_grad, None, Y)
        inv = 1.0 / xp.sqrt(var + self.eps)
        return self._affine(xp, d * inv, inv, 0, input_grad, synced)

    @staticmethod
    def _global_statistics(xp: Namespace, X: Array,
                           total: Callable[[Array], Array]) -> tuple[Array, Array, int]:
        """Mean and biased variance over every process's rows, and their count."""
        count = xp.full((1,), float(X.shape[0]), dtype=X.dtype, device=device_of(X))
        sums = total(xp.concat([xp.sum(X, axis=0), count]))
        n = round(float(sums[-1]))
        mean = sums[:-1] / n
        d = X - mean
        return mean, total(xp.sum(d * d, axis=0)) / n, n

    def config(self) -> dict[str, Any]:
        return self._config() | {"momentum": self.momentum}

    def __repr__(self) -> str:
        return f"BatchNorm({self.num_features}, momentum={self.momentum}, eps={self.eps})"
