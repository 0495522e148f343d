"""mlcore's JAX backend: the same core on immutable JAX arrays, the training step compiled,
on the backend kit (:mod:`mlcore_numpy.kit`: JAX imported lazily, unavailable with the
reason where JAX or the device is missing; the same seed gives NumPy's weights).

Devices: ``cpu``, ``gpu`` / ``cuda``, ``tpu``, each optionally ``:N``, else JAX's default.
JAX arrays are immutable (``inplace = False``); a whole training step is compiled with
``jax.jit`` (:meth:`JaxBackend.compile_step`), donating the old parameters and optimiser
state: keep no reference to a parameter's old ``value`` across a compiled step. float64
needs JAX's 64-bit mode (``JAX_ENABLE_X64=1``): asking for it without raises instead of
silently computing in float32; host float64 data with ``dtype=None`` becomes float32.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from mlcore_numpy import LibraryBackend

__all__ = ["JaxBackend", "mlcore_backends", "mlcore_compile_step", "parse_device"]
__version__ = "0.1.0"

_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def parse_device(spec: object, source: str = "device") -> tuple[str, int] | None:
    """``(platform, index)`` for ``spec`` (``"cpu"``, ``"gpu:1"``, ``"cuda:0"``, ``"tpu"``,
    a ``jax.Device``), or None for JAX's default device (``None`` or ``""``)."""
    if spec is None:
        return None
    platform = getattr(spec, "platform", None)
    if isinstance(platform, str) and isinstance(getattr(spec, "id", None), int):
        jax = importlib.import_module("jax")  # a jax.Device: JAX is imported already
        return _PLATFORMS.get(platform, platform), list(jax.devices(platform)).index(spec)
    text = str(spec).strip().lower()
    if not text:
        return None
    kind, _, number = text.partition(":")
    if kind in _PLATFORMS and (number == "" or number.isdigit()):
        return _PLATFORMS[kind], int(number or 0)
    raise ValueError(
        f"{source}={spec!r} is not a JAX device: expected 'cpu', 'gpu' (or 'cuda'), or "
        f"'tpu', optionally with ':N' for the N-th device, for example {source}=cpu.")


class JaxBackend(LibraryBackend):
    """Arrays are ``jax.Array`` on one device; ``xp`` is ``jax.numpy`` (Array API standard)."""

    name, library, array_type, namespace, label = "jax", "jax", "Array", "jax.numpy", "JAX"
    install_hint = "pip install 'mlcore-jax[jax]' (or pip install jax)"
    import_names = ("jax", "jaxlib")
    inplace = False  # JAX arrays are immutable: the core never writes into them
    shape_errors = (TypeError,)  # what JAX raises for shapes that do not broadcast
    parse_device = staticmethod(parse_device)

    def make_device(self, wanted: tuple[str, int] | None) -> Any:
        """The ``jax.Device`` arrays are placed on."""
        return self.lib.devices()[0] if wanted is None else self.lib.devices(wanted[0])[wanted[1]]

    def device_text(self, wanted: tuple[str, int] | None) -> str | None:
        return None if wanted is None else f"{wanted[0]}:{wanted[1]}"

    def device_problem(self, wanted: tuple[str, int] | None, where: str) -> str:
        if wanted is None:
            return ""
        platform, index = wanted
        try:
            count = len(self.lib.devices(platform))
        except RuntimeError as exc:
            return f"{where} asks for {platform}:{index} but JAX has no {platform} ({exc})."
        if index >= count:
            return (f"{where} asks for {platform}:{index} but JAX sees only {count} "
                    f"{platform} device(s).")
        return ""

    @property
    def x64(self) -> bool:
        """Whether JAX's 64-bit mode is on (float64 and int64 arrays exist)."""
        return bool(self.lib.config.read("jax_enable_x64"))

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step`` compiled with ``jax.jit``, donating the parameters and state (0, 1)."""
        return self.lib.jit(step, donate_argnums=(0, 1))  # type: ignore[no-any-return]

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a JAX array on this backend's device (host data is always copied).

        A JAX array on another device is moved here: calling ``asarray`` is the explicit
        transfer, the core never does it. ``dtype=float64`` without 64-bit mode raises.
        """
        jax = self.lib
        if dtype is not None:
            self._check_dtype(dtype)
        if isinstance(obj, jax.Array):
            out = obj if dtype is None else obj.astype(dtype)
            return out if self.device in out.devices() else jax.device_put(out, self.device)
        host = np.asarray(obj)
        if host.dtype.kind not in "biufc":
            raise TypeError(f"cannot convert an array of dtype {host.dtype} to a JAX array")
        if dtype is None and not self.x64:
            host = host.astype(_narrow(host.dtype), copy=False)  # what JAX would do, silently
        return jax.device_put(self.xp.asarray(host, dtype=dtype), self.device)

    def _check_dtype(self, dtype: Any) -> None:
        if self.x64 or np.dtype(dtype).itemsize < 8:
            return
        raise TypeError(
            f"The jax backend was asked for {np.dtype(dtype).name} but JAX's 64-bit mode is "
            f"off, so JAX would silently compute in 32 bits. Set JAX_ENABLE_X64=1 (or call "
            f"jax.config.update('jax_enable_x64', True) before creating any array), or use "
            f"dtype='float32'.")

    def synchronize(self) -> None:
        """Wait until every live JAX array is computed (JAX dispatches asynchronously, eager
        operations and compiled steps alike; arrays already computed cost about a µs)."""
        self.lib.block_until_ready(self.lib.live_arrays())

    def kernel_info(self) -> str:
        """One line for ``mlcore info``: JAX's version, 64-bit mode and step compilation."""
        jax = self.lib
        return (f"jax {jax.__version__} ({jax.default_backend()}), 64-bit mode "
                f"{'on' if self.x64 else 'off'}; training step compiled with jax.jit")


def _narrow(dtype: np.dtype[Any]) -> Any:
    """The 32-bit dtype JAX stores a 64-bit host dtype as when 64-bit mode is off."""
    return {"f": np.float32, "i": np.int32, "u": np.uint32}.get(dtype.kind, dtype) \
        if dtype.itemsize == 8 else dtype


mlcore_backends = JaxBackend.backends_hook()
mlcore_compile_step = JaxBackend.compile_step_hook()
