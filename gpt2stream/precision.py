"""Numeric precision, one place for training and evaluation: the autocast dtype a run uses (the bf16 rule, with the
GPU's compute capability), the autocast context, and the dtype sums are reduced across ranks in."""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(dtype: str, device: torch.device, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """None = plain fp32. 'auto' is bf16 on CUDA GPUs of compute capability 8.0 (Ampere) or later, fp32 on older
    ones (V100, T4: bf16 is emulated there, slower than fp32) and on CPU (bf16 is opt-in: its speed depends on the
    CPU). ``capability``: the GPU's (major, minor); None = look it up (CUDA devices only)."""
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype != "auto" or device.type != "cuda":
        return None
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if capability >= (8, 0) else None


def autocast(amp: torch.dtype | None, device_type: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``amp`` is set, else nothing (plain fp32)."""
    if amp is None or amp == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=amp)


def emulated_bf16_warning(amp: torch.dtype | None, device: torch.device, native: bool | None = None) -> str | None:
    """A warning for bf16 autocast on a CPU without bf16 kernels (oneDNN needs AVX-512: on AVX2-only CPUs bf16
    matmuls fall back to scalar code, hundreds of times slower than fp32). ``native``: None = ask oneDNN."""
    if amp != torch.bfloat16 or device.type != "cpu":
        return None
    if native is None:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if native:
        return None
    return ("--dtype bfloat16 on this CPU is emulated (no AVX-512, so no bf16 matmul kernels): steps run hundreds of "
            "times slower than float32; use --dtype float32 (what --dtype auto picks on CPU)")


def reduce_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for sums reduced across ranks: float64, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64
