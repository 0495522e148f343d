"""mlcore's JAX backend: the same core on immutable JAX arrays, the training step compiled.

Importing this module never imports JAX, so the backend loads (and says why it cannot run)
where JAX is missing. *Available* means JAX imports **and** the chosen device exists.

Devices are JAX's: ``cpu``, ``gpu`` / ``cuda``, ``tpu``, each optionally ``:N``, from the
``device=`` argument, else ``MLCORE_DEVICE``, else JAX's default device (its first one).
Arrays are placed with an explicit device, so the core is never asked to enter one.

JAX arrays are immutable. The core writes in place only on backends that declare it
(``inplace = True``: NumPy, CuPy); here every update builds a new array, and a whole
training step is compiled by :func:`mlcore_compile_step` with ``jax.jit``, donating the old
parameters and optimiser state so XLA may reuse their buffers. A donated array is deleted:
keep no reference to a parameter's old ``value`` across a compiled step (``state_dict()``
returns the current arrays; call it again after training).

float64 needs JAX's 64-bit mode (``JAX_ENABLE_X64=1``, or
``jax.config.update("jax_enable_x64", True)`` before the first array); without it asking
for float64 raises instead of silently computing in float32. Host float64 data converted
with ``dtype=None`` becomes float32 (and int64 becomes int32), as in JAX itself.

Random numbers are drawn on the host with NumPy's PCG64 (:class:`mlcore_numpy.HostRandom`)
and copied to the device, so the same seed gives the same initial weights as on NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import pluggy
from mlcore_numpy import LibraryBackend

__all__ = ["JaxBackend", "mlcore_backends", "mlcore_compile_step", "parse_device"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")

INSTALL_HINT = "pip install 'mlcore-jax[jax]' (or pip install jax)"
_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def parse_device(spec: object, source: str = "device") -> tuple[str, int] | None:
    """``(platform, index)`` for ``spec`` (``"cpu"``, ``"gpu:1"``, ``"cuda:0"``, ``"tpu"``,
    a ``jax.Device``), or None for JAX's default device (``None`` or ``""``)."""
    if spec is None:
        return None
    platform = getattr(spec, "platform", None)
    if isinstance(platform, str) and isinstance(getattr(spec, "id", None), int):
        return _PLATFORMS.get(platform, platform), _index_on_platform(spec)
    text = str(spec).strip().lower()
    if not text:
        return None
    kind, _, number = text.partition(":")
    if kind in _PLATFORMS and (number == "" or number.isdigit()):
        return _PLATFORMS[kind], int(number or 0)
    raise ValueError(
        f"{source}={spec!r} is not a JAX device: expected 'cpu', 'gpu' (or 'cuda'), or "
        f"'tpu', optionally with ':N' for the N-th device, for example {source}=cpu.")


def _index_on_platform(device: Any) -> int:
    import jax

    return list(jax.devices(device.platform)).index(device)


class JaxBackend(LibraryBackend):
    """Arrays are ``jax.Array`` on one device; ``xp`` is ``jax.numpy`` (Array API standard).

    ``device`` is ``None`` (``MLCORE_DEVICE``, read when needed, else JAX's default device),
    ``"cpu"``, ``"gpu:N"`` / ``"cuda:N"``, ``"tpu:N"`` or a ``jax.Device``.
    """

    name = "jax"
    inplace = False  # JAX arrays are immutable: the core never writes into them
    library, array_type, label, install_hint = "jax", "Array", "JAX", INSTALL_HINT
    import_names = ("jax", "jaxlib")
    shape_errors = (TypeError,)  # what JAX raises for shapes that do not broadcast
    parse_device = staticmethod(parse_device)


    # -- what JAX is, loaded lazily -----------------------------------------------------
    @cached_property
    def _jax(self) -> Any:
        import jax

        return jax

    @cached_property
    def xp(self) -> Any:
        """``jax.numpy``, which implements the Array API standard (imports JAX)."""
        import jax.numpy as jnp

        return jnp

    # -- devices ------------------------------------------------------------------------
    def _wanted(self) -> tuple[tuple[str, int] | None, str]:
        if self._device_spec is not None:
            return parse_device(self._device_spec), "device"
        env = os.environ.get("MLCORE_DEVICE")
        return parse_device(env, "MLCORE_DEVICE"), "MLCORE_DEVICE"

    @property
    def device(self) -> Any:
        """The ``jax.Device`` arrays are placed on."""
        wanted, _ = self._wanted()
        if wanted is None:
            return self._jax.devices()[0]
        return self._jax.devices(wanted[0])[wanted[1]]

    @property
    def x64(self) -> bool:
        """Whether JAX's 64-bit mode is on (float64 and int64 arrays exist)."""
        return bool(self._jax.config.read("jax_enable_x64"))

    # -- arrays -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` as a JAX array on this backend's device (host data is always copied).

        A JAX array on another device is moved here: calling ``asarray`` is the explicit
        transfer, the core never does it. ``dtype=float64`` without 64-bit mode raises.
        """
        jax = self._jax
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

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x`` in C order; waits for the work that produces ``x``."""
        return np.array(x, copy=True, order="C")

    def synchronize(self) -> None:
        """Wait until every live JAX array is computed (JAX dispatches asynchronously, eager
        operations and compiled steps alike; arrays already computed cost about a µs)."""
        jax = self._jax
        jax.block_until_ready(jax.live_arrays())

    # -- availability -------------------------------------------------------------------
    def device_reason(self) -> str:
        """"" when the chosen device exists here (JAX imports), else why not."""
        try:
            wanted, where = self._wanted()
        except ValueError as exc:
            return str(exc)
        if wanted is None:
            return ""
        platform, index = wanted
        try:
            count = len(self._jax.devices(platform))
        except RuntimeError as exc:
            return f"{where} asks for {platform}:{index} but JAX has no {platform} ({exc})."
        if index >= count:
            return (f"{where} asks for {platform}:{index} but JAX sees only {count} "
                    f"{platform} device(s).")
        return ""

    def kernel_info(self) -> str:
        """One line for ``mlcore info``: JAX's version, 64-bit mode and step compilation."""
        jax = self._jax
        return (f"jax {jax.__version__} ({jax.default_backend()}), 64-bit mode "
                f"{'on' if self.x64 else 'off'}; training step compiled with jax.jit")


def _narrow(dtype: np.dtype[Any]) -> Any:
    """The 32-bit dtype JAX stores a 64-bit host dtype as when 64-bit mode is off."""
    return {"f": np.float32, "i": np.int32, "u": np.uint32}.get(dtype.kind, dtype) \
        if dtype.itemsize == 8 else dtype


@hookimpl
def mlcore_backends() -> list[JaxBackend]:
    return [JaxBackend()]


@hookimpl
def mlcore_compile_step(backend: Any, step: Callable[..., Any]) -> Callable[..., Any] | None:
    """``step`` compiled with ``jax.jit``, donating the parameters and state (arguments 0, 1)."""
    if not isinstance(backend, JaxBackend):
        return None
    return backend._jax.jit(step, donate_argnums=(0, 1))  # type: ignore[no-any-return]
