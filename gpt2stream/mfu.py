"""The peak FLOP/s that MFU (model FLOPs utilisation) is measured against.

A CUDA device listed in ``GPU_PEAKS`` uses its datasheet figure, matched by the *longest* table name the device name
contains ("NVIDIA H100 NVL" is the H100 NVL, not the H100 SXM; "NVIDIA L40" is not the L4). Any other device is
measured: large matmuls in the training dtype, one synchronisation per timed round, so what is timed is the
arithmetic and not the kernel launches. When no figure can be had, the peak is NaN and the log says "MFU n/a".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' datasheets: (16-bit, fp32-matmul). 16-bit is bf16
# (fp16 on V100/T4, which have no bf16); fp32 is what fp32 matmuls reach (TF32 on Ampere and later, as the trainer
# enables it; plain fp32 before).
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "B200": (2250, 1100), "GB200": (2500, 1250), "B100": (1750, 875),
    "H100 NVL": (835, 418), "H100 PCIe": (756, 378), "H100": (989, 495), "H200": (989, 495), "H200 NVL": (835, 418),
    "GH200": (989, 495),
    "H800": (989, 495), "H800 PCIe": (756, 378), "H20": (148, 74),
    "A100": (312, 156), "A800": (312, 156), "A40": (150, 75), "A30": (165, 82), "A10G": (125, 62), "A10": (125, 62),
    "L40S": (362, 183), "L40": (181, 90), "L4": (121, 60), "L20": (119, 60),
    "RTX 6000 Ada": (364, 182), "RTX A6000": (155, 77), "A6000": (155, 77), "RTX 5000 Ada": (261, 130),
    "RTX 4090": (165, 83), "4090": (165, 83), "RTX 3090": (71, 36), "3090": (71, 36),
    "V100": (125, 15.7), "T4": (65, 8.1),
    "MI300X": (1307, 654), "MI325X": (1307, 654), "MI250X": (383, 96), "MI250": (362, 90),
}


@dataclass(frozen=True)
class Peak:
    flops: float  # per device; NaN = unknown ("MFU n/a")
    source: str  # which table entry or measurement it is, for the run header

    @property
    def known(self) -> bool:
        return math.isfinite(self.flops) and self.flops > 0


def match_gpu(name: str) -> str | None:
    """The longest ``GPU_PEAKS`` key that ``name`` contains as whole words, or None."""
    words = f" {name.replace('-', ' ')} "
    hits = [k for k in GPU_PEAKS if f" {k} " in words]
    return max(hits, key=len) if hits else None


def datasheet_peak(name: str, dtype: torch.dtype) -> Peak | None:
    key = match_gpu(name)
    if key is None:
        return None
    half, fp32 = GPU_PEAKS[key]
    flops = (half if dtype in (torch.bfloat16, torch.float16) else fp32) * 1e12
    return Peak(flops, f"datasheet entry {key!r} for {name}, {dtype}")


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, rounds: int = 3,
                         seconds: float | None = None) -> float:
    """Achieved FLOP/s of square matmuls on this device, the best of ``rounds`` timed rounds after a warm-up
    round (other processes on a shared machine only ever make a round slower). On CUDA the matrices are 8192
    wide, a round lasts 0.1 s and synchronises once, at its end. On a CPU 512-wide rounds of 0.02 s: a CPU run is
    small, and its start-up (every rank measures) should not pay seconds for an MFU that is only indicative."""
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 512)
    seconds = seconds if seconds is not None else (0.1 if cuda else 0.02)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    per_round = 4 if device.type == "cuda" else 1
    for r in range(rounds + 1):  # round 0 warms up (thread pool, caches, cuBLAS heuristics) and is not counted
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(per_round):
                a @ b
            n += per_round
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        if r:
            best = max(best, 2 * size**3 * n / dt)
    return best


def peak_flops(device: torch.device, dtype: torch.dtype) -> Peak:
    """The datasheet peak of a listed GPU, else a measurement; NaN ("MFU n/a") when measuring fails."""
    if device.type == "cuda":
        got = datasheet_peak(torch.cuda.get_device_name(device), dtype)
        if got is not None:
            return got
    try:
        flops = measure_matmul_flops(device, dtype)
    except RuntimeError as e:  # out of memory, an unsupported dtype: no reference, no MFU
        return Peak(math.nan, f"MFU n/a (measuring matmuls failed: {str(e).splitlines()[0][:80]})")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return Peak(flops, f"measured matmul on {name}, {dtype}: MFU is the fraction of what plain matmuls reach")


def format_mfu(mfu: float) -> str:
    return f"{mfu * 100:5.2f}%" if math.isfinite(mfu) else "  n/a"
