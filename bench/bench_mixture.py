"""A weighted mixture's stream against the single-source stream of the same documents, measured in the same run.

1. The worst share error over any window of 50 steps: of the block choice alone (data/mixstream.py's Weyl sequence,
   2000 steps of 512 blocks: GPT-2 124M's step) and of the blocks a real mixture run trained (its loader's sources).
2. Pipeline tokens/s of a 3-source mixture against one source holding the same documents (target >= 0.95x):
   tokens delivered per wall second (and per CPU second of the process, the steadier figure on a shared machine)
   over the same steps, after a warm-up long enough for every source's sub-stream of every canonical stream to have
   started (a light source's first block buffer fills later than a heavy one's), interleaved rounds, medians.
3. Per-rank memory of the data path (target <= 1.2x): each stream in a fresh process, its peak RSS (ru_maxrss)
   minus its RSS once torch, the tokenizer and the source are loaded, and the peak itself.

The documents: ../shared/corpus (else the package's demo plays) cut into ~4 KB documents, one jsonl file per
source (web: the FineWeb-Edu sample, books: half the novels, more: the rest), weights by their sizes; the single
source is one jsonl file of all of them, interleaved.

    python bench/bench_mixture.py [--steps 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from bench_data import rss_mb  # noqa: E402  # bench/, the script's directory, is on sys.path

from tests.mixture_checks import worst_window_error  # noqa: E402

SEQ, BLOCKS = 1024, 16  # a step of 16 blocks: 16 canonical streams


def documents(doc_bytes: int = 4000) -> dict[str, list[str]]:
    """{source: documents} from the shared corpus (or the demo plays), cut at line ends."""
    corpus = ROOT.parent / "shared" / "corpus"
    if corpus.is_dir():
        files = sorted(corpus.glob("*.txt"))
        web = [f for f in files if "fineweb" in f.name]
        books = [f for f in files if f not in web]
        groups = {"web": web, "books": books[::2], "more": books[1::2]}
        texts = {n: [f.read_text(encoding="utf-8") for f in fs] for n, fs in groups.items()}
    else:
        import pyarrow.parquet as pq

        from gpt2stream.data.sources.named import named_data_path

        plays = pq.read_table(named_data_path("demo"), columns=["text"]).column("text").to_pylist()
        texts = {"web": plays[0::3], "books": plays[1::3], "more": plays[2::3]}
    out: dict[str, list[str]] = {}
    for name, parts in texts.items():
        docs, cur = [], ""
        for para in "\n".join(parts).split("\n"):  # lines: the FineWeb-Edu sample has no blank lines
            cur += para + "\n"
            if len(cur) >= doc_bytes:
                docs.append(cur.strip())
                cur = ""
        out[name] = docs
    return out


def write_fixture(d: Path) -> tuple[Path, Path, dict[str, int]]:
    """(the single source's file, the mixture file, documents per source)."""
    docs = documents()
    sizes = {n: sum(len(t) for t in ts) for n, ts in docs.items()}
    total = sum(sizes.values())
    sources = []
    for n, ts in docs.items():
        with open(d / f"{n}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": f"{n}{i}", "text": t}) + "\n" for i, t in enumerate(ts))
        sources.append({"data": str(d / f"{n}.jsonl"), "name": n, "weight": round(sizes[n] / total, 4)})
    rows = [json.dumps({"id": f"{n}{i}", "text": t}) + "\n" for n, ts in docs.items() for i, t in enumerate(ts)]
    order = sorted(range(len(rows)), key=lambda i: (i * 2654435761) % (1 << 32))  # interleaved, fixed
    single = d / "all.jsonl"
    single.write_text("".join(rows[i] for i in order))
    mix = d / "mix.json"
    mix.write_text(json.dumps({"sources": sources}))
    return single, mix, {n: len(ts) for n, ts in docs.items()}


def make_loader(data: Path):
    from gpt2stream.config import DataConfig
    from gpt2stream.data import TrainLoader
    from gpt2stream.data.mixture import resolve
    from tokenizer import load_tokenizer

    cfg = resolve(DataConfig(data=str(data), seq_len=SEQ, num_workers=0, val_docs=0, shuffle_buffer=1000,
                             block_buffer=1024))
    return TrainLoader(cfg, batch_size=BLOCKS, tokenizer=load_tokenizer("gpt2"), seed=0,
                       total_batch_size=SEQ * BLOCKS)


