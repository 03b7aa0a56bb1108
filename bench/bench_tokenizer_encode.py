"""Encode throughput of our trained tokenizer vs tiktoken's GPT-2 encoding, on the same text.

    python bench/bench_tokenizer_encode.py [--corpus ../shared/corpus] [--tokenizer PATH] [--repeats 7]

Without --tokenizer it first trains a 50257-token tokenizer on the corpus (GPT-2 split, ~5 s). Each trial encodes
a few MB of the corpus with encode_ordinary on one thread, then as 20 kB documents with encode_ordinary_batch on 2
threads; trials are interleaved between the encoders and the best of the repeats counts (the machine is shared).
Also times our tokenizer built from GPT-2's own ranks through tokenizer.json (the same vocabulary as the reference,
so a pure engine comparison). Prints the throughput ratio ours/tiktoken (target >= 0.9).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tiktoken  # noqa: E402

from tokenizer import Tokenizer, load_tokenizer  # noqa: E402
from tokenizer.train import train_bpe  # noqa: E402


def best_rate(fn, nbytes: int, trials: int) -> tuple[float, float]:
    """Best (bytes per wall second, bytes per CPU second) over ``trials`` runs of ``fn``."""
    wall = cpu = float("inf")
    for _ in range(trials):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return nbytes / wall, nbytes / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--tokenizer", default=None, help="a tokenizer.json to test (default: train one on the corpus)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sample-mb", type=int, default=4, help="MB of corpus text encoded per trial")
    args = ap.parse_args()
    files = sorted(Path(args.corpus).glob("*.txt"))
    docs = [f.read_text(encoding="utf-8") for f in files]
    nbytes = sum(len(d.encode()) for d in docs)

    tmp = Path(tempfile.mkdtemp(prefix="bench_enc_"))
    if args.tokenizer:
        ours = Tokenizer.from_file(args.tokenizer)
    else:
        t0 = time.perf_counter()
        ours = train_bpe(iter(docs), 50257)
        print(f"trained {ours.n_vocab} tokens in {time.perf_counter() - t0:.1f}s")
    load_tokenizer("gpt2").save(tmp / "gpt2.json")
    ours_gpt2 = Tokenizer.from_file(tmp / "gpt2.json")
    ref = tiktoken.get_encoding("r50k_base")

    encoders = {"tiktoken r50k_base": ref, "ours (trained)": ours, "ours (GPT-2 ranks via tokenizer.json)": ours_gpt2}
    sample = "".join(docs)[: args.sample_mb * 1_000_000]
    pieces = [sample[i : i + 20_000] for i in range(0, len(sample), 20_000)]  # document-sized texts for the batch
    nb = len(sample.encode())
    for enc in encoders.values():  # warm up (lazy tiktoken construction, regex compilation, thread pool)
        enc.encode_ordinary_batch(pieces[:50], num_threads=2)
    single = {k: (0.0, 0.0) for k in encoders}
    batch = {k: (0.0, 0.0) for k in encoders}
    for _ in range(args.repeats):  # short interleaved trials: background load hits every encoder alike
        for name, enc in encoders.items():
            r = best_rate(lambda e=enc: e.encode_ordinary(sample), nb, 1)
            single[name] = (max(single[name][0], r[0]), max(single[name][1], r[1]))
            r = best_rate(lambda e=enc: e.encode_ordinary_batch(pieces, num_threads=2), nb, 1)
            batch[name] = (max(batch[name][0], r[0]), max(batch[name][1], r[1]))
    print(f"sample {nb / 1e6:.1f} MB of the corpus; best of {args.repeats} interleaved trials (wall / CPU time)")
    for name in encoders:
        print(f"  {name:38s} 1 thread {single[name][0] / 1e6:5.1f} MB/s (CPU {single[name][1] / 1e6:5.1f})   "
              f"batch, 2 threads {batch[name][0] / 1e6:5.1f} MB/s")
    base = "tiktoken r50k_base"
    for name in ("ours (trained)", "ours (GPT-2 ranks via tokenizer.json)"):
        print(f"RATIO {name} / tiktoken GPT-2: 1 thread {single[name][0] / single[base][0]:.2f}x "
              f"(CPU time {single[name][1] / single[base][1]:.2f}x), batch {batch[name][0] / batch[base][0]:.2f}x "
              "(target >= 0.9)")
    n_ours = sum(len(ours.encode_ordinary(d)) for d in docs)
    n_ref = sum(len(ref.encode_ordinary(d)) for d in docs)
    print(f"  tokens: ours {n_ours} ({nbytes / n_ours:.2f} bytes/token), GPT-2 {n_ref} ({nbytes / n_ref:.2f})")


if __name__ == "__main__":
    main()
