"""Training checkpoints: the model, the optimiser's state and the epoch, in one file.

A checkpoint is a safetensors file, written atomically like a model file
(:func:`mlcore.saving.io.save`): tensors ``model.<name>`` (weights and BatchNorm statistics) and
``optimizer.<slot>.<i>`` (moments, momentum buffers), and in its metadata the architecture,
the optimiser's registered name, options and counters, the epoch and a SHA-256 over the
whole file (:mod:`mlcore.saving.format`). :func:`load_checkpoint` rebuilds both objects, so

    ck = load_checkpoint("ckpt.safetensors")
    ck.model.fit(X, y, loss=..., optimizer=ck.optimizer, initial_epoch=ck.epoch, epochs=20,
                 seed=S)

continues exactly where the run that wrote it was (same weights, same shuffling order;
Dropout masks excepted, their random stream is not saved).
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, NamedTuple

from ..backend import get_backend, use_backend
from ..errors import ModelFileError
from ..layers.registry import layer_from_config
from ..layers.stack import LayerStack
from ..optimizers import Optimizer, get_optimizer
from ..plugins import registry
from .format import FORMAT, FORMAT_VERSION, check_tensors, parse, seal
from .io import (
    CHECKPOINT_KEY,
    _c_order,
    _read,
    _safetensors,
    _tensors,
    _where,
    _write,
    architecture,
)

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]

_KEY = CHECKPOINT_KEY  # the metadata entry that makes a model file a checkpoint


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    model: LayerStack
    optimizer: Optimizer
    epoch: int


def _registered_name(optimizer: Optimizer) -> str:

    reg = registry()
    for name in reg.names("optimizers"):
        if reg.lookup("optimizers", name) is type(optimizer):
            return name
    raise ModelFileError(
        f"{type(optimizer).__name__} is not a registered optimiser, so a checkpoint could "
        f"not rebuild it. Register it through the mlcore_optimizers hook.", optimizer)


def _options(optimizer: Optimizer) -> dict[str, Any]:
    """The constructor arguments of ``optimizer`` that it keeps as attributes."""
    names = list(inspect.signature(type(optimizer).__init__).parameters)[2:]
    return {n: getattr(optimizer, n) for n in names if hasattr(optimizer, n)}


def save_checkpoint(path: str | os.PathLike[str], model: LayerStack, optimizer: Optimizer, *,
                    epoch: int) -> None:
    """Write ``model``, ``optimizer``'s state and ``epoch`` (epochs done) to ``path``."""
    st, to_host, where = _safetensors(), model.backend.to_numpy, _where(path, "save")
    config = architecture(model, f"Cannot save a checkpoint to {where!r}")
    tensors = {f"model.{k}": _c_order(to_host(v)) for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {}
    for key, value in optimizer.state_dict().items():
        if hasattr(value, "shape"):
            tensors[f"optimizer.{key}"] = _c_order(to_host(value))
        else:
            scalars[key] = value
    opt = {"name": _registered_name(optimizer), "options": _options(optimizer),
           "state": scalars, "epoch": int(epoch)}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, _KEY: json.dumps(opt),
                "mlcore.config": config, "sha256": "0" * 64}
    _write(seal(st.save(tensors, metadata=metadata)), where)


def _rebuild(cls: type[Optimizer], model: LayerStack, opt: dict[str, Any],
             where: str) -> Optimizer:
    """The optimiser with the file's options; an option this mlcore's class does not take
    (a file from another version, or a plugin's optimiser that changed) is named."""
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in opt["options"] if k not in accepted and not takes_any]
    if unknown:
        raise ModelFileError(
            f"{where!r} saved optimiser {opt['name']!r} with the option "
            f"{', '.join(map(repr, unknown))}, which {cls.__name__} here does not take "
            f"(it takes {', '.join(list(accepted)[2:])}). The file comes from another "
            f"version of mlcore or of the plugin providing {opt['name']!r}: load it there, "
            f"or load just the model with mlcore.load({where!r}).", where)
    try:
        return cls(model.parameters(), **opt["options"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{where!r}: optimiser {opt['name']!r} could not be rebuilt from the saved "
            f"options {opt['options']!r}: {exc}. Load just the model with "
            f"mlcore.load({where!r}).", where) from exc


def load_checkpoint(path: str | os.PathLike[str], backend: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (or ``ModelCheckpoint``),
    checked as a model file is (checksum over the whole file, tensors against the
    architecture) before anything is built."""
    st, where = _safetensors(), _where(path, "load")
    blob = _read(where)
    table, meta, config = parse(blob, where)
    if _KEY not in meta:
        raise ModelFileError(f"{where!r} is a model file, not an mlcore checkpoint; load it "
                             f"with mlcore.load.", where)
    check_tensors({k[6:]: v for k, v in table.items() if k.startswith("model.")}, config, where)
    opt = json.loads(meta[_KEY])
    chosen = get_backend(backend)
    arrays = {k: chosen.asarray(v) for k, v in _tensors(st, blob, meta, where).items()}
    with use_backend(chosen):
        model = layer_from_config(config)
        if not isinstance(model, LayerStack):
            raise ModelFileError(f"{where!r} holds no model.", where)
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})

        cls = type(get_optimizer(opt["name"], model.parameters()))
        optimizer = _rebuild(cls, model, opt, where)
        state = dict(opt["state"])
        state.update({k[10:]: v for k, v in arrays.items() if k.startswith("optimizer.")})
        optimizer.load_state_dict(state)
    return Checkpoint(model, optimizer, int(opt["epoch"]))
