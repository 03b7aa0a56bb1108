"""Training throughput of the `tiny` preset on this machine: our trainer vs a plain nanoGPT-style loop.

    python bench/bench_train.py                 # eager and torch.compile, bf16 autocast, ~5 min on 2 CPU cores
    python bench/bench_train.py --no-compile    # eager only
    python bench/bench_train.py --dtype float32

"ours" is gpt2stream.train.train() itself (real data pipeline from a local jsonl file with the preset's DataLoader
worker, gradient accumulation, clipping, schedule, metrics.jsonl); the per-step times are read from its
metrics.jsonl (data fetch + forward/backward + clip + optimizer step). "plain" is the same model and optimizer in a
build-nanogpt-style loop over batches of the same text tokenized beforehand, timed over the same span. Both run
in this process, alternated, and each side's fastest step is compared (other load on a shared machine only ever
slows a step; medians are printed too). Printed figures: tokens/s, MFU against this machine's measured matmul
peak, and the ratio ours / plain (>= 1.0 means the trainer adds no overhead).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from config import load_config  # noqa: E402
from gpt2stream.mfu import measure_matmul_flops  # noqa: E402
from gpt2stream.model import GPT, GPTConfig  # noqa: E402


def make_data(path: Path) -> Path:
    corpus = ROOT.parent / "shared" / "corpus" / "fineweb_edu_sample.txt"
    if corpus.is_file():
        paras = [p for p in corpus.read_text(encoding="utf-8").splitlines() if p.strip()]
    else:  # a fresh clone without ../shared: generated text tokenizes at a similar rate
        import random

        rng = random.Random(0)
        words = "the of and to in a is that for it as was with be by on not he this are or his from".split()
        paras = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 300))) for _ in range(5000)]
    with open(path, "w") as f:
        for i, p in enumerate(paras):
            f.write(json.dumps({"id": str(i), "text": p}) + "\n")
    return path


def tiny_args(data: Path, out: Path, steps: int, dtype: str, compile_: bool, extra: list[str]) -> list[str]:
    return ["--preset", "tiny", "--data", str(data), "--out-dir", str(out), "--max-steps", str(steps),
            "--dtype", dtype, "--compile" if compile_ else "--no-compile", "--eval-every", "0", "--save-every", "0",
            "--sample-every", "0", "--val-docs", "10", "--eval-tokens", "128", "--log-every", "1000",
            "--device", "cpu", *extra]


def time_ours(data: Path, steps: int, warmup: int, dtype: str, compile_: bool, extra: list[str]) -> list[float]:
    """Seconds per step of gpt2stream's trainer (steps after warm-up)."""
    from gpt2stream.train import train

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(tiny_args(data, Path(d) / "run", steps, dtype, compile_, extra))
        assert train(cfg) == 0
        ms = [json.loads(line)["ms"] for line in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return [m / 1000 for m in ms[warmup:]]


def real_blocks(path: Path, n: int) -> torch.Tensor:
    """The first n tokens of the same documents ours reads (token statistics matter: the embedding backward of
    repeated ids costs more than of uniformly random ones)."""
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    ids: list[int] = []
    with open(path) as f:
        for line in f:
            ids += tok.encode_ordinary(json.loads(line)["text"]) + [tok.eot_id]
            if len(ids) >= n:
                break
    return torch.tensor(ids[:n], dtype=torch.long)


def time_plain(data_path: Path, steps: int, warmup: int, dtype: str, compile_: bool) -> list[float]:
    """Seconds per step of a build-nanogpt-style loop: same model, AdamW groups, accumulation, clip."""
    cfg = load_config(["--preset", "tiny"])
    B, T = cfg.train.batch_size, cfg.data.seq_len
    accum = cfg.train.total_batch_size // (B * T)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=cfg.model.n_layer, n_head=cfg.model.n_head, n_embd=cfg.model.n_embd,
                          block_size=cfg.model.block_size, vocab_size=50257))
    fwd = torch.compile(model) if compile_ else model
    opt = model.configure_optimizers(0.1, cfg.train.lr, (0.9, 0.95), "cpu")
    amp = dtype == "bfloat16"
    tokens = real_blocks(data_path, steps * accum * B * T + 1)  # one stream, cut like build-nanogpt's loader
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        loss_accum = 0.0
        for micro in range(accum):
            buf = tokens[(step * accum + micro) * B * T:][: B * T + 1]
            x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=amp):
                _, loss = fwd(x, y)
            loss = loss / accum
            loss_accum += loss.detach()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = cfg.train.lr * min(1.0, (step + 1) / cfg.train.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss_accum)
        times.append(time.perf_counter() - t0)
    return times[warmup:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed (first-step and compile overheads)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternated")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--no-eager", action="store_true", help="compiled only")
    ap.add_argument("--num-workers", type=int, default=None, help="override the preset's DataLoader workers (ours)")
    a = ap.parse_args()
    cfg = load_config(["--preset", "tiny"])
    tokens = cfg.train.total_batch_size
    model = GPT(GPTConfig(n_layer=cfg.model.n_layer, n_head=cfg.model.n_head, n_embd=cfg.model.n_embd,
                          block_size=cfg.model.block_size, vocab_size=50257))
    dt = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    peak = measure_matmul_flops(torch.device("cpu"), dt, rounds=5)
    print(f"tiny preset: {model.num_params():,} params, {tokens} tokens/step, {a.dtype}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as d:
        data = make_data(Path(d) / "docs.jsonl")
        extra = [] if a.num_workers is None else ["--num-workers", str(a.num_workers)]
        for compile_ in [c for c in (False, True) if not (c and a.no_compile) and not (not c and a.no_eager)]:
            ours: list[float] = []
            plain: list[float] = []
            for _ in range(a.rounds):  # alternate the two, so both see the same machine load on average
                ours += time_ours(data, a.steps, a.warmup, a.dtype, compile_, extra)
                plain += time_plain(data, a.steps, a.warmup, a.dtype, compile_)
                # the MFU reference, like the steps, is the best seen: load only ever lowers a measurement
                peak = max(peak, measure_matmul_flops(torch.device("cpu"), dt, rounds=3))
            name = "compiled" if compile_ else "eager"
            # the fastest step is the least disturbed by other processes on a shared machine: compare those
            for who, times in (("ours ", ours), ("plain", plain)):
                best, med = min(times), statistics.median(times)
                tok_s = tokens / best
                mfu = model.estimate_mfu(tok_s, peak, cfg.data.seq_len)
                print(f"{name:8s} {who}: best {best * 1000:7.1f} ms/step (median {med * 1000:7.1f})  "
                      f"{tok_s:7,.0f} tok/s  MFU {mfu * 100:5.1f}%  [{len(times)} steps]")
            print(f"{name:8s} ratio ours/plain tok/s: {min(plain) / min(ours):.3f} (best steps), "
                  f"{statistics.median(plain) / statistics.median(ours):.3f} (medians)")
    print(f"MFU reference: best 1024x1024 {a.dtype} matmul seen, {peak / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
