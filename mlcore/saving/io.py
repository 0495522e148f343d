"""Saving and loading models: one pickle-free safetensors file, checked whole, written
atomically.

The file is a standard `safetensors <https://huggingface.co/docs/safetensors>`_ file: the
parameters as named tensors (``layers.0.weight`` ...), and in its string metadata the
architecture as JSON (``mlcore.config``), the format version and a SHA-256 over the whole
file (see :mod:`mlcore.saving.format`). Loading parses only JSON and raw tensor bytes, so a
file can never execute code; it checks the checksum, then the architecture against the
tensors' shapes, before a layer is built: a truncated, damaged, tampered or foreign file
raises :class:`~mlcore.errors.ModelFileError`, and no allocation exceeds what the file holds.

Saving behaves like a careful tool: the bytes go to a temporary file in the destination's
folder, are flushed to disk (``fsync``), then renamed over the destination, so a crash never
leaves a half-written model. A symlink is written through (its target is replaced, the link
stays); an existing file keeps its permission bits; a new file gets the usual ones (0666
less the umask); a read-only destination is refused. Every error names the path you passed.

Tensors are written from host copies (``backend.to_numpy``) and read back through the target
backend's ``asarray``, so a model saved on one backend loads on any other. safetensors is one
of mlcore's dependencies.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from typing import Any

from ..backend import get_backend, use_backend
from ..errors import InvalidParameterError, MlcoreError, ModelFileError
from ..layers.registry import check_registered, layer_from_config
from ..layers.stack import LayerStack
from .format import FORMAT, FORMAT_VERSION, check_tensors, parse, seal, tensor_digest

__all__ = ["save", "load", "architecture", "FORMAT", "FORMAT_VERSION", "CHECKPOINT_KEY"]

CHECKPOINT_KEY = "mlcore.checkpoint"
"""The metadata entry that makes a model file a training checkpoint
(:mod:`mlcore.saving.checkpoint`)."""


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:
        raise ModuleNotFoundError(
            "Saving and loading models needs safetensors, a dependency of mlcore that is "
            "missing from this environment. Install it with: pip install safetensors.") from exc
    return st


def _c_order(host: Any) -> Any:
    """A host (NumPy) array in C order: ``Backend.to_numpy`` promises it; a third-party
    backend that returns another layout is copied here rather than trusted."""
    return host if host.flags.c_contiguous else host.copy(order="C")


def _where(path: Any, what: str) -> str:
    """The user's path as text, for messages (str, bytes or os.PathLike)."""
    try:
        return os.fsdecode(path)
    except TypeError as exc:
        raise InvalidParameterError(
            f"{what} needs a file path (str or pathlib.Path), received "
            f"{type(path).__name__}.", path) from exc


