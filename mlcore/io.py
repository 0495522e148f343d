"""Saving and loading models: one pickle-free safetensors file, written atomically.

The file is a standard `safetensors <https://huggingface.co/docs/safetensors>`_ file: the
parameters as named tensors (``layers.0.weight`` ...), and in its string metadata the
architecture as JSON (``mlcore.config``), the format version and a SHA-256 over every
tensor's name, dtype, shape and bytes. Loading parses only JSON and raw tensor bytes, so a
file can never execute code; a truncated, tampered or foreign file raises
:class:`~mlcore.errors.ModelFileError`. Writing goes to a temporary file in the same folder,
then ``os.replace``, so a crash never leaves a half-written model behind.

Tensors are written from host copies (``backend.to_numpy``) and read back through the target
backend's ``asarray``, so a model saved on one backend loads on any other. safetensors is an
optional extra: ``pip install "mlcore[io]"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .backend import get_backend, use_backend
from .errors import MlcoreError, ModelFileError
from .model import Sequential, layer_from_config

__all__ = ["save", "load", "write_atomic", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mlcore"
FORMAT_VERSION = "1"


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:
        raise ModuleNotFoundError(
            "Saving and loading models needs safetensors, which is not installed. Install it "
            "with: pip install 'mlcore[io]'.") from exc
    return st


def _digest(tensors: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype.str}|{tuple(t.shape)}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def _c_order(host: Any) -> Any:
    """A host (NumPy) array in C order: ``Backend.to_numpy`` promises it; a third-party
    backend that returns another layout is copied here rather than trusted."""
    return host if host.flags.c_contiguous else host.copy(order="C")


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s weights and architecture to ``path`` (atomically)."""
    st = _safetensors()
    backend = model.backend
    # C order: safetensors writes an array's memory as it lies, so a Fortran-ordered array
    # (Dense weights are stored that way) would come back transposed (the checksum catches it)
    tensors = {name: _c_order(backend.to_numpy(v)) for name, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "mlcore.config": json.dumps(model.config()), "sha256": _digest(tensors)}
    write_atomic(path, st.save(tensors, metadata=metadata))


def write_atomic(path: str | os.PathLike[str], blob: bytes) -> None:
    """Write ``blob`` to a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                               dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    st = _safetensors()
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFileError(f"No model file at {str(path)!r}.", str(path)) from exc
    try:
        tensors = st.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise ModelFileError(
            f"{str(path)!r} is not a readable mlcore model file (truncated or corrupted?): "
            f"{exc}", str(path)) from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return tensors, meta if isinstance(meta, dict) else {}


def _check_metadata(path: Path, tensors: dict[str, Any], meta: dict[str, str]) -> Any:
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not an mlcore model "
                             f"(no mlcore metadata).", str(path))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} has mlcore format version {meta.get('format_version')!r}; this "
            f"mlcore reads version {FORMAT_VERSION}. Upgrade mlcore.", str(path))
    if meta.get("sha256") != _digest(tensors):
        raise ModelFileError(f"{str(path)!r} failed its checksum: the weights were changed "
                             f"or damaged after saving.", str(path))
    try:
        return json.loads(meta["mlcore.config"])
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{str(path)!r} has no valid architecture JSON.",
                             str(path)) from exc


def load(path: str | os.PathLike[str], backend: str | None = None) -> Sequential:
    """Read a model saved by :func:`save` onto ``backend`` (default: the selected one)."""
    target = Path(path)
    tensors, meta = _read(target)
    config = _check_metadata(target, tensors, meta)
    chosen = get_backend(backend)
    with use_backend(chosen.name):
        model = layer_from_config(config)
        if not isinstance(model, Sequential):
            raise ModelFileError(f"{str(path)!r} holds a {type(model).__name__}, not a model.",
                                 str(path))
        try:
            model.load_state_dict({k: chosen.asarray(v) for k, v in tensors.items()})
        except MlcoreError as exc:
            raise ModelFileError(f"{str(path)!r}: the weights do not fit the architecture: "
                                 f"{exc}", str(path)) from exc
    return model
