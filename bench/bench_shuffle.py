"""Block-level mixing on data where a few documents are much longer than the rest, against references measured in
the same run.

The data: ~1000 short text files (a few KB each, cut from ../shared/corpus, else from the package's demo plays)
plus two long texts (novels of 2.0 MB and 0.8 MB, or that many whole plays), one document per file (--txt-docs
file): the long ones hold about half of all tokens, like the log files of issue 16.

1. Mixing: the largest share of any one document among the tokens of a window of consecutive steps, over the
   first steps of the run, for: the pipeline with the preset's defaults (canonical streams + block buffer); the
   same without mixing (1 stream, no block buffer: documents packed one after another, as before); and a random
   global block order (every block of the epoch shuffled at once, the ideal a bounded buffer approximates).
2. Training (``--train``): a tiny GPT trained a few hundred steps on each order, the same initial weights, then the
   loss on the held-out documents; mean over 2 seeds. The pipeline should be within noise of the global order.

    python bench/bench_shuffle.py [--steps 200] [--window 8] [--train]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

CORPUS = ROOT.parent / "shared" / "corpus"
LONG = ("anna_karenina.txt", "dracula.txt")
SHORT_SOURCES = ("fineweb_edu_sample.txt", "frankenstein.txt", "dorian_gray.txt", "call_of_the_wild.txt")


def demo_texts() -> tuple[str, list[str]]:
    """(text to cut short documents from, [two long texts of ~2.0 MB and ~0.8 MB]) from the corpus shipped in the
    package (``--data demo``: Shakespeare's plays, ~5 MB): whole plays joined into the long ones, the rest cut."""
    import pyarrow.parquet as pq

    from gpt2stream.data.sources.named import named_data_path

    docs = pq.read_table(named_data_path("demo"), columns=["text"]).column("text").to_pylist()
    longs, cur, sizes = [], [], [2_000_000, 800_000]
    for i, doc in enumerate(docs):
        cur.append(doc)
        if sum(map(len, cur)) >= sizes[len(longs)]:
            longs.append("\n\n".join(cur))
            cur = []
            if len(longs) == len(sizes):
                return "\n".join(docs[i + 1:]), longs
    raise RuntimeError("the demo corpus is smaller than expected")


def corpus_texts(corpus_dir: Path | None) -> tuple[str, list[str]]:
    """(text to cut short documents from, [long novels]): from ``corpus_dir`` (../shared/corpus) when given, else
    from the demo corpus shipped in the package, so that the data builds on a fresh clone too."""
    if corpus_dir is None:
        return demo_texts()
    text = "\n".join((corpus_dir / n).read_text() for n in SHORT_SOURCES)
    return text, [(corpus_dir / n).read_text() for n in LONG]


def build_data(root: Path, short_docs: int = 1000, short_chars: tuple[int, int] = (1500, 4500),
               corpus_dir: Path | None = None, val_docs: int = 40) -> Path:
    """A directory of .txt files: short documents cut from the corpus, the long novels whole. Files sort so that
    the held-out validation documents (the last ``val_docs`` files) are short ones."""
    import random

    rng = random.Random(0)
    text, longs = corpus_texts(corpus_dir)
    d = root / "docs"
    d.mkdir(parents=True)
    pos = 0
    for i in range(short_docs + val_docs):
        n = rng.randint(*short_chars)
        if pos + n > len(text):
            pos = 0
        (d / f"s{i:05d}.txt").write_text(text[pos : pos + n])
        pos += n
    for k, long_text in enumerate(longs):
        (d / f"l-{k}.txt").write_text(long_text)
    # validation = the last files in sorted order: rename val_docs short ones to sort last
    for k, p in enumerate(sorted(d.glob("s*.txt"))[-val_docs:]):
        p.rename(d / f"z-val{k:03d}.txt")
    return d


class DocTokenizer:
    """Every token of a document is its index (+1): a block's tokens say which document each position came from.
    ~4 characters per token, as GPT-2's BPE on English."""

    eot_id = 0
    identity = "bench:doc-ids"

    def __init__(self) -> None:
        import threading

        self.index: dict[str, int] = {}
        self._lock = threading.Lock()  # the pipeline tokenizes in several threads

    def encode_ordinary(self, text: str) -> list[int]:
        with self._lock:
            i = self.index.setdefault(text, len(self.index) + 1)
        return [i] * max(1, len(text) // 4)

    def encode_ordinary_batch(self, texts, num_threads=1):
        return [self.encode_ordinary(t) for t in texts]


class ByteTokenizer:
    """UTF-8 bytes + 1, eot = 0: a 257-token vocabulary keeps the training comparison cheap on a CPU."""

    eot_id = 0
    identity = "bench:bytes"
    n_vocab = 257

    def encode_ordinary(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode()]

    def encode_ordinary_batch(self, texts, num_threads=1):
        return [self.encode_ordinary(t) for t in texts]


def data_cfg(data: Path, seq_len: int, **kw):
    from gpt2stream.config import DataConfig

    base = dict(data=str(data), txt_docs="file", seq_len=seq_len, val_docs=40, num_workers=0,
                shuffle_buffer=1000, block_buffer=1024)
    base.update(kw)
    return DataConfig(**base)


def pipeline_blocks(cfg, total_batch_size: int, steps: int, tokenizer, seed: int = 1337) -> list:
    """The first ``steps`` global steps of the pipeline, each a (blocks, seq_len+1) LongTensor."""
    from gpt2stream.data import TrainLoader

    loader = TrainLoader(cfg, batch_size=total_batch_size // cfg.seq_len, tokenizer=tokenizer, seed=seed,
                         total_batch_size=total_batch_size)
    out = []
    for _, (x, y) in zip(range(steps), loader, strict=False):
        out.append(__import__("torch").cat([x, y[:, -1:]], 1))
    loader.close()
    return out


def global_blocks(cfg, total_batch_size: int, steps: int, tokenizer, seed: int = 1337) -> list:
    """The reference: every training document packed in file order, then all blocks of the epoch permuted."""
    import numpy as np
    import torch

    from gpt2stream.data.open import open_source
    from gpt2stream.data.packing import Packer, doc_tokens
    from gpt2stream.data.sources import usable

    source = open_source(cfg)
    plan = source.plan(cfg.val_docs, 1)
    packer = Packer(1, cfg.seq_len + 1)
    blocks = []
    for unit in plan.units:
        for row in source.read_unit(unit):
            if usable(row.text):
                blocks += [b[0] for b in packer.push(doc_tokens(tokenizer.encode_ordinary(row.text), 0))]
    order = np.random.default_rng(seed).permutation(len(blocks))
    per = total_batch_size // cfg.seq_len
    need = min(steps, len(blocks) // per)
    return [torch.from_numpy(np.stack([blocks[j] for j in order[s * per : (s + 1) * per]])).long()
            for s in range(need)]


def max_share(steps: list, window: int) -> float:
    """The largest share of one document among the tokens (eot excluded) of any ``window`` consecutive steps."""
    import numpy as np

    per_step = [np.bincount(t[:, :-1].flatten().numpy()) for t in steps]
    worst = 0.0
    for a in range(0, max(1, len(steps) - window + 1)):
        parts = per_step[a : a + window]
        c = np.zeros(max(len(p) for p in parts), dtype=np.int64)
        for p in parts:
            c[: len(p)] += p
        c[0] = 0
        if c.sum():
            worst = max(worst, c.max() / c.sum())
    return float(worst)


def long_share(steps: list, tokenizer) -> float:
    """Share of the long documents' tokens among all tokens of these steps."""
    long_ids = {i for t, i in tokenizer.index.items() if len(t) > 500_000}
    c = Counter(v for t in steps for v in t[:, :-1].flatten().tolist() if v)
    return sum(c[i] for i in long_ids) / max(1, sum(c.values()))


def mixing(data: Path, steps: int, window: int, seq_len: int = 128, total_batch_size: int = 2048) -> dict:
    out = {}
    for name, kw in (("pipeline", {}), ("no mixing (1 stream, no block buffer)", {"streams": 1, "block_buffer": 1}),
                     ("random global block order", None)):
        tok = DocTokenizer()
        c = data_cfg(data, seq_len, **(kw or {}))
        got = (global_blocks if kw is None else pipeline_blocks)(c, total_batch_size, steps, tok)
        out[name] = (max_share(got, window), long_share(got, tok))
    return out


# ---- training comparison -----------------------------------------------------------------------------------------

def train_loss(blocks: list, val: list, seed: int, shape: dict, lr: float = 3e-3) -> float:
    """Train a tiny GPT on ``blocks`` (one step each), return the mean loss on ``val`` blocks."""
    import torch

    from gpt2stream.config import ModelConfig, TrainConfig
    from gpt2stream.model import GPT
    from gpt2stream.optim import build_optimizer
    from gpt2stream.schedules import cosine_lr

    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=ByteTokenizer.n_vocab, vocab_multiple=1, **shape))
    opt = build_optimizer(model, TrainConfig(lr=lr, weight_decay=0.1), "cpu")
    for s, b in enumerate(blocks):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(s, lr, lr / 10, 10, len(blocks))
        _, loss = model(b[:, :-1], b[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        losses = [model(v[:, :-1], v[:, 1:])[1].item() for v in val]
    return sum(losses) / len(losses)


def training(data: Path, steps: int, seeds=(1337, 1338), seq_len: int = 128, total_batch_size: int = 2048,
             shape: dict | None = None, unmixed: bool = True) -> dict[str, list[float]]:
    import torch

    from gpt2stream.data import val_batches

    shape = shape or {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": seq_len}
    tok = ByteTokenizer()
    c = data_cfg(data, seq_len)
    val = [torch.cat([x, y[:, -1:]], 1) for x, y in val_batches(c, 16, tok, num_tokens=32 * 1024)]
    out: dict[str, list[float]] = {}
    for seed in seeds:
        feeds = {"pipeline": pipeline_blocks(c, total_batch_size, steps, tok, seed),
                 "global block order": global_blocks(c, total_batch_size, steps, tok, seed)}
        if unmixed:
            feeds["no mixing"] = pipeline_blocks(data_cfg(data, seq_len, streams=1, block_buffer=1),
                                                 total_batch_size, steps, tok, seed)
        for name, blocks in feeds.items():
            out.setdefault(name, []).append(train_loss(blocks, val, seed, shape))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600, help="steps of the tiny preset's shape (16 blocks of 128; "
                    "an epoch of this data is ~700)")
    ap.add_argument("--window", type=int, default=8, help="consecutive steps judged together")
    ap.add_argument("--train", action="store_true", help="also the training comparison (minutes on a CPU)")
    ap.add_argument("--train-steps", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = build_data(Path(tmp), corpus_dir=CORPUS if CORPUS.is_dir() else None)
        res = mixing(data, args.steps, args.window)
        ref = res["random global block order"][0]
        print(f"largest share of one document in {args.window} consecutive steps (first {args.steps} steps of "
              f"16 x 128 tokens), and the long documents' share of those steps' tokens:")
        for name, (share, longs) in res.items():
            print(f"  {name:40s} {share:6.3f}  ({share / ref:5.2f}x random order)  long docs {longs:5.1%}")
        if args.train:
            t = training(data, args.train_steps)
            g = statistics.mean(t["global block order"])
            print(f"held-out loss (bytes) after {args.train_steps} tiny steps (2 layers x 64, 16 x 128 byte tokens "
                  f"a step), mean of {len(t['pipeline'])} seeds:")
            for name, v in t.items():
                print(f"  {name:20s} {statistics.mean(v):.3f}  (seeds: {', '.join(f'{x:.3f}' for x in v)}; "
                      f"{statistics.mean(v) - g:+.3f} vs global order)")


if __name__ == "__main__":
    main()
