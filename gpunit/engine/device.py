"""The device a run uses: resolved once, so code runs on CPU and CUDA alike."""
from __future__ import annotations

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""
    accepted = '"auto", "cpu", "cuda", "cuda:N" (N = GPU index) or "mps"'
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {spec!r}; use {accepted}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {spec!r} asked for CUDA but no CUDA GPU is available; use \"cpu\" or \"auto\"")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {spec!r}: only {count} CUDA GPU(s) are visible (indices 0..{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r}: MPS is not available on this machine; use \"cpu\" or \"auto\"")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r} cannot be used for training; use {accepted}")
    return device