def rate(data: Path, steps: int, warmup: int) -> tuple[float, float]:
    """(tokens delivered per wall second, per CPU second of this process) over ``steps`` steps after ``warmup``."""
    loader = make_loader(data)
    for _ in range(warmup):
        loader.next_step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loader.next_step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    loader.close()
    n = steps * BLOCKS * SEQ
    return n / wall, n / cpu


def child(data: Path, steps: int) -> None:
    """One stream in this fresh process: print its RSS before the loader, the most it reached while streaming
    (sampled after every step), its peak (ru_maxrss) and its blocks' sources."""
    import torch  # noqa: F401  (loaded before the baseline, as in a training process)

    from tokenizer import load_tokenizer

    load_tokenizer("gpt2")
    base = rss_mb()
    loader = make_loader(data)
    sources: list[str] = []
    most = base
    for _ in range(steps):
        loader.next_step()
        sources += loader.last_sources
        most = max(most, rss_mb())
    loader.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base": base, "most": most, "peak": peak, "sources": sources}))


def run_child(data: Path, steps: int) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", str(data), "--steps", str(steps)], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="timed steps of 16 x 1024 tokens per run")
    ap.add_argument("--warmup", type=int, default=40, help="steps before the timed ones")
    ap.add_argument("--mem-steps", type=int, default=150, help="steps of each memory run (50-step windows too)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, args.steps)

    from gpt2stream.data.mixstream import pick, weyl_offset, weyl_point

    tmp = tempfile.TemporaryDirectory()
    single, mix, counts = write_fixture(Path(tmp.name))
    weights = {s["name"]: s["weight"] for s in json.loads(mix.read_text())["sources"]}
    mb = single.stat().st_size / 1e6
    print(f"fixture: {sum(counts.values())} documents ({mb:.1f} MB jsonl): {counts}; weights {weights}")

    off, w = weyl_offset(0), list(weights.values())
    chosen = [pick(weyl_point(n, off), w, [False] * len(w)) for n in range(2000 * 512)]
    print(f"WORST 50-STEP WINDOW share error, block choice alone (2000 steps x 512 blocks): "
          f"{worst_window_error(chosen, dict(enumerate(w)), 512) * 100:.3f} pp (target <= 2 pp)")

    rounds = []
    for _ in range(args.repeats):  # interleaved: the machine is shared and noisy
        one, three = rate(single, args.steps, args.warmup), rate(mix, args.steps, args.warmup)
        rounds.append((one, three))
        print(f"  round: single {one[0] / 1e6:.3f}, mixture {three[0] / 1e6:.3f} M tokens/s", flush=True)
    med = statistics.median
    print(f"pipeline, {args.steps} steps of {BLOCKS} x {SEQ} tokens after {args.warmup}, 1 reader (num_workers 0): "
          f"single source {med(r[0][0] for r in rounds) / 1e6:.3f} M tokens/s, 3-source mixture "
          f"{med(r[1][0] for r in rounds) / 1e6:.3f} M tokens/s (medians of {args.repeats} interleaved rounds)")
    print(f"THROUGHPUT RATIO mixture / single = wall {med(r[1][0] / r[0][0] for r in rounds):.3f}, CPU "
          f"{med(r[1][1] / r[0][1] for r in rounds):.3f} (medians of the rounds' ratios; target >= 0.95)")

    mem = []
    for _ in range(max(1, args.repeats // 2)):
        mem.append((run_child(single, args.mem_steps), run_child(mix, args.mem_steps)))
    data_path = [(b["most"] - b["base"]) / (a["most"] - a["base"]) for a, b in mem]
    peaks = [b["peak"] / a["peak"] for a, b in mem]
    a, b = mem[-1]
    print(f"memory over {args.mem_steps} steps, fresh process each (RSS sampled after every step): single "
          f"{a['most']:.0f} MB (data path {a['most'] - a['base']:.0f} MB over {a['base']:.0f} MB of torch and the "
          f"tokenizer), mixture {b['most']:.0f} MB (data path {b['most'] - b['base']:.0f} MB); peaks (ru_maxrss) "
          f"{a['peak']:.0f} / {b['peak']:.0f} MB")
    print(f"MEMORY RATIO mixture / single: data path {med(data_path):.3f}, whole process {med(peaks):.3f} "
          f"(medians of {len(mem)}; target <= 1.2)")
    print(f"WORST 50-STEP WINDOW share error, blocks trained by the mixture run ({args.mem_steps} steps x {BLOCKS}): "
          f"{worst_window_error(b['sources'], weights, BLOCKS) * 100:.3f} pp (target <= 2 pp)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
