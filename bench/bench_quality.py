"""Time to quality: AdamW (cosine) against Muon + AdamW (WSD), each with its tuned defaults, on the same globally
shuffled blocks of real text, at equal tokens.

    python bench/bench_quality.py                            # both shapes, both optimizers (minutes on a CPU)
    python bench/bench_quality.py --shapes tiny --steps 40   # a quick look
    python bench/bench_quality.py --shapes wide8k --sweep-muon-lr 3e-3,8e-3,2e-2 --qkv three --steps 40
    python bench/bench_quality.py --shapes wide8k --qkv one,three --only muon

Shapes: ``tiny`` is the tiny preset's network (4 layers, width 128) with GPT-2's tokenizer, whose 50257-row
embedding holds 89% of the parameters; ``wide8k`` is 4 layers of width 192 with a tokenizer of 8192 tokens trained
here (tokenizer.train_bpe) on the same text, so that the blocks' matrices hold half of them. The text is the corpus
that ships in the package (gpt2stream/assets/demo); the last 5% of its documents are the validation set.

Printed per shape: each optimizer's final val_loss and val_bpb (bits per UTF-8 byte, comparable across
tokenizers) after the same tokens; the tokens Muon needs to reach AdamW's final val_loss (read off its validation
curve, evaluated every ``--eval-every`` steps and interpolated: an upper bound, since a WSD run is only at its best
once its decay is done) and their ratio; the median time per step, Muon / AdamW. The recipes train in lockstep in
this process (step s of each in turn, so a change in the machine's load slows all alike) with the package's own
model, optimizers (gpt2stream.optim) and schedules.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from gpt2stream.config import ModelConfig, TrainConfig  # noqa: E402
from gpt2stream.model import GPT  # noqa: E402
from gpt2stream.optim import build_optimizer, set_lr  # noqa: E402
from gpt2stream.schedules import make_schedule  # noqa: E402

DEMO = ROOT / "gpt2stream" / "assets" / "demo" / "shakespeare.parquet"
SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, vocab="gpt2", B=4, T=64),
    "wide8k": dict(n_layer=4, n_head=4, n_embd=192, vocab=8192, B=8, T=64),
}
# The recipes compared: AdamW as the tiny preset trains it (cosine to lr/10); Muon with the tuned --muon-lr
# (docs/training.md's sweep), AdamW's lr for the embeddings, LayerNorms and biases, and WSD (1-sqrt, last 20%).
RECIPES = {
    "adamw": dict(optimizer="adamw", schedule="cosine", lr=3e-3, min_lr=3e-4),
    "muon": dict(optimizer="muon", schedule="wsd", lr=3e-3, min_lr=3e-4, muon_lr=8e-3, decay_frac=0.2,
                 decay_shape="1-sqrt"),
}


def documents() -> list[str]:
    import pyarrow.parquet as pq

    return [t for t in pq.read_table(DEMO, columns=["text"]).column("text").to_pylist() if t]


def tokenizer_for(vocab, docs: list[str], cache: Path):
    from tokenizer import Tokenizer, load_tokenizer

    if vocab == "gpt2":
        return load_tokenizer("gpt2")
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"tokenizer-{vocab}.json"
    if not path.exists():
        from tokenizer.train import train_bpe

        t0 = time.perf_counter()
        train_bpe(docs, vocab).save(path)
        print(f"trained a {vocab}-token tokenizer on the corpus in {time.perf_counter() - t0:.0f} s -> {path}")
    return Tokenizer.from_file(path)


def blocks(tok, docs: list[str], T: int) -> torch.Tensor:
    """Every document followed by <|endoftext|>, concatenated and cut into blocks of T+1 tokens."""
    ids: list[int] = []
    for ids_doc in tok.encode_ordinary_batch(docs):
        ids += ids_doc + [tok.eot_id]
    n = len(ids) // (T + 1)
    return torch.tensor(ids[: n * (T + 1)]).view(n, T + 1)


def evaluate(model: GPT, val: torch.Tensor, nbytes: torch.Tensor, B: int) -> tuple[float, float]:
    """(mean loss per token, bits per byte) over the validation blocks: sums, then one division."""
    model.eval()
    loss_sum, tokens, text_bytes = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(val), B):
            x, y = val[i:i + B, :-1], val[i:i + B, 1:]
            loss_sum += model(x, y)[1].item() * y.numel()
            tokens += y.numel()
            text_bytes += int(nbytes[y].sum())
    model.train()
    return loss_sum / tokens, loss_sum / math.log(2) / text_bytes


class Run:
    """One recipe's model, optimizer and schedule, its validation curve [(tokens, val_loss, val_bpb)] and the time
    of every step."""

    def __init__(self, shape: dict, t: TrainConfig, vocab: int) -> None:
        torch.manual_seed(0)  # the same initial weights for every recipe
        self.model = GPT(ModelConfig(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                                   block_size=shape["T"], vocab_size=vocab))
        self.t, self.opt, self.schedule = t, build_optimizer(self.model, t, "cpu"), make_schedule(t)
        self.curve: list[tuple[int, float, float]] = []
        self.times: list[float] = []

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        set_lr(self.opt, self.schedule.lr_at(step), self.t.lr)
        self.model(x, y)[1].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - t0)


def train(shape: dict, recipes: list[tuple[str, TrainConfig]], data: torch.Tensor, val: torch.Tensor,
          nbytes: torch.Tensor, vocab: int, eval_every: int) -> dict[str, Run]:
    """Every recipe in lockstep (step s of each in turn), so a change in the machine's load slows all alike."""
    runs = {label: Run(shape, t, vocab) for label, t in recipes}
    B, steps = shape["B"], recipes[0][1].max_steps
    for step in range(steps):
        x, y = data[step * B:(step + 1) * B, :-1], data[step * B:(step + 1) * B, 1:]
        for run in runs.values():
            run.step(step, x, y)
        done = step + 1
        if done % eval_every == 0 or done == steps:
            for run in runs.values():
                run.curve.append((done * B * shape["T"], *evaluate(run.model, val, nbytes, B)))
    return runs


