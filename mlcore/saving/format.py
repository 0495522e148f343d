"""The model file format, checked before anything is built: header, checksum, structure.

A file is a safetensors file whose string metadata holds ``format`` (``"mlcore"``),
``format_version``, the architecture as JSON (``mlcore.config``) and ``sha256``.

Version 2 (written now): ``sha256`` is the SHA-256 of the *whole file* with the 64 hex
digits of the checksum itself replaced by zeros, so every byte (length prefix, header,
architecture, tensor table, padding, tensor bytes, anything appended) is covered: one
flipped bit anywhere is a :class:`~mlcore.errors.ModelFileError`. Version 1 (earlier
mlcore) covered only the tensors' names, dtypes, shapes and bytes; such files still load,
with that weaker check (save them again to protect the whole file).

A checksum proves a file is what mlcore wrote, not that its author was honest, so the
architecture is also checked against the tensors before a layer is built: every parameter
the architecture implies must be in the file with that exact shape and dtype, so nothing
allocated exceeds what the file holds; nesting is at most :data:`MAX_DEPTH` deep and sizes
are positive integers. A plugin layer's tensors are those its class declares
(``tensor_specs(config)``) or, when it declares none, those of the layer its
``from_config`` builds (the plugin's own code, installed by the user, runs once).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..errors import MlcoreError, ModelFileError
from ..layers.registry import layer_class, layer_types

__all__ = ["FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS", "MAX_DEPTH", "seal", "parse",
           "expected_tensors", "tensor_digest"]

FORMAT = "mlcore"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
MAX_DEPTH = 32  # layers nested in Sequential inside Sequential ...
MAX_SIZE = 2**31 - 1  # a layer width larger than this is not a real model
_HEADER_MAX = 100_000_000  # safetensors' own limit on the header
_PLACEHOLDER = "0" * 64
_DIGEST_FIELD = re.compile(rb'"sha256"\s*:\s*"([0-9a-f]{64})"')
_DTYPES = {"float32": "F32", "float64": "F64"}
LAYER_TYPES = ("Dense", "PReLU", "Activation", "Dropout", "LayerNorm", "BatchNorm",
               "Sequential", "MLP")  # model.layer_types()


def tensor_digest(tensors: dict[str, Any]) -> str:
    """Version 1's checksum: every tensor's name, dtype, shape and bytes, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype.str}|{tuple(t.shape)}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def _digest_span(blob: bytes, header_end: int) -> tuple[int, int] | None:
    found = list(_DIGEST_FIELD.finditer(blob, 8, header_end))
    return found[0].span(1) if len(found) == 1 else None


def _whole_digest(blob: bytes, span: tuple[int, int]) -> str:
    h = hashlib.sha256()
    h.update(memoryview(blob)[: span[0]])
    h.update(_PLACEHOLDER.encode())
    h.update(memoryview(blob)[span[1]:])
    return h.hexdigest()


def seal(blob: bytes) -> bytes:
    """``blob`` (written with ``sha256`` = 64 zeros) with its whole-file checksum filled in."""
    header_end = 8 + int.from_bytes(blob[:8], "little")
    span = _digest_span(blob, header_end)
    if span is None:  # safetensors always writes the field once; never expected
        raise RuntimeError("mlcore could not place the checksum in the model file")
    digest = _whole_digest(blob, span).encode()
    return blob[: span[0]] + digest + blob[span[1]:]


def _fail(where: str, what: str) -> ModelFileError:
    return ModelFileError(f"{where!r} {what}", where)


def parse(blob: bytes, where: str) -> tuple[dict[str, Any], dict[str, str], Any]:
    """``(tensor table, metadata, architecture)`` of ``blob``, checked; ``where`` names
    the user's path in errors."""
    bad = "is not a readable mlcore model file (truncated or corrupted?): "
    if len(blob) < 8:
        raise _fail(where, bad + f"it holds {len(blob)} bytes.")
    n = int.from_bytes(blob[:8], "little")
    if n > min(_HEADER_MAX, len(blob) - 8):
        raise _fail(where, bad + f"its header claims {n} bytes; the file holds {len(blob)}.")
    try:
        header = json.loads(blob[8: 8 + n])
    except (ValueError, RecursionError) as exc:
        raise _fail(where, bad + f"its header is not valid JSON ({exc}).") from exc
    if not isinstance(header, dict):
        raise _fail(where, bad + "its header is not a JSON object.")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(where, "is a safetensors file but not an mlcore model (no mlcore metadata).")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise _fail(where, f"has mlcore format version {version!r}; this mlcore reads versions "
                           f"{', '.join(READABLE_VERSIONS)}. Upgrade mlcore, or the file is "
                           f"damaged.")
    if version != "1":
        span = _digest_span(blob, 8 + n)
        if span is None or meta.get("sha256") != blob[span[0]:span[1]].decode() \
                or _whole_digest(blob, span) != meta.get("sha256"):
            raise _fail(where, "failed its checksum: the file was changed or damaged after "
                               "saving.")
    return header, meta, _architecture(meta, where)


