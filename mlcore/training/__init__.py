"""mlcore.training: the training step, ``fit`` and its parts.

:class:`FitOptions` (``mlcore/training/options.py``) is every option of
:func:`mlcore.training.fit.fit`, checked; ``fit``, ``predict``, ``evaluate`` and
``make_train_step`` live in ``mlcore/training/fit.py``.
"""

from .options import FitOptions

__all__ = ["FitOptions"]