def architecture(model: LayerStack, what: str) -> str:
    """The architecture as JSON, refused (one message, for ``save``, ``save_checkpoint``
    and ``ModelCheckpoint`` alike) when a file could not rebuild it: a layer whose class is
    registered under no layer type (:func:`~mlcore.layers.check_registered`), or a config
    that is not JSON data. ``what`` starts the message."""
    if not isinstance(model, LayerStack):
        raise InvalidParameterError(
            f"{what}: save expects an mlcore model (Sequential or MLP), received "
            f"{type(model).__name__}.", model)
    check_registered(model, what)
    try:
        return json.dumps(model.config(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"{what}: its architecture is not JSON data ({exc}). A layer's get_config() must "
            f"return numbers, strings, booleans, None, lists and dicts only.", model) from exc


def save(model: LayerStack, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s weights and architecture to ``path`` (atomically; see the module)."""
    st = _safetensors()
    where = _where(path, "save")
    config = architecture(model, f"Cannot save the model to {where!r}")
    backend = model.backend
    # C order: safetensors writes an array's memory as it lies, so a Fortran-ordered array
    # (Dense weights are stored that way) would come back transposed (the checksum catches it)
    tensors = {name: _c_order(backend.to_numpy(v)) for name, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "mlcore.config": config,
                "sha256": "0" * 64}
    _write(seal(st.save(tensors, metadata=metadata)), where)


def _destination(where: str) -> tuple[str, int | None]:
    """The real file to replace (a symlink's target) and its permission bits, if it exists."""
    target = os.path.realpath(where)
    if os.path.isdir(target):
        raise ModelFileError(f"Cannot save to {where!r}: it is a folder. Pass a file path, "
                             f"for example {os.path.join(where, 'model.safetensors')!r}.", where)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        shown = os.path.dirname(where) or "."
        raise ModelFileError(f"Cannot save to {where!r}: the folder {shown!r} does not exist. "
                             f"Create it first (os.makedirs).", where)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return target, None
    if not mode & 0o222 or not os.access(target, os.W_OK):
        raise ModelFileError(f"Cannot save to {where!r}: the file is read-only. Make it "
                             f"writable (chmod u+w) or save to another path.", where)
    return target, mode


def _write(blob: bytes, where: str) -> None:
    """Write ``blob`` to a temporary file beside the destination, fsync, rename over it."""
    target, mode = _destination(where)
    folder = os.path.dirname(target)
    _remove_stale(folder, os.path.basename(target))
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(4)}.tmp")
    try:
        # a new file: 0o666 less the umask (the kernel applies it); else the old bits
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
        _hold(fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ModelFileError(f"Could not save to {where!r}: {exc.strerror or exc}.",
                             where) from exc
    _fsync_folder(folder)


STALE_SECONDS = 600.0
"""A temporary file of a save older than this, unlocked, was left by a killed writer."""


def _remove_stale(folder: str, name: str) -> None:
    """Delete what killed saves of ``name`` left behind (``.name.<hex>.tmp``): a temporary
    file older than :data:`STALE_SECONDS` whose writer holds no lock on it. A live writer
    holds an exclusive ``flock`` from creation to rename (POSIX); where flock is missing,
    age alone decides."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]{{8}}\.tmp$")
    try:
        entries = [e for e in os.scandir(folder) if pattern.match(e.name)]
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_SECONDS \
                    or not entry.is_file(follow_symlinks=False) or _locked(entry.path):
                continue
            os.unlink(entry.path)
        except OSError:
            continue


def _locked(path: str) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the age test alone applies
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def _hold(fd: int) -> None:
    """Lock a temporary file for as long as this process writes it (see _remove_stale)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (where the file system supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(where: str) -> bytes:
    try:
        with open(where, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise ModelFileError(f"No model file at {where!r}.", where) from exc
    except OSError as exc:
        raise ModelFileError(f"Cannot read the model file {where!r}: {exc.strerror or exc}.",
                             where) from exc


def _tensors(st: Any, blob: bytes, meta: dict[str, str], where: str) -> dict[str, Any]:
    try:
        tensors: dict[str, Any] = st.load(blob)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise ModelFileError(
            f"{where!r} is not a readable mlcore model file (truncated or corrupted?): {exc}",
            where) from exc
    if meta.get("format_version") == "1" and meta.get("sha256") != tensor_digest(tensors):
        raise ModelFileError(f"{where!r} failed its checksum: the weights were changed or "
                             f"damaged after saving.", where)
    return tensors


def load(path: str | os.PathLike[str], backend: str | None = None) -> LayerStack:
    """Read a model saved by :func:`save` onto ``backend`` (default: the selected one).

    A checkpoint (:func:`mlcore.save_checkpoint`, ``ModelCheckpoint``) loads too: its model
    (use :func:`mlcore.load_checkpoint` for the optimiser and the epoch as well).

    Everything is checked before a layer is built (see the module); any fault is a
    :class:`~mlcore.errors.ModelFileError` naming ``path``.
    """
    st = _safetensors()
    where = _where(path, "load")
    blob = _read(where)
    table, meta, config = parse(blob, where)
    checkpoint = CHECKPOINT_KEY in meta  # ModelCheckpoint's file: the model it holds, as
    if checkpoint:  # Keras' load_model reads what ModelCheckpoint wrote
        table = {k[6:]: v for k, v in table.items() if k.startswith("model.")}
    check_tensors(table, config, where)
    tensors = _tensors(st, blob, meta, where)
    if checkpoint:
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    chosen = get_backend(backend)
    with use_backend(chosen):
        model = layer_from_config(config)
        if not isinstance(model, LayerStack):
            raise ModelFileError(f"{where!r} holds a {type(model).__name__}, not a model.",
                                 where)
        try:
            model.load_state_dict({k: chosen.asarray(v) for k, v in tensors.items()})
        except MlcoreError as exc:
            raise ModelFileError(f"{where!r}: the weights do not fit the architecture: "
                                 f"{exc}", where) from exc
    return model
