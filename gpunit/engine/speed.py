"""Speed options that keep the method unchanged: mixed precision, channels_last, torch.compile, fused Adam."""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn as nn

log = logging.getLogger("gpunit.speed")

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_warned_emulated: set[str] = set()


def check_precision(precision: str, option: str = "train.precision") -> None:
    if precision not in PRECISIONS and precision != "auto":
        raise ValueError(f"{option} must be one of {sorted(PRECISIONS) + ['auto']}, got '{precision}'")


def check_channels_last(channels_last, option: str = "train.channels_last") -> None:
    if channels_last not in (True, False, "auto"):
        raise ValueError(f"{option} must be true, false or auto, got {channels_last!r}")


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast made our training steps faster on this kind of device.

    CUDA GPUs with bf16 tensor cores (compute capability 8.0 and later), and CPUs with AMX: on a Xeon
    with AMX the synthetic Stage II step took 0.28 s in bf16 + channels_last against 0.51 s in fp32.
    Not CPUs with AVX-512-BF16 alone (that step was 1.3x slower in bf16 than in fp32 on such a Xeon)
    nor AVX2 CPUs, where bf16 is emulated (about 5x slower).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device, option: str = "train.precision") -> str:
    """``"auto"`` without a measurement (translation, or ``GPUNIT_PROBE=off``): bf16 where :func:`fast_bf16`
    says it pays and fp32 elsewhere (logged); other values are checked and returned as they are. A trainer's
    ``auto`` is measured instead (:mod:`gpunit.engine.precision_probe`)."""
    check_precision(precision, option)
    if precision != "auto":
        return precision
    chosen = "bf16" if fast_bf16(device) else "fp32"
    log.info("%s=auto: %s on this %s (%s)", option, chosen, device.type,
             torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"CPU {torch.backends.cpu.get_cpu_capability()}, AMX {torch.cpu._is_amx_tile_supported()}")
    return chosen


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU computes ``precision`` in hardware (oneDNN's own check: AVX-512 or AMX for
    bf16, AVX-512-FP16 or AMX-FP16 for fp16). Without it the convolutions are emulated."""
    check = {"fp32": lambda: True, "bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
             "fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported}[precision]
    return bool(check())


def autocast(device: torch.device, precision: str):
    """A factory of autocast contexts: the networks compute in bf16/fp16, losses are taken in fp32."""
    check_precision(precision)
    if precision == "auto":
        precision = resolve_precision(precision, device)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cpu" and precision not in _warned_emulated and not cpu_has_native(precision):
        _warned_emulated.add(precision)
        log.warning("precision %s on this CPU (no %s instructions) is emulated and runs several times slower "
                    "than fp32 (about 5x on an AVX2 CPU): use fp32 here", precision, precision)
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (bf16 and fp32 need none; the disabled scaler is a pass-through;
    ``"auto"`` never chooses fp16)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def loss_scale(scaler: torch.amp.GradScaler, device: torch.device) -> torch.Tensor:
    """The scaler's current loss scale as a tensor (1 when scaling is off), read without the
    device sync of ``scaler.get_scale()``."""
    return scaler.scale(torch.ones((), device=device))


def tune_backends(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per shape and keep the fastest:
    the image size is fixed, so every later step reuses the choice. Nothing changes on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def prepare_module(module: nn.Module, channels_last: bool = False) -> nn.Module:
    return module.to(memory_format=torch.channels_last) if channels_last else module


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile the module's forward in place (parameters and state dict keys unchanged)."""
    if enabled:
        module.compile()
    return module