def _architecture(meta: dict[str, str], where: str) -> Any:
    try:
        config = json.loads(meta["mlcore.config"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise _fail(where, "has no valid architecture JSON.") from exc
    if _depth(config) > MAX_DEPTH:
        raise _fail(where, f"nests its architecture more than {MAX_DEPTH} levels deep.")
    return config


def _depth(obj: Any) -> int:
    """How deeply ``obj`` nests lists and dicts (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _size(cfg: dict[str, Any], key: str) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIZE:
        raise ValueError(f"{cfg.get('type')} {key} must be a positive integer, found {v!r}")
    return v


def _dtype(cfg: dict[str, Any]) -> str:
    dt = cfg.get("dtype")
    if dt not in _DTYPES:
        raise ValueError(f"{cfg.get('type')} dtype must be float32 or float64, found {dt!r}")
    return _DTYPES[dt]


def expected_tensors(cfg: Any, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    """``{parameter name: (shape, safetensors dtype)}`` the architecture ``cfg`` implies,
    computed without building anything (the names of :meth:`Sequential.named_parameters`).

    Raises ValueError or KeyError or TypeError on a malformed entry.
    """
    kind = cfg["type"] if isinstance(cfg, dict) else None
    if kind == "Dense":
        o, i, dt = _size(cfg, "out_features"), _size(cfg, "in_features"), _dtype(cfg)
        bias = {f"{prefix}bias": ((o,), dt)} if cfg["bias"] else {}
        return {f"{prefix}weight": ((o, i), dt), **bias}
    if kind == "PReLU":
        return {f"{prefix}alpha": ((_size(cfg, "num_parameters"),), _dtype(cfg))}
    if kind == "Sequential":
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for i, layer in enumerate(list(cfg["layers"])):
            out |= expected_tensors(layer, f"{prefix}layers.{i}.")
        return out
    if kind == "MLP":
        return expected_tensors(_mlp_layers(cfg), prefix)
    if kind in ("LayerNorm", "BatchNorm"):
        shape, dt = (_size(cfg, "num_features"),), _dtype(cfg)
        names = ("weight", "bias") + (("running_mean", "running_var") if kind == "BatchNorm"
                                      else ())
        return {f"{prefix}{n}": (shape, dt) for n in names}
    if kind in ("Activation", "Dropout"):
        return {}
    cls = layer_class(kind)
    if cls is None or kind in LAYER_TYPES:
        raise ValueError(f"Unknown layer type {kind!r}; known: {', '.join(layer_types())}")
    return {f"{prefix}{name}": (tuple(shape), _DTYPES[dt])
            for name, (shape, dt) in _plugin_specs(cls, cfg).items()}


def _plugin_specs(cls: Any, cfg: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """A plugin layer's tensors: its ``tensor_specs(config)`` when it declares them (nothing
    built), else those of the layer its ``from_config`` builds."""
    specs = getattr(cls, "tensor_specs", None)
    if callable(specs):
        return specs(cfg)  # type: ignore[no-any-return]
    layer = cls.from_config(cfg)
    xp = layer.backend.xp
    return {n: (tuple(p.shape), "float64" if p.value.dtype == xp.float64 else "float32")
            for n, p in layer.named_parameters() + layer.named_buffers()}


def _mlp_layers(cfg: dict[str, Any]) -> dict[str, Any]:
    """The Sequential an MLP config stands for (the layer order :class:`MLP` builds)."""
    sizes, dt = list(cfg["sizes"]), cfg.get("dtype")
    layers: list[dict[str, Any]] = []
    for k in range(len(sizes) - 1):
        layers.append({"type": "Dense", "in_features": sizes[k], "out_features": sizes[k + 1],
                       "bias": cfg["bias"], "dtype": dt})
        hidden = k < len(sizes) - 2
        norm = cfg.get("norm") if hidden else None
        if norm is not None:
            kind = {"layer": "LayerNorm", "batch": "BatchNorm"}[norm]
            layers.append({"type": kind, "num_features": sizes[k + 1], "dtype": dt})
        act = cfg["activation"] if hidden else cfg["output_activation"]
        if act == "prelu":
            layers.append({"type": "PReLU", "num_parameters": sizes[k + 1], "dtype": dt})
        elif act is not None:
            layers.append({"type": "Activation"})
        if hidden and cfg.get("dropout"):
            layers.append({"type": "Dropout"})
    return {"type": "Sequential", "layers": layers}


def check_tensors(table: dict[str, Any], config: Any, where: str) -> None:
    """The architecture's parameters against the file's tensor table (names, shapes,
    dtypes), before anything is allocated."""
    try:
        want = expected_tensors(config)
    except (KeyError, TypeError, ValueError, MlcoreError) as exc:
        raise _fail(where, f"has a malformed architecture: {exc}.") from exc
    have = {k: (tuple(v.get("shape", ())), v.get("dtype")) for k, v in table.items()
            if isinstance(v, dict)}
    if want.keys() != table.keys() or any(have[k] != want[k] for k in want):
        diff = sorted(k for k in want.keys() | table.keys() if have.get(k) != want.get(k))
        shown = ", ".join(f"{k}: file {have.get(k)}, architecture {want.get(k)}"
                          for k in diff[:3])
        raise _fail(where, f"holds weights that do not fit the architecture ({shown}).")
