"""metrics.jsonl: one JSON object per line; training lines have ``step``, ``loss``, ``lr`` (...), evaluation lines
``step`` and ``val_loss``.

The whole history is also kept in memory and saved in every checkpoint. On resume the file is rewritten from the
checkpoint's history, so lines logged after the checkpoint by the interrupted run (steps that will be trained again)
disappear and the file stays one consistent history across any number of resumes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so the line stays parseable and the value visible
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """Append-only writer for metrics.jsonl (rank 0 only: pass ``path=None`` on other ranks).

    ``mirror`` (an object with ``log(record)``, e.g. ``tracking.Trackers``) receives every new record after it is
    written to the file; the history a resumed run starts from is not sent again.
    """

    def __init__(self, path: str | Path | None, history: list[dict[str, Any]] | None = None,
                 mirror: Any = None) -> None:
        self.path = Path(path) if path is not None else None
        self.mirror = mirror
        self.records: list[dict[str, Any]] = [dict(r) for r in (history or [])]
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as f:
                for r in self.records:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)

    def log(self, **record: Any) -> dict[str, Any]:
        record = {k: _clean(v) for k, v in record.items()}
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.mirror is not None:
            self.mirror.log(record)
        return record


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Parse metrics.jsonl; a torn last line (a crash mid-write) is ignored."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---- the run header and the hardware peak used for MFU ----------------------------------------------------------

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' datasheets, by a substring of the device name.
_GPU_PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("A10G", 125e12),
                  ("L40S", 362e12), ("L4", 121e12), ("4090", 165e12), ("3090", 71e12), ("A6000", 155e12))


def measure_matmul_flops(device, dtype, size: int = 1024, rounds: int = 3, seconds: float = 0.1) -> float:
    """Achieved FLOP/s of square matmuls on this device: the reference for MFU where no datasheet peak is known
    (CPUs, MPS, unknown GPUs). So on those, MFU means 'fraction of what plain matmuls reach here'. The best of a
    few short rounds, because other processes on a shared machine only ever make a round slower."""
    import time

    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for r in range(rounds + 1):  # round 0 warms up (thread pool, caches) and is not counted
        n, t0 = 0, time.perf_counter()
        while True:
            a @ b
            n += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        if r:
            best = max(best, 2 * size**3 * n / dt)
    return best


def peak_flops(device, dtype) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from)."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in _GPU_PEAK_BF16:
            if key in name:
                return (peak if dtype == torch.bfloat16 else peak / 2), f"datasheet {name}"
    return measure_matmul_flops(device, dtype), "measured matmul"


def git_commit(repo_dir) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_info(device, world_size: int, backend: str) -> dict[str, Any]:
    """Versions and hardware for the run header."""
    import importlib.metadata as md
    import os
    import platform

    import torch

    versions = {"python": platform.python_version()}
    for pkg in ("torch", "gpt2stream", "numpy", "tiktoken", "datasets", "huggingface-hub", "pyarrow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    hw: dict[str, Any] = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "device": str(device), "world_size": world_size, "backend": backend or "none"}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
        hw["gpu_count"] = torch.cuda.device_count()
        hw["cuda"] = torch.version.cuda
    return {"git_commit": git_commit(Path(__file__).resolve().parent.parent), "versions": versions, "hardware": hw}
