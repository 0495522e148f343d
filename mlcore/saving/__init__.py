"""Saving: the model file format (safetensors with the architecture in its metadata), model
files (:func:`save`, :func:`load`) and training checkpoints (:func:`save_checkpoint`,
:func:`load_checkpoint`). Files are written atomically and verified when read; layers are
rebuilt by registered type name (:mod:`mlcore.layers.registry`)."""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .io import load, save

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "Checkpoint"]
