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
        self.path: Path | None = None
        self._file: Any = None  # open for appending from attach() to close(): no open/close per line
        self.mirror = mirror
        self.records: list[dict[str, Any]] = [dict(r) for r in (history or [])]
        if path is not None:
            self.attach(path)

    def attach(self, path: str | Path) -> None:
        """Write to ``path`` from now on; it is rewritten to hold exactly the history so far."""
        self.close()
        self.path = Path(path)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open until close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> list[dict[str, Any]]:
        return self.records

    def load_state_dict(self, records: list[dict[str, Any]]) -> None:
        self.records = [dict(r) for r in records]
        if self.path is not None:
            self.attach(self.path)

    def log(self, **record: Any) -> dict[str, Any]:
        record = {k: _clean(v) for k, v in record.items()}
        self.records.append(record)
        if self._file is not None:
            # one write of the whole line, flushed to the OS: a kill -9 loses at most the line being written, and a
            # torn last line is skipped by read_metrics (and replaced on resume, which rewrites the file)
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
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


# ---- the run header (the MFU peak is gpt2stream/mfu.py) -------------------------------------------------------

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
