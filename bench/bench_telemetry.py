"""What the step attribution and the pipeline counters cost: training steps with them against the same steps without.

    python bench/bench_telemetry.py [--steps 60] [--log-every 1] [--shape small|tiny]

In this process, one model and loader (num_workers 0, so the tokenizer's counting runs in the timed steps too):
steps alternate between the two sides (A B B A ...), so load on a shared machine hits both alike. "with" is what the
trainer does: the StepTimer's host clocks and marks inside train_step, its finish() into the step record, and every
--log-every steps the totals gathered (loader.pipeline_counts, the record built and logged). "without" runs
train_step with no timer and logs the plain record. The tokenizer's own counter (one locked add per slice) cannot be
switched off, so it is measured apart: ReaderStream._encode with the counter against a no-op one, interleaved.
Prints the medians and the ratio (without / with: 1.00 = free; the target is >= 0.99).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from config import PRESETS  # noqa: E402
from gpt2stream import distributed as D  # noqa: E402
from gpt2stream.config import load_config  # noqa: E402
from gpt2stream.data import counters  # noqa: E402
from gpt2stream.train import datastats  # noqa: E402
from gpt2stream.train.build import build_parts  # noqa: E402
from gpt2stream.train.step import train_step  # noqa: E402
from gpt2stream.train.timing import StepTimer  # noqa: E402

SHAPES = {"small": ["--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "64", "--seq-len", "64",
                    "--batch-size", "8", "--total-batch-size", "1024"],
          "tiny": ["--block-size", "128", "--seq-len", "128", "--batch-size", "8", "--total-batch-size", "2048"]}
CPU = D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="")


def one_step(parts, it, timer: StepTimer | None, step: int, log_every: int, base: dict) -> float:
    t0 = time.perf_counter()
    t = time.perf_counter()
    batches = [next(it) for _ in range(parts.accum)]
    t1 = time.perf_counter()
    D.agree_max(CPU, 0, 0)
    if timer is not None:
        timer.host("data_wait_ms", t1 - t)
        timer.host("sync_ms", time.perf_counter() - t1)
    stats = train_step(parts, batches, 1e-3, timer)
    dt = time.perf_counter() - t0
    extra = timer.finish(step) if timer is not None else {}
    parts.metrics.log(step=step, loss=stats.loss, ms=dt * 1000, time=time.time(), **extra)
    if timer is not None and step % log_every == 0:
        totals = datastats.gather_totals(parts.loader, CPU, base)
        parts.metrics.log(**datastats.totals_record(step, totals))
    return time.perf_counter() - t0


def steps_bench(parts, steps: int, log_every: int) -> tuple[list[float], list[float]]:
    it = iter(parts.loader)
    timer = StepTimer(CPU.device)
    with_t, without_t = [], []
    for s in range(3):  # warm-up
        one_step(parts, it, timer, s, log_every, {})
    for s in range(steps):
        order = (True, False) if s % 2 == 0 else (False, True)
        for on in order:
            (with_t if on else without_t).append(one_step(parts, it, timer if on else None, s + 1, log_every, {}))
    parts.loader.close()
    return with_t, without_t


def added_work(parts, n: int = 2000) -> float:
    """Seconds per step of the telemetry code alone (clocks, marks, finish, the totals gathered, built and logged):
    a figure the load barely moves, to set against the median step."""
    timer = StepTimer(CPU.device)
    t0 = time.perf_counter()
    for s in range(n):
        timer.host("data_wait_ms", 0.001)
        timer.host("sync_ms", 0.001)
        timer.start()
        for phase in ("compute_ms", "sync_ms", "optim_ms"):
            timer.mark(phase)
        rec = {"step": s, **timer.finish(s)}
        totals = datastats.gather_totals(parts.loader, CPU, {})
        rec.update(datastats.totals_record(s, totals))
    return (time.perf_counter() - t0) / n


def encode_bench(parts, rounds: int) -> tuple[list[float], list[float], float]:
    """ReaderStream._encode on slices of 128 documents (TOKENIZE_BATCH / 4), counted or not, interleaved; and the
    counter's own cost per call (a locked add), timed over 100,000 calls."""
    from gpt2stream.data.dataset import ReaderStream

    docs = [t for t in demo_texts() if t.strip()]
    rs = ReaderStream.__new__(ReaderStream)
    rs.tok, rs.eot = parts.tok, int(parts.tok.eot_id)
    real = counters.add_tokenized
    on, off = [], []
    for r in range(rounds):
        texts = [docs[(r * 128 + k) % len(docs)] for k in range(128)]
        for counting in ((True, False) if r % 2 == 0 else (False, True)):
            counters.add_tokenized = real if counting else (lambda *a: None)
            t0 = time.perf_counter()
            rs._encode(texts)
            (on if counting else off).append(time.perf_counter() - t0)
    counters.add_tokenized = real
    t0 = time.perf_counter()
    for _ in range(100_000):
        real(0, 0, 0.0)
    return on, off, (time.perf_counter() - t0) / 100_000


def demo_texts() -> list[str]:
    import pyarrow.parquet as pq

    from gpt2stream.data.sources.named import named_data_path

    return pq.read_table(named_data_path("demo"), columns=["text"]).column("text").to_pylist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=1, help="gather the totals every N steps (1: the worst case)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--encode-rounds", type=int, default=100)
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(["--preset", "tiny", *SHAPES[a.shape], "--data", "demo", "--num-workers", "0",
                           "--val-docs", "0", "--out-dir", str(Path(tmp) / "run"), "--shuffle-buffer", "64"],
                          PRESETS)
        parts = build_parts(cfg, CPU, None)
        w, wo = steps_bench(parts, a.steps, a.log_every)
        on, off, per_call = encode_bench(parts, a.encode_rounds)
        per_step = added_work(parts)
    mw, mwo = statistics.median(w), statistics.median(wo)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; shared and loaded: "
          f"compare the ratio, not the times")
    print(f"shape {a.shape}, {a.steps} steps per side, totals gathered every {a.log_every} step(s)")
    print("| what | with (median) | without (median) | without / with |")
    print("| --- | --- | --- | --- |")
    print(f"| training step | {mw * 1000:.2f} ms | {mwo * 1000:.2f} ms | {mwo / mw:.3f}x |")
    print(f"the telemetry code alone: {per_step * 1e6:.1f} us per step = {per_step / mwo:.2e} of the median step "
          f"without it (so at most {mwo / (mwo + per_step):.4f}x)")
    me, mo = statistics.median(on), statistics.median(off)
    print(f"| tokenizer slice of 128 documents (counted vs not) | {me * 1000:.2f} ms | {mo * 1000:.2f} ms | "
          f"{mo / me:.3f}x |")
    print(f"the counter itself: {per_call * 1e6:.2f} us per slice = {per_call / mo:.2e} of a slice's median time")


if __name__ == "__main__":
    main()