def tokens_to(curve: list[tuple[int, float, float]], target: float) -> float | None:
    """The tokens at which the validation curve first reaches ``target`` (linear between evaluations)."""
    prev = (0, math.inf)
    for tokens, loss, _ in curve:
        if loss <= target:
            if not math.isfinite(prev[1]):
                return float(tokens)
            return prev[0] + (tokens - prev[0]) * (prev[1] - target) / (prev[1] - loss)
        prev = (tokens, loss)
    return None


def recipe(name: str, steps: int, warmup: int, **over) -> TrainConfig:
    return replace(TrainConfig(max_steps=steps, warmup_steps=warmup), **{**RECIPES[name], **over})


def run_shape(name: str, args: argparse.Namespace, docs: list[str]) -> None:
    shape = SHAPES[name]
    tok = tokenizer_for(shape["vocab"], docs, Path(args.cache))
    n_val = max(1, len(docs) // 20)
    val = blocks(tok, docs[-n_val:], shape["T"])[: args.val_blocks]
    data = blocks(tok, docs[:-n_val], shape["T"])
    data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))]  # one global shuffle
    need = args.steps * shape["B"]
    assert len(data) >= need, f"{len(data)} blocks < {need}: fewer --steps"
    from gpt2stream.train.evaluate import token_bytes

    nbytes = token_bytes(tok, torch.device("cpu"))
    print(f"\n== {name}: {shape['n_layer']} layers x {shape['n_embd']}, vocabulary {tok.n_vocab}, "
          f"{shape['B']} x {shape['T']} tokens/step, {args.steps} steps, {len(val)} validation blocks")
    runs = train(shape, variants(args), data, val, nbytes, tok.n_vocab, args.eval_every)
    for label, r in runs.items():
        tokens, loss, bpb = r.curve[-1]
        print(f"{label:<28} val_loss {loss:.4f}  val_bpb {bpb:.4f}  after {tokens:,} tokens  median step "
              f"{statistics.median(r.times) * 1000:.0f} ms", flush=True)
    report(runs)


def variants(args: argparse.Namespace) -> list[tuple[str, TrainConfig]]:
    warmup = max(1, args.steps // 10)
    out = []
    for name in args.only.split(","):
        if name == "muon":
            for lr in [float(v) for v in args.sweep_muon_lr.split(",")] if args.sweep_muon_lr else [None]:
                for qkv in args.qkv.split(","):
                    over = {"muon_qkv": qkv, **({"muon_lr": lr} if lr else {})}
                    t = recipe("muon", args.steps, warmup, **over)
                    out.append((f"muon lr {t.muon_lr:g} qkv {qkv}", t))
        else:
            out.append(("adamw", recipe("adamw", args.steps, warmup)))
    return out


def report(runs: dict[str, Run]) -> None:
    if "adamw" not in runs:
        return
    base = runs["adamw"]
    target = base.curve[-1][1]
    for label, r in runs.items():
        if label == "adamw":
            continue
        need = tokens_to(r.curve, target)
        ratio = statistics.median(r.times) / statistics.median(base.times)
        reach = (f"reaches AdamW's final val_loss {target:.4f} after {need:,.0f} tokens = "
                 f"{need / base.curve[-1][0]:.2f}x AdamW's" if need else f"does not reach {target:.4f}")
        print(f"{label}: {reach}; time per step {ratio:.2f}x AdamW's")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="tiny,wide8k")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--val-blocks", type=int, default=32)
    p.add_argument("--only", default="adamw,muon", help="the recipes to run: adamw, muon")
    p.add_argument("--qkv", default="three", help="muon: c_attn orthogonalised as one, three or one,three")
    p.add_argument("--sweep-muon-lr", default="", help="muon: comma-separated --muon-lr values to try")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="/tmp", help="where the trained tokenizer is kept between runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    docs = documents()
    for name in args.shapes.split(","):
        run_shape(name, args, docs)


if __name__ == "__main__":
    main()
