"""Device and mixed-precision choices shared by training and prediction.

``device="auto"``: CUDA when available, else CPU. ``precision="auto"``: bf16 autocast on a CUDA device
that supports it, else fp16 autocast with a GradScaler; always fp32 on CPU (autocast is CUDA-only here).
Weights stay fp32 in every case (autocast casts per op), like the authors' fp32 training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from core.errors import ConfigError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision actually used: ``fp32``, ``bf16`` or ``fp16``."""
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16 requested but this GPU does not support bfloat16; use fp16")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    dtype = autocast_dtype(precision)
    if dtype is None or device.type != "cuda":
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
