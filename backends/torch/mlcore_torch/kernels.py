"""torch's fused kernels beyond the optimiser updates (names: ``mlcore.hookspecs.KERNELS``)."""

from __future__ import annotations

from typing import Any

import torch  # imported by the hook only once torch's namespace asks for a kernel

__all__ = ["affine"]


def affine(x: Any, w: Any, b: Any) -> Any:
    """``x @ w.T + b`` as one ``torch.addmm``: the bias enters the GEMM as its ``beta`` term
    (what ``torch.nn.Linear`` runs), instead of a matmul and a second pass over the result."""
    return torch.addmm(b, x, w.T)
