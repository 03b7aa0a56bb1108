"""What a run prints: rank 0's log (stdout and train.log), warnings, the run header and the per-step line."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from gpt2stream.config import RunConfig
from gpt2stream.mfu import Peak, format_mfu
from gpt2stream.train.build import Parts
from gpt2stream.train.evaluate import val_tokens
from gpt2stream.train.step import StepStats
from gpt2stream.units import hms


class RunLog:
    """Rank 0 prints (and appends to train.log once ``attach``ed); other ranks stay quiet."""

    def __init__(self, master: bool) -> None:
        self.master = master
        self.file: TextIO | None = None

    def attach(self, path: Path) -> None:
        if self.master:
            self.file = open(path, "a")

    def __call__(self, msg: str) -> None:
        if self.master:
            print(msg, flush=True)
            if self.file is not None:
                self.file.write(msg + "\n")
                self.file.flush()

    def error(self, msg: str) -> None:
        """``error: msg`` on stderr (from any rank), and in train.log on rank 0."""
        error(msg)
        if self.file is not None:
            self.file.write(f"error: {msg}\n")
            self.file.flush()

    def warn(self, msg: str) -> None:
        if self.master:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def warn_any(self, msg: str) -> None:
        """``warning: msg`` on stderr from any rank (what only that rank sees), and in train.log on rank 0."""
        print(f"warning: {msg}", file=sys.stderr, flush=True)
        if self.file is not None:
            self.file.write(f"warning: {msg}\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def error(msg: str) -> None:
    """One ``error: ...`` line on stderr (from whichever rank calls it), and in torchrun's error file."""
    from gpt2stream.launcher import write_error_file

    print(f"error: {msg}", file=sys.stderr, flush=True)
    write_error_file(f"error: {msg}")


def header(parts: Parts, out: Path, peak: Peak, tokens_per_step: int) -> list[str]:
    """The lines that open a run's log: versions, hardware, the resolved config, the model and batch layout."""
    from gpt2stream.metrics import run_info

    cfg, info, model = parts.cfg, parts.info, parts.model
    h = run_info(info.device, info.world_size, info.backend)
    return [
        f"run {out} | git {h['git_commit']} | " + " ".join(f"{k} {v}" for k, v in h["versions"].items()),
        "hardware " + " | ".join(f"{k} {v}" for k, v in h["hardware"].items()),
        *config_lines(cfg.to_dict(), out / "config.json"),
        *mixture_lines(cfg),
        f"model {model.num_params():,} params | tokenizer {parts.tok.identity} ({parts.tok.n_vocab} tokens) | "
        f"{parts.accum} micro-steps x {cfg.train.batch_size} x {cfg.data.seq_len} x {info.world_size} "
        f"processes = {tokens_per_step:,} tokens/step | dtype {parts.amp or torch.float32} | "
        f"compile {parts.compile} | val {val_tokens(parts.val):,} tokens on rank 0 | "
        f"MFU peak {peak.flops:.3g} FLOP/s ({peak.source})" if peak.known else f"MFU n/a ({peak.source})",
    ]


def config_lines(cfg: dict, path: Path, width: int = 116) -> list[str]:
    """The resolved config for a person: where it is saved, then each section's ``field=value`` pairs wrapped.

    >>> config_lines({"preset": "tiny", "model": {"n_layer": 4, "dropout": 0.0}}, Path("runs/t/config.json"))
    ['config runs/t/config.json (preset tiny)', '  model  n_layer=4 dropout=0.0']
    """
    import textwrap

    lines = [f"config {path} (preset {cfg.get('preset', 'custom')})"]
    for name, section in cfg.items():
        if not isinstance(section, dict):
            continue
        pairs = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (not v or ' ' in v) else v}"
                         for k, v in section.items() if k != "mixture")  # a mixture: its own lines (describe)
        lead = f"  {name:<6} "
        lines += textwrap.wrap(pairs, width, initial_indent=lead, subsequent_indent=" " * len(lead),
                               break_long_words=False, break_on_hyphens=False)
    return lines


def mixture_lines(cfg: RunConfig) -> list[str]:
    """The resolved mixture (each source's share, what it reads, its pinned revision); none for one source."""
    from gpt2stream.data.mixture import describe, entries

    mix = entries(cfg.data)
    return describe(mix).splitlines() if mix else []


def peak_memory_gb(device: torch.device) -> float | None:
    """The most GPU memory tensors have held so far (GiB); None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_record(step: int, stats: StepStats, dt: float, tok_s: float, mfu: float, tokens: int, epoch: int,
                mem_gb: float | None = None) -> dict[str, Any]:
    """The metrics.jsonl line of one training step (``peak_mem_gb`` on CUDA only)."""
    rec = dict(step=step, loss=stats.loss, lr=stats.lr, grad_norm=stats.grad_norm, ms=round(dt * 1000, 2),
               tok_s=round(tok_s, 1), mfu=round(mfu, 5) if math.isfinite(mfu) else None, tokens=tokens, epoch=epoch)
    if mem_gb is not None:
        rec["peak_mem_gb"] = round(mem_gb, 3)
    return rec


def step_line(step: int, max_steps: int, stats: StepStats, dt: float, tok_s: float, mfu: float, eta_s: float,
              mem_gb: float | None = None, data_share: float = 0.0) -> str:
    """The logged line of a step; the share of it spent waiting for data shows when above 5%."""
    from gpt2stream.train.timing import STALL_SHOWN

    mem = f" | mem {mem_gb:.2f} GiB" if mem_gb is not None else ""
    wait = f" | data wait {data_share:.0%}" if data_share > STALL_SHOWN else ""
    return (f"step {step:>6}/{max_steps} | loss {stats.loss:.4f} | lr {stats.lr:.3e} | norm "
            f"{stats.grad_norm:.3f} | {dt * 1000:7.1f} ms{wait} | {tok_s:9,.0f} tok/s | MFU {format_mfu(mfu)}{mem} | "
            f"ETA {hms(eta_s)}")
