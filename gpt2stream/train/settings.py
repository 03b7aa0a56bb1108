"""Pure helpers the trainer derives its settings with: accumulation, precision, timeouts, the exit codes."""

from __future__ import annotations

import math
from enum import IntEnum

import torch

from gpt2stream.config import DataConfig
from gpt2stream.errors import UserError


class Exit(IntEnum):
    """The process exit status of a training run."""

    OK = 0  # finished (or nothing to do)
    USER = 2  # bad input (config, data, incompatible checkpoint...): ``error: ...`` on stderr
    DATA = 3  # the data stream failed for good: a checkpoint was saved, the message says how to resume
    NAN = 4  # the loss or the gradient norm became NaN/inf: stopped without saving; the last checkpoint is good
    SAVE = 5  # a checkpoint could not be written (disk full?): the previous checkpoint is intact
    SIGINT = 130  # stopped by SIGINT after saving a checkpoint
    SIGTERM = 143  # stopped by SIGTERM after saving a checkpoint


def grad_accum_steps(total_batch_size: int, batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that one step sees total_batch_size tokens."""
    per = batch_size * seq_len * world_size
    if total_batch_size % per:
        raise UserError(
            f"--total-batch-size {total_batch_size} is not divisible by batch_size x seq_len x processes = "
            f"{batch_size} x {seq_len} x {world_size} = {per}; use a multiple of {per} or change --batch-size")
    return total_batch_size // per


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


def collective_timeout(data_cfg: DataConfig) -> float:
    """Seconds a collective may wait for the slowest rank: above what a data stream may legitimately spend retrying
    (and than the DataLoader's stall watchdog), so the waiting ranks outlast a stalled one until it reports, plus
    time for rank 0 to write a large checkpoint while the others wait."""
    from gpt2stream.data.loader import stall_timeout

    return stall_timeout(data_cfg) + 900.0


def reduce_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for sums reduced across ranks: float64, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def format_eta(seconds: float) -> str:
    """>>> format_eta(3725.2)
    '1:02:05'
    """
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
