"""Where a run computes and at what precision: device, bf16 autocast, TF32, torch.compile.

    accel = setup(cfg)              # resolve cfg.device / train.precision, set TF32 on CUDA
    with accel.autocast():          # bf16 autocast on CUDA when precision resolves to bf16
        logits = strategy.predict(...)
    x = accel.move(x)               # to the run's device (no copy when it is already there)

On the CPU with the default config every piece is a no-op: the device is ``cpu``, ``"auto"``
precision resolves to fp32, :meth:`Accel.autocast` is a ``nullcontext``, TF32 flags are left
untouched and nothing is compiled, so CPU results are bit-identical to a build without this
module. Under ``torchrun`` each process takes ``cuda:<LOCAL_RANK>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

import torch
from torch import Tensor, nn

from .errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
CACHE_ON_DEVICE = ("auto", "always", "never")
#: Share of the free device memory the training features may take under cache_on_device="auto".
CACHE_FRACTION = 0.5


@dataclass(frozen=True)
class Accel:
    """A resolved device and precision.

    Attributes:
      device: where tensors and modules live (``cpu`` or ``cuda:N``).
      precision: resolved precision, ``"fp32"`` or ``"bf16"`` (never ``"auto"``).
      tf32: whether fp32 matmuls / convolutions may use TF32 (CUDA only; recorded as applied).
      flush_denormal: whether the CPU flushes denormal floats to zero (:func:`flush_denormals`,
        ``train.flush_denormal``; recorded as applied).
    """

    device: torch.device
    precision: str = "fp32"
    tf32: bool = False
    flush_denormal: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or None when the run computes in fp32."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self) -> ContextManager[Any]:
        """A context for forward passes: bf16 autocast when resolved so, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def move(self, x: Tensor) -> Tensor:
        """``x`` on this device (returns ``x`` itself when it is already there)."""
        if x.device == self.device:
            return x
        return x.to(self.device, non_blocking=x.device.type == "cpu" and self.is_cuda)

    @property
    def cache_tag(self) -> str:
        """Suffix of the feature-cache folder: "" for exact fp32, else "-bf16" / "-tf32", so
        features computed at another precision never mix with the fp32 ones."""
        if self.precision != "fp32":
            return f"-{self.precision}"
        return "-tf32" if self.tf32 else ""

    def describe(self) -> dict:
        """JSON-able record of what ran (written into config.json's ``resolved``)."""
        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "precision": self.precision,
            "tf32": self.tf32,
            "flush_denormal": self.flush_denormal,
        }


CPU = Accel(torch.device("cpu"))


def resolve_device(name: str = "auto", local_rank: Optional[int] = None) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``.

    Arguments:
      name: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
      local_rank: the process's rank on its node (torchrun's ``LOCAL_RANK``); default from the
        environment, else 0. Used for ``auto`` and plain ``cuda``.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = str(name)
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name!r} but this machine has no CUDA device; use device=auto or device=cpu"
            )
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    raise ConfigError(f"device={name!r}; valid: auto, cpu, cuda, cuda:N")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA, ``"fp32"`` elsewhere; explicit values are kept.

    ``"bf16"`` on the CPU is allowed when asked for explicitly (CPU autocast), never chosen by
    ``"auto"``: it is slow there and would change CPU results.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def set_tf32(enabled: bool, device: torch.device) -> bool:
    """Allow TF32 in fp32 matmuls and cuDNN convolutions on CUDA; returns whether it is on.

    A no-op on the CPU (the flags are left as they are). On CUDA the flags are process-wide.
    """
    if device.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return bool(enabled)


def flush_denormals(enabled: bool, device: torch.device) -> bool:
    """On the CPU, flush denormal floats (magnitude below 1.2e-38) to zero, or stop doing so:
    x86 FTZ/DAZ through ``torch.set_flush_denormal``, process-wide (``train.flush_denormal``).

    CPU training meets denormals (tiny gradients and Adam moments near zero), and x86 computes
    them through a microcode path some 100x slower than normal floats: on the ``cpu`` profile a
    run's training is 1.3x (sequential) to 1.8x (sequential_moda) faster with them flushed
    (``benchmarks/README.md``). Set, on or off, at the start of every run, since a notebook
    runs several configs in one process.

    Arguments:
      enabled (bool): flush them.
      device (torch.device): the run's device; a no-op on CUDA.

    Returns:
      (bool): whether denormals are flushed now (False also where the CPU has no such mode).
    """
    if device.type == "cuda":
        return False
    return bool(torch.set_flush_denormal(bool(enabled))) and bool(enabled)


