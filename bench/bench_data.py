"""Data pipeline throughput and memory, against references measured in the same run.

1. Tokens/s of one reader (Hub stream from the local test server -> tokenize -> pack into (B, T+1) blocks), as a
   ratio to tiktoken's raw ``encode_ordinary_batch`` on the same documents already in memory (target >= 0.9),
   in wall-clock time and in CPU time of this process (the server runs in its own process; CPU time is the steadier
   figure on a shared machine).
2. RSS over a long stream (several epochs): RSS at 100% of the run / RSS at 10% (target <= 1.2).

(The comparison against the round-robin loader of before canonical streams went with that loader; its last
figures are in docs/data-pipeline.md.)

Throughput is the steady state, from the first batch over two turnovers of the block buffer (the time to the first
batch, which fills the buffer, is printed on its own), counting only the work done inside that window: the tokens
the pipeline's tokenizer produced between the window's start and end (gpt2stream.data.counters, which count
tokenized documents, end-of-text tokens included), not the tokens delivered, some of which were tokenized before
the window while the buffer filled (counting those gave 1.20x more tokens than were tokenized in the window).

    python bench/bench_data.py [--docs-per-file 600] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    # here, not at import: bench_streams.py imports rss_mb from this file in children that import the code under
    # test from their own PYTHONPATH
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    # ~4 KB / ~1000 tokens per document on average, like FineWeb-Edu
    ap.add_argument("--docs-per-file", type=int, default=960)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shuffle-buffer", type=int, default=1000, help="documents per window (epoch = 3840 docs)")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    from hubserver import DEFAULT_REPO, build_fineweb_repo

    from gpt2stream.config import DataConfig
    from gpt2stream.data import TrainLoader, counters
    from gpt2stream.data.dataset import TOKENIZE_BATCH, tokenizer_threads
    from tokenizer import load_tokenizer

    corpus = ROOT.parent / "shared" / "corpus"
    tmp = tempfile.TemporaryDirectory()
    groups = 6
    fx = build_fineweb_repo(Path(tmp.name) / "repo", n_files=args.files, row_groups=groups,
                            rows_per_group=args.docs_per_file // groups, dump_files=0,
                            corpus_dir=corpus if corpus.is_dir() else None, paragraphs_per_doc=(20, 100))
    texts = [t for f in fx.files() for t in pq.read_table(fx.root / f, columns=["text"])["text"].to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    tok = load_tokenizer("gpt2")
    enc = tok.encoding  # the raw tiktoken Encoding
    print(f"fixture: {len(texts)} documents, {mb:.1f} MB of text in {args.files} parquet files x {groups} row groups")

    threads = tokenizer_threads(1)  # what one reader of a rank with num_workers=0 uses

    def raw_reference(batch: int, num_threads: int) -> tuple[float, float]:
        """(tokens per wall second, tokens per CPU second of this process)"""
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for i in range(0, len(texts), batch):
            n += sum(len(ids) + 1 for ids in enc.encode_ordinary_batch(texts[i : i + batch], num_threads=num_threads))
        return n / (time.perf_counter() - t0), n / (time.process_time() - c0)

    # The server runs in its own process so that its CPU time is not counted as the pipeline's.
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hubserver.py"), str(fx.root), "--seconds", "3600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        os.environ["HF_ENDPOINT"] = line.split()[0].split("=", 1)[1]
        cfg = DataConfig(data=DEFAULT_REPO, data_config="sample-10BT", seq_len=1024, num_workers=0, val_docs=0,
                         shuffle_buffer=args.shuffle_buffer)

        # Steady state: a block buffer reads ahead block_buffer blocks before its first batch (more than this
        # fixture's epoch), so a window from the loader's creation would charge that read-ahead to the few batches
        # that follow it. Over a long run every token read is trained on; the window starts at the first batch and
        # spans two turnovers of the buffer.
        window = max(2 * -(-cfg.block_buffer // 8), 64)

        def pipeline_rate(kind=TrainLoader, batches: int = window) -> tuple[float, float, int, float]:
            """(tokens per wall second, per CPU second, batches, seconds to the first batch) over ``batches``
            batches after the first."""
            t0 = time.perf_counter()
            loader = kind(cfg, batch_size=8, tokenizer=tok, seed=0)
            it = iter(loader)
            next(it)
            first = time.perf_counter() - t0
            t1, c1, k1 = time.perf_counter(), time.process_time(), counters.snapshot()["data/tokens"]
            for _ in range(batches):
                next(it)
            wall, cpu = time.perf_counter() - t1, time.process_time() - c1
            n = counters.snapshot()["data/tokens"] - k1  # tokenized inside the window, not merely delivered in it
            loader.close()
            return n / wall, n / cpu, batches, first

        def batches_per_epoch() -> int:
            tokens = sum(len(ids) + 1 for ids in enc.encode_ordinary_batch(texts, num_threads=threads))
            return max(1, tokens // (8 * 1024))

        rounds = []
        for _ in range(args.repeats):  # interleaved rounds: the machine is shared and noisy
            same = raw_reference(TOKENIZE_BATCH, threads)  # the calls the pipeline makes, minus the pipeline
            one_call = raw_reference(len(texts), threads)
            pipe = pipeline_rate()
            rounds.append((same, one_call, pipe))
        per_epoch = batches_per_epoch()
        med = statistics.median
        same_w, one_w, pipe_w = (med(r[k][0] for r in rounds) for k in range(3))
        print(f"raw tiktoken encode_ordinary_batch, {TOKENIZE_BATCH} docs/call, {threads} threads: "
              f"{same_w / 1e6:.2f} M tokens/s; all docs in one call: {one_w / 1e6:.2f} M tokens/s (medians)")
        print(f"one reader, Hub test server -> tokenize -> pack: {pipe_w / 1e6:.2f} M tokens tokenized/s over "
              f"{window} batches of 8 x 1025 after the first (median); first batch after "
              f"{statistics.median(r[2][3] for r in rounds):.2f} s (filling the {cfg.block_buffer}-block buffer)")
        wall = med([r[2][0] / max(r[0][0], r[1][0]) for r in rounds])
        cpu = med([r[2][1] / max(r[0][1], r[1][1]) for r in rounds])
        print(f"THROUGHPUT RATIO pipeline / raw tiktoken: wall {wall:.2f}, CPU {cpu:.2f} "
              f"(median of {args.repeats} rounds, reference = the faster raw variant; target >= 0.9)")
        # memory over a long stream
        loader = TrainLoader(cfg, batch_size=8, tokenizer=tok, seed=1)
        it = iter(loader)
        total = per_epoch * args.epochs
        for i in range(total):
            next(it)
            if i + 1 == max(1, total // 10):
                r10 = rss_mb()
        r100 = rss_mb()
        loader.close()
        print(f"RSS over {args.epochs} epochs ({total} batches of 8x1024): {r10:.0f} MB at 10%, "
              f"{r100:.0f} MB at 100%")
        print(f"RSS RATIO 100% / 10% = {r100 / r10:.3f}  (target <= 1.2)")
    finally:
        server.terminate()
        server.wait()
        tmp.cleanup()


if __name__ == "__main__":
    main()
