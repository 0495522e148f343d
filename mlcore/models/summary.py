"""``model.summary()``: the layers, their output shapes and parameter counts, as a table."""

from __future__ import annotations

from ..layers.stack import LayerStack
from ..parameter import Parameter

__all__ = ["summary"]


def _count(params: list[Parameter]) -> int:
    total = 0
    for p in params:
        n = 1
        for d in p.shape:
            n *= int(d)
        total += n
    return total


def _rows(model: LayerStack) -> list[tuple[str, str, int]]:
    width: int | None = next((getattr(layer, "in_features", None) for layer in model.layers
                              if getattr(layer, "in_features", None)), None)
    rows = []
    for i, layer in enumerate(model.layers):
        width = getattr(layer, "out_features", width)
        shape = f"(None, {width})" if width is not None else "?"
        rows.append((f"{i}: {layer!r}", shape, _count(layer.parameters())))
    return rows


def summary(model: LayerStack) -> str:
    """The table ``model.summary()`` returns (the batch dimension shown as None)."""
    rows = _rows(model)
    head = ("Layer", "Output shape", "Params")
    w0 = max(len(head[0]), *(len(r[0]) for r in rows)) if rows else len(head[0])
    w1 = max(len(head[1]), *(len(r[1]) for r in rows)) if rows else len(head[1])
    w2 = max(len(head[2]), *(len(f"{r[2]:,}") for r in rows)) if rows else len(head[2])
    rule = "=" * (w0 + w1 + w2 + 4)
    lines = [f"{type(model).__name__}", rule,
             f"{head[0]:<{w0}}  {head[1]:<{w1}}  {head[2]:>{w2}}", rule]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2},}" for a, b, c in rows]
    trainable, buffers = _count(model.parameters()), _count([b for _, b in model.named_buffers()])
    lines += [rule, f"Trainable parameters: {trainable:,}",
              f"Non-trainable (BatchNorm statistics): {buffers:,}",
              f"Total: {trainable + buffers:,}  dtype: {model.dtype}  backend: "
              f"{model.backend.name}"]
    return "\n".join(lines)