def setup(cfg: Any, local_rank: Optional[int] = None) -> Accel:
    """Resolve ``cfg.device`` and ``cfg.train.precision``; apply TF32 on CUDA, and on the CPU
    :func:`keep_freed_memory` and ``train.flush_denormal`` (:func:`flush_denormals`).

    Arguments:
      cfg: a :class:`cosam.config.Config`.
      local_rank: see :func:`resolve_device`.
    """
    device = resolve_device(cfg.device, local_rank)
    flushed = False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        keep_freed_memory()
        flushed = flush_denormals(cfg.train.flush_denormal, device)
    precision = resolve_precision(cfg.train.precision, device)
    tf32 = set_tf32(cfg.train.tf32, device)
    return Accel(device, precision, tf32, flushed)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters
_kept: Optional[bool] = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A CPU training step or evaluation frees and re-allocates the same multi-MB activations
    thousands of times. By default glibc serves each such block from a fresh ``mmap`` whose pages
    the kernel zeroes and faults in again, and returns it with ``munmap``: a ``cpu``-profile
    ``sequential`` run took 22.6 M minor page faults and 33 s of system time in 176 s. With
    ``M_MMAP_MAX=0`` (every block from the heap), a 1 GiB trim threshold and a 256 MiB top pad,
    the same run took 0.7 M faults, 2 s of system time and 159 s (1.10x; evaluation 1.25x), and
    wrote byte-identical results: only where memory comes from changes, not any arithmetic.
    The process keeps its peak heap (3.3 GB there) instead of shrinking between steps.

    Applied once per process, by :func:`setup` on the CPU. A no-op (False) where the C library is
    not glibc (macOS, musl) or ``COSAM_KEEP_FREED_MEMORY=0``.

    Returns:
      (bool): whether glibc accepted the settings.
    """
    global _kept
    if _kept is None:
        _kept = False
        if os.environ.get("COSAM_KEEP_FREED_MEMORY", "1") != "0" and platform.system() == "Linux":
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _kept = all(
                mallopt(param, value) == 1
                for param, value in (
                    (_M_MMAP_MAX, 0),
                    (_M_TRIM_THRESHOLD, 1 << 30),
                    (_M_TOP_PAD, 256 << 20),
                )
            )
    return _kept


def maybe_compile(module: nn.Module, enabled: bool) -> bool:
    """Compile ``module`` in place (``nn.Module.compile``: state-dict keys are unchanged).

    Returns whether it was compiled. Compilation happens lazily at the first call; a module is
    compiled once however often this is called.
    """
    if not enabled or getattr(module, "_cosam_compiled", False):
        return False
    module.compile()
    module._cosam_compiled = True  # type: ignore[assignment]
    log.info("torch.compile: %s", type(module).__name__)
    return True


def keep_on_device(nbytes: int, accel: Accel, mode: str = "auto") -> bool:
    """Whether ``nbytes`` of cached training features should live on the device.

    Arguments:
      nbytes: size of the features of one experience.
      accel: the run's device.
      mode: ``train.cache_on_device``: ``always``, ``never`` or ``auto`` (on CUDA when they take at
        most :data:`CACHE_FRACTION` of the device's free memory). Always False on the CPU.
    """
    if mode not in CACHE_ON_DEVICE:
        raise ConfigError(f"train.cache_on_device={mode!r}; valid: {', '.join(CACHE_ON_DEVICE)}")
    if not accel.is_cuda or mode == "never":
        return False
    if mode == "always":
        return True
    free, _ = torch.cuda.mem_get_info(accel.device)
    return nbytes <= CACHE_FRACTION * free
