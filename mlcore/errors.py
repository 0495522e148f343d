"""The few exceptions mlcore raises, each carrying the object at fault.

Every message says what went wrong, what was expected, what was received and, where there
is one, the fix (the form Keras and scikit-learn use).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MlcoreError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "BackendMismatchError",
    "DeviceMismatchError",
    "UnknownNameError",
    "InvalidParameterError",
    "ShapeError",
    "DTypeError",
    "InvalidValueError",
    "PluginLoadError",
    "PluginConflictError",
    "ModelFileError",
    "NonFiniteError",
    "DistributedError",
    "PluginWarning",
    "CompiledStepWarning",
]


class MlcoreError(Exception):
    """Base class of every error mlcore raises on purpose.

    ``obj`` is the object at fault (a name, an array, a plugin record), when there is one.
    """

    def __init__(self, message: str, obj: Any = None) -> None:
        super().__init__(message)
        self.obj = obj


class BackendNotFoundError(MlcoreError, LookupError):
    """A backend name that no installed plugin provides."""


class BackendUnavailableError(MlcoreError, RuntimeError):
    """A backend that is installed but cannot run here (for example CuPy without a GPU)."""


class BackendMismatchError(MlcoreError, TypeError):
    """Arrays of two backends met in one call; mlcore never transfers them silently."""


class DeviceMismatchError(MlcoreError, ValueError):
    """Arrays on two devices met in one call; mlcore never transfers them silently."""


class UnknownNameError(MlcoreError, LookupError):
    """An activation, loss, initialiser or optimiser name that nothing registered."""


class InvalidParameterError(MlcoreError, TypeError):
    """A parameter that a function or factory does not accept, or a bad parameter value."""


class ShapeError(MlcoreError, ValueError):
    """Arrays whose shapes do not fit the operation."""


class DTypeError(MlcoreError, TypeError):
    """An array of the wrong data type (for example integers where floats are required)."""


class InvalidValueError(MlcoreError, ValueError):
    """Values that are out of range: NaN in data, labels outside the classes, and so on."""


class NonFiniteError(MlcoreError, FloatingPointError):
    """Training met a NaN or infinite loss; ``obj`` is that loss value (see ``fit``'s
    ``on_nonfinite``)."""


class PluginLoadError(MlcoreError, ImportError):
    """A plugin that failed to import or to register (raised in strict plugin mode)."""


class PluginConflictError(MlcoreError, LookupError):
    """A name provided by two plugins; the message names both distributions."""


class ModelFileError(MlcoreError, ValueError):
    """A model file that is missing, truncated, tampered with or of an unknown format."""


class DistributedError(MlcoreError, RuntimeError):
    """Processes of a distributed job that disagree (model, dtype, data size, settings), or
    a distributed set-up that cannot work here (mpi4py missing)."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register and was skipped (``MLCORE_STRICT_PLUGINS=1``
    turns this into :class:`PluginLoadError`)."""


class CompiledStepWarning(UserWarning):
    """The backend's compiled training step could not run this model, loss or optimiser (a
    loss that reads a value back with ``float()``, for example), so training goes on with
    the eager step. ``jit_compile=False`` skips compiling; ``jit_compile=True`` raises
    instead of warning."""
