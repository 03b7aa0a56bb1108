"""Tokenizer training speed and memory vs HF tokenizers' BpeTrainer, configured the same way.

    python bench/bench_tokenizer_train.py [--corpus ../shared/corpus] [--vocab-size 50257] [--repeats 2]

Every run is a fresh process (so imports and reading the files count, as for a user). Peak memory is the peak of
the summed Pss of the process and all its children (our split phase forks workers; Pss counts shared pages once),
sampled every 10 ms, and at least the main process's max RSS (exact, from wait4).
Runs:
  hf       tokenizers BpeTrainer: Split(GPT-2 regex, isolated) + ByteLevel, byte alphabet, <|endoftext|>
  ours     tokenizer.train.train_bpe on the same files (one document per file), default workers
  ours-cli python train_tokenizer.py --data CORPUS (what a user runs; also imports the data pipeline)
Prints the ratios ours/hf for wall time and peak memory (targets: <= 2.0 and <= 2.0), best of the repeats, and
for CPU time (which background load on a shared machine disturbs much less than wall time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HF_SCRIPT = """
import glob, sys
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers, decoders
sys.path.insert(0, {root!r})
from tokenizer.patterns import GPT2_HF
files = sorted(glob.glob({corpus!r} + "/*.txt"))
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(GPT2_HF), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
])
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size={vocab}, special_tokens=["<|endoftext|>"], show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train(files, trainer)
tok.save({out!r})
"""

OURS_SCRIPT = """
import glob, sys
sys.path.insert(0, {root!r})
from tokenizer.train import train_bpe
files = sorted(glob.glob({corpus!r} + "/*.txt"))
docs = (open(f, encoding="utf-8").read() for f in files)
train_bpe(docs, {vocab}).save({out!r})
"""


def tree_pss_kib(pid: int) -> int:
    """Summed proportional set size (Pss) of ``pid`` and all its descendants (KiB). Pss splits pages shared after a
    fork between the processes sharing them, so forked workers are not counted twice (RSS would)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def measure(cmd: list[str]) -> tuple[float, float, float, float]:
    """(wall seconds, peak summed Pss of the process tree MiB, ru_maxrss of the main process MiB, CPU seconds of
    the process and the children it waited for: user + system, all threads)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_pss_kib(proc.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    maxrss = usage.ru_maxrss / 1024
    # the tree holds at least the main process's resident pages at its peak: sampling can miss a short peak
    return wall, max(peak / 1024, maxrss), maxrss, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--vocab-size", type=int, default=50257)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    corpus = str(Path(args.corpus).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    fmt = dict(root=str(ROOT), corpus=corpus, vocab=args.vocab_size)
    runs = {
        "hf": [sys.executable, "-c", HF_SCRIPT.format(out=str(tmp / "hf.json"), **fmt)],
        "ours": [sys.executable, "-c", OURS_SCRIPT.format(out=str(tmp / "ours.json"), **fmt)],
        "ours-cli": [sys.executable, str(ROOT / "train_tokenizer.py"), "--data", corpus, "--vocab-size",
                     str(args.vocab_size), "--out", str(tmp / "cli.json"), "--quiet"],
    }
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in runs}
    for _ in range(args.repeats):  # interleaved, so background load hits every run alike
        for name, cmd in runs.items():
            results[name].append(measure(cmd))
    best = {k: tuple(min(r[i] for r in v) for i in range(4)) for k, v in results.items()}
    print(f"corpus {corpus} ({sum(f.stat().st_size for f in Path(corpus).glob('*.txt')) / 1e6:.1f} MB), "
          f"vocab {args.vocab_size}, best of {args.repeats}, {os.cpu_count()} CPUs")
    for name, (wall, mem, maxrss, cpu) in best.items():
        walls = ", ".join(f"{r[0]:.2f}" for r in results[name])
        print(f"  {name:9s} wall {wall:6.2f} s (runs: {walls})   CPU {cpu:6.2f} s   peak memory {mem:5.0f} MiB "
              f"(main process max RSS {maxrss:.0f} MiB)")
    hf_wall, hf_mem, _, hf_cpu = best["hf"]
    for name in ("ours", "ours-cli"):
        wall, mem, _, cpu = best[name]
        print(f"RATIO {name}/hf: wall {wall / hf_wall:.2f}x (target <= 2.0)   peak memory {mem / hf_mem:.2f}x "
              f"(target <= 2.0)   CPU time {cpu / hf_cpu:.2f}x (robust to background load)")
    _compression(tmp, corpus)


def _compression(tmp: Path, corpus: str) -> None:
    """Sanity: both vocabularies compress the corpus about equally (bytes per token on the FineWeb-Edu sample)."""
    import tokenizers

    sys.path.insert(0, str(ROOT))
    from tokenizer import Tokenizer

    text = (Path(corpus) / "fineweb_edu_sample.txt").read_text(encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(tmp / "hf.json"))
    ours = Tokenizer.from_file(tmp / "ours.json")
    n_hf, n_ours = len(hf.encode(text).ids), len(ours.encode_ordinary(text))
    size = len(text.encode())
    print(f"  bytes/token on fineweb_edu_sample.txt: hf {size / n_hf:.3f}, ours {size / n_ours:.3f}")


if __name__ == "__main__":
    main()
