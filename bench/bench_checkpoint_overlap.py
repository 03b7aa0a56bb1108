"""Step time while a checkpoint is written in the background, against a step without one (the same run).

One process trains a small GPT (in-process: build_parts + train_step, the trainer's own pieces). Steps alternate:
before an "overlap" step the full checkpoint state is snapshotted and handed to the BackgroundSaver (the trainer's
writer thread), so the write runs during that step; a "plain" step runs with nothing being written. Prints the median
of each and their ratio, and the checkpoint size. On a GPU the snapshot is a device-to-host copy and the write
competes only for the CPU: not yet measured on a GPU.

    python bench/bench_checkpoint_overlap.py [--rounds 8] [--n-embd 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--n-embd", type=int, default=256)
    a = ap.parse_args(argv)
    import torch

    from config import PRESETS
    from gpt2stream import distributed as D
    from gpt2stream.checkpoint import assemble
    from gpt2stream.config import load_config
    from gpt2stream.train.build import build_parts
    from gpt2stream.train.saver import BackgroundSaver
    from gpt2stream.train.step import train_step
    from tests.test_train_common import make_jsonl

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        data = make_jsonl(d / "docs.jsonl", n_docs=400)
        cfg = load_config(["--preset", "tiny", "--n-layer", "4", "--n-head", "4", "--n-embd", str(a.n_embd),
                           "--block-size", "128", "--seq-len", "128", "--batch-size", "8",
                           "--total-batch-size", "1024", "--data", str(data), "--num-workers", "0",
                           "--val-docs", "4", "--eval-tokens", "128", "--dtype", "float32",
                           "--out-dir", str(d / "run")], PRESETS)
        info = D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="")
        parts = build_parts(cfg, info, None)
        saver = BackgroundSaver(d / "run", keep_last=1, log=lambda m: None)
        it = iter(parts.loader)

        def step() -> float:
            batches = [next(it) for _ in parts.loader.micro_sizes]
            t0 = time.perf_counter()
            train_step(parts, batches, 1e-4)
            return time.perf_counter() - t0

        step()  # warm-up
        plain, overlap = [], []
        for _ in range(a.rounds):
            plain.append(step())
            saver.submit(assemble(parts.shared, [{}], parts.progress.state_dict(), {"config": cfg.to_dict()}), 1)
            overlap.append(step())
            assert saver.wait() is None
        size = saver.last[1].stat().st_size
    p, o = statistics.median(plain), statistics.median(overlap)
    print(f"step with a checkpoint ({size / 2**20:.0f} MiB) being written: {o * 1e3:.1f} ms; without: "
          f"{p * 1e3:.1f} ms; ratio {o / p:.2f} (medians of {a.rounds}; shared noisy machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
