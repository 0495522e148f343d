"""Building the plugin registry once, across threads, without deadlock.

The thread that first needs the registry builds it; no lock is held while plugin code runs.
Another thread that needs it meanwhile waits, except in two cases, where it gets
:class:`~mlcore.errors.PluginLoadError` instead of waiting forever:

- it *is* the building thread (a plugin called mlcore at import or in a hook);
- the building thread is inside plugin code and has been seen blocked on another thread
  (``Thread.join``, a ``Future``, a queue: its innermost frame is in ``threading`` or
  ``queue``) for :data:`STUCK_POLLS` polls in a row: the plugin waits for a thread that
  waits for mlcore.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import PluginLoadError

__all__ = ["LoadOnce"]

_WAITING_IN = frozenset({"threading.py", "queue.py"})
STUCK_POLLS = 5  # polls of 20 ms


class LoadOnce:
    """Who builds, and which plugin's code the builder is running (for the checks above)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.builder: int | None = None
        self.in_plugin: Any = None  # the PluginRecord whose code runs now

    @contextmanager
    def running(self, record: Any) -> Iterator[None]:
        """Mark plugin code (an import, a hook call) run by the builder."""
        self.in_plugin = record
        try:
            yield
        finally:
            self.in_plugin = None

    def _builder_blocked(self) -> bool:
        if self.in_plugin is None or self.builder is None:
            return False
        frame = sys._current_frames().get(self.builder)
        return frame is not None and os.path.basename(frame.f_code.co_filename) in _WAITING_IN

    def wait_or_claim(self, built: Callable[[], Any]) -> Any:
        """``built()`` once it is not None; or None when this thread must build (it is
        then the builder until :meth:`release`)."""
        me, stuck = threading.get_ident(), 0
        with self.cond:
            while built() is None:
                if self.builder is None:
                    self.builder = me
                    return None
                if self.builder == me or stuck >= STUCK_POLLS:
                    who = self.in_plugin.describe() if self.in_plugin else "a plugin"
                    raise PluginLoadError(
                        f"A plugin called mlcore while mlcore's plugins were being loaded (by "
                        f"{who}). Plugins must do nothing at import time or in their hooks "
                        f"but return what they provide.", self.in_plugin)
                self.cond.wait(0.02)
                stuck = stuck + 1 if self._builder_blocked() else 0
            return built()

    def release(self, publish: Callable[[], None]) -> None:
        """The builder is done: ``publish()`` the result under the lock, wake the waiters."""
        with self.cond:
            self.builder = None
            publish()
            self.cond.notify_all()
