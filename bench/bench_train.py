"""A training step of this project's GPT against an independent nanoGPT-style GPT written here: tok/s, peak memory,
losses.

    python bench/bench_train.py                                    # the whole matrix (long on 2 loaded cores)
    python bench/bench_train.py --shapes tiny --modes eager        # a subset: any of the three lists
    python bench/bench_train.py --shapes 124m --dtypes float32 --steps 3 --rounds 1
    python bench/bench_train.py --shapes tiny --trainer      # also gpt2stream.train.train() against the reference

Shapes: ``tiny`` is the tiny preset's step (4 layers, width 128, B=8, T=128, 2 micro-steps); ``124m`` is one
GPT-2 small micro-step (B=2, T=1024). Modes: eager and torch.compile. Dtypes: float32 and bfloat16 autocast.

Both sides run the same loop (build-nanogpt's: ``logits, loss = model(x, y)``, backward, clip, fused AdamW with
decay on 2-D weights), in this process, on the same batches of real text, from the same initial weights (the
reference loads ours), step by step in alternation (step s of one side, then of the other, the first side
alternating). By default the reference is padded to 50,304 columns as nanoGPT and build-nanogpt train, with the
padding columns masked out of the loss (a -inf bias inside the same matmul), so both compute the same loss;
``--ref-vocab real`` makes it 50,257 columns, ``--ref-vocab nanogpt`` build-nanogpt's unmasked 50,304 (another
loss: no loss check). Printed per configuration: the median step's tok/s of each side and their ratio ours /
reference (the fastest steps' ratio beside it: under load it swings far more); the peak memory of two optimizer
steps, weights and AdamW state included (an extra, untimed run under torch's memory profiler on CPU); the largest
loss difference over the steps of the first round. ``--allocator-row`` runs the same configurations again under
``MALLOC_MMAP_MAX_=0`` (glibc reuses its heap instead of mapping fresh zeroed pages for every logits-sized buffer):
the part of a ratio that is page faults, not the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from config import PRESETS  # noqa: E402
from gpt2stream.config import ModelConfig  # noqa: E402
from gpt2stream.model import GPT  # noqa: E402
from gpt2stream.peakmem import peak_bytes  # noqa: E402

VOCAB = 50257
PADDED = 50304  # nanoGPT and build-nanogpt train at 50,304 columns, as we do
SHAPES = {  # n_layer, n_head, n_embd, B, T, micro-steps per optimizer step
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, B=8, T=128, accum=2),
    "124m": dict(n_layer=12, n_head=12, n_embd=768, B=2, T=1024, accum=1),
}


# ---- the reference: nanoGPT-style GPT-2, independent of gpt2stream.model -------------------------------------------

@dataclass
class RefConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    real_vocab: int = 0  # > 0 and < vocab_size: the columns from here on are padding, masked out of the loss


class RefAttention(nn.Module):
    def __init__(self, config: RefConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefMLP(nn.Module):
    def __init__(self, config: RefConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class RefBlock(nn.Module):
    def __init__(self, config: RefConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = RefAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = RefMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, config: RefConfig):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([RefBlock(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        pad = None
        if 0 < config.real_vocab < config.vocab_size:  # -inf on the padding columns, added inside the matmul
            pad = torch.zeros(config.vocab_size)
            pad[config.real_vocab:] = float("-inf")
        self.register_buffer("pad_bias", pad, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = F.linear(self.transformer.ln_f(x), self.lm_head.weight, self.pad_bias)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def ref_optimizer(model: nn.Module, lr: float) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


# ---- the models, the data, the loop ---------------------------------------------------------------------------------

def initial_state(shape: dict) -> dict[str, torch.Tensor]:
    """Our GPT's initial weights at seed 0: both sides start from them."""
    torch.manual_seed(0)
    return GPT(our_config(shape)).state_dict()


def our_config(shape: dict) -> ModelConfig:
    return ModelConfig(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                       block_size=shape["T"], vocab_size=VOCAB)


def build(side: str, shape: dict, init: dict[str, torch.Tensor], ref_vocab: str) -> tuple[nn.Module,
                                                                                            torch.optim.AdamW]:
    """The side's model with the shared initial weights, and its optimizer."""
    if side == "ours":
        ours = GPT(our_config(shape))
        ours.load_state_dict(init)
        from gpt2stream.config import TrainConfig
        from gpt2stream.optim import build_optimizer

        return ours, build_optimizer(ours, TrainConfig(lr=6e-4, weight_decay=0.1), "cpu")
    width = VOCAB if ref_vocab == "real" else PADDED
    ref = RefGPT(RefConfig(block_size=shape["T"], vocab_size=width, n_layer=shape["n_layer"],
                           n_head=shape["n_head"], n_embd=shape["n_embd"],
                           real_vocab=VOCAB if ref_vocab == "padded" else 0))
    wte = init["transformer.wte.weight"][:width]  # the padding rows are never predicted by ours
    ref.load_state_dict({**init, "transformer.wte.weight": wte, "lm_head.weight": wte})
    return ref, ref_optimizer(ref, 6e-4)


def paragraphs() -> list[str]:
    """The shared real-text corpus (generated text on a fresh clone without it)."""
    corpus = ROOT.parent / "shared" / "corpus" / "fineweb_edu_sample.txt"
    if corpus.is_file():
        return [p for p in corpus.read_text(encoding="utf-8").splitlines() if p.strip()]
    import random

    rng = random.Random(0)
    words = "the of and to in a is that for it as was with be by on not he this are or his from".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(50, 300))) for _ in range(5000)]


def real_tokens(n: int) -> torch.Tensor:
    """The first n GPT-2 tokens of the benchmark's text, documents separated by <|endoftext|>."""
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    ids: list[int] = []
    for p in paragraphs():
        ids += tok.encode_ordinary(p) + [tok.eot_id]
        if len(ids) > n:
            break
    return torch.tensor(ids[:n], dtype=torch.long)


def one_step(model: nn.Module, fwd: nn.Module, opt: torch.optim.AdamW, tokens: torch.Tensor, shape: dict, step: int,
             dtype: str) -> tuple[float, float]:
    """Optimizer step ``step`` of build-nanogpt's loop -> (seconds, loss)."""
    B, T, accum = shape["B"], shape["T"], shape["accum"]
    amp = dtype == "bfloat16"
    t0 = time.perf_counter()
    loss_accum = 0.0
    for micro in range(accum):
        buf = tokens[(step * accum + micro) * B * T:][: B * T + 1]
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=amp):
            logits, loss = fwd(x, y)  # ours hands back no logits with targets: None here
        loss = loss / accum
        loss_accum += loss.detach()
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, float(loss_accum)


def train_steps(model: nn.Module, opt: torch.optim.AdamW, tokens: torch.Tensor, shape: dict, steps: int,
                dtype: str, compiled: bool) -> tuple[list[float], list[float]]:
    """``steps`` optimizer steps of one side -> (seconds per step, loss per step)."""
    fwd = torch.compile(model) if compiled else model
    got = [one_step(model, fwd, opt, tokens, shape, s, dtype) for s in range(steps)]
    return [t for t, _ in got], [lo for _, lo in got]


def interleaved_steps(sides: dict[str, tuple[nn.Module, torch.optim.AdamW]], tokens: torch.Tensor, shape: dict,
                      steps: int, dtype: str, compiled: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Both sides' step s, one after the other (which goes first alternates), for s in range(steps): a load that
    comes and goes over seconds falls on both alike -> (seconds per step, loss per step), per side."""
    fwds = {k: (torch.compile(m) if compiled else m) for k, (m, _) in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    losses: dict[str, list[float]] = {k: [] for k in sides}
    for s in range(steps):
        for k in (list(sides) if s % 2 == 0 else list(sides)[::-1]):
            t, lo = one_step(sides[k][0], fwds[k], sides[k][1], tokens, shape, s, dtype)
            times[k].append(t)
            losses[k].append(lo)
    return times, losses


def peak_of_two_steps(side: str, shape: dict, init: dict[str, torch.Tensor], tokens: torch.Tensor, dtype: str,
                      compiled: bool, ref_vocab: str) -> int:
    """Peak bytes from building the model through two optimizer steps (weights, AdamW state, activations)."""
    def work() -> None:
        model, opt = build(side, shape, init, ref_vocab)
        train_steps(model, opt, tokens, shape, 2, dtype, compiled)

    if compiled:  # compile outside the profiled run: its own allocations are not the step's
        model, opt = build(side, shape, init, ref_vocab)
        train_steps(model, opt, tokens, shape, 1, dtype, compiled)
        del model, opt
    return peak_bytes(work)[0]


def time_trainer(tokens_file: Path, steps: int, warmup: int, dtype: str, compiled: bool) -> list[float]:
    """Seconds per step of gpt2stream.train.train() itself on the tiny preset (data pipeline with its DataLoader
    worker, accumulation, clipping, schedule, metrics.jsonl), read from its metrics.jsonl."""
    import tempfile

    from gpt2stream.config import load_config
    from gpt2stream.train import train

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(["--preset", "tiny", "--data", str(tokens_file), "--out-dir", f"{d}/run",
                           "--max-steps", str(steps), "--dtype", dtype, "--compile" if compiled else "--no-compile",
                           "--eval-every", "0", "--save-every", "0", "--sample-every", "0", "--val-docs", "10",
                           "--eval-tokens", "128", "--log-every", "1000", "--device", "cpu"], PRESETS)
        with open(f"{d}/stdout.txt", "w") as log, contextlib.redirect_stdout(log):  # its log lines
            code = train(cfg)
        if code != 0:
            raise SystemExit(f"error: the trainer run failed (exit {code})")
        ms = [json.loads(line)["ms"] for line in Path(f"{d}/run/metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return [m / 1000 for m in ms[warmup:]]


def corpus_jsonl(path: Path) -> Path:
    """The benchmark's text as a jsonl file the trainer reads."""
    with open(path, "w") as f:
        for i, p in enumerate(paragraphs()):
            f.write(json.dumps({"id": str(i), "text": p}) + "\n")
    return path


def run_config(shape_name: str, compiled: bool, dtype: str, a: argparse.Namespace) -> dict:
    shape = SHAPES[shape_name]
    ref_vocab = a.ref_vocab
    tokens = real_tokens((a.steps * shape["accum"] + 1) * shape["B"] * shape["T"] + 1)
    init = initial_state(shape)
    torch._dynamo.reset()  # no graphs (or dynamic-shape decisions) carried over from another configuration
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    losses: dict[str, list[float]] = {}
    for _ in range(0 if a.no_timing else a.rounds):
        sides = {side: build(side, shape, init, ref_vocab) for side in ("ours", "ref")}
        t, lo = interleaved_steps(sides, tokens, shape, a.steps, dtype, compiled)
        for side in sides:
            times[side] += t[side][a.warmup:]
            losses.setdefault(side, lo[side])
        del sides
    tok_step = shape["B"] * shape["T"] * shape["accum"]
    r: dict = {"shape": shape_name, "mode": "compiled" if compiled else "eager", "dtype": dtype}
    if not a.no_memory:
        for side in ("ours", "ref"):
            r[f"{side}_peak_mb"] = peak_of_two_steps(side, shape, init, tokens, dtype, compiled,
                                                     ref_vocab) / 2**20
        r["peak_ratio"] = r["ours_peak_mb"] / r["ref_peak_mb"]
    if a.no_timing:
        return r
    for side in ("ours", "ref"):  # medians: the fastest step swings far more under load
        r[f"{side}_tok_s"] = tok_step / statistics.median(times[side])
        r[f"{side}_tok_s_fastest"] = tok_step / min(times[side])
    r["ratio"] = r["ours_tok_s"] / r["ref_tok_s"]
    r["ratio_fastest"] = r["ours_tok_s_fastest"] / r["ref_tok_s_fastest"]
    if a.trainer and shape_name == "tiny":
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            trainer: list[float] = []
            for _ in range(a.rounds):
                trainer += time_trainer(corpus_jsonl(Path(d) / "docs.jsonl"), a.steps, a.warmup, dtype, compiled)
        r["trainer_tok_s"] = tok_step / statistics.median(trainer)
        r["trainer_ratio"] = r["trainer_tok_s"] / r["ref_tok_s"]
    r["max_loss_diff"] = (max(abs(p - q) for p, q in zip(losses["ours"], losses["ref"], strict=True))
                          if a.ref_vocab != "nanogpt" else math.nan)
    return r


def show(r: dict) -> str:
    if "ratio" not in r:
        return (f"{r['shape']:5s} {r['mode']:8s} {r['dtype']:8s} | peak {r['ours_peak_mb']:7,.0f} vs "
                f"{r['ref_peak_mb']:7,.0f} MB = {r['peak_ratio']:.2f}x")
    mem = (f" | peak {r['ours_peak_mb']:7,.0f} vs {r['ref_peak_mb']:7,.0f} MB = {r['peak_ratio']:.2f}x"
           if "peak_ratio" in r else "")
    if "trainer_ratio" in r:
        mem += f" | trainer {r['trainer_tok_s']:8,.0f} tok/s = {r['trainer_ratio']:.3f}x"
    return (f"{r['shape']:5s} {r['mode']:8s} {r['dtype']:8s} | ours {r['ours_tok_s']:8,.0f} tok/s, ref "
            f"{r['ref_tok_s']:8,.0f} (medians) = {r['ratio']:.3f}x (fastest steps {r['ratio_fastest']:.3f}x){mem} | "
            f"max loss diff {r['max_loss_diff']:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,124m", help="comma list of: tiny, 124m")
    ap.add_argument("--modes", default="eager,compiled", help="comma list of: eager, compiled")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma list of: float32, bfloat16")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="first steps of each run not timed (compile, allocator)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, alternated")
    ap.add_argument("--ref-vocab", choices=["padded", "real", "nanogpt"], default="padded",
                    help="reference at 50304 columns with the padding masked out of the loss (same loss; default), "
                         "at 50257 columns, or build-nanogpt's unmasked 50304 (another loss)")
    ap.add_argument("--allocator-row", action="store_true",
                    help="also run the same matrix again under MALLOC_MMAP_MAX_=0 (glibc reuses its heap instead of "
                         "mapping fresh pages for every logits-sized buffer) and print it as its own rows")
    ap.add_argument("--trainer", action="store_true",
                    help="tiny shape: also time gpt2stream.train.train() itself against the reference step")
    ap.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory runs")
    ap.add_argument("--no-timing", action="store_true", help="peak memory only (it does not depend on the load)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    a = ap.parse_args()
    lists = {"shapes": (a.shapes, SHAPES), "modes": (a.modes, ("eager", "compiled")),
             "dtypes": (a.dtypes, ("float32", "bfloat16"))}
    chosen = {}
    for name, (given, allowed) in lists.items():
        chosen[name] = [v for v in given.split(",") if v]
        bad = [v for v in chosen[name] if v not in allowed]
        if bad or not chosen[name]:
            ap.error(f"--{name} {given!r}: choose from {', '.join(allowed)}")
    if a.no_memory and a.no_timing:
        ap.error("--no-memory with --no-timing leaves nothing to measure")
    if not 0 <= a.warmup < a.steps:
        ap.error(f"--warmup {a.warmup} must be in [0, --steps {a.steps})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; reference vocab {a.ref_vocab}; "
          f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', '(unset)')}", flush=True)
    results = []
    for shape in chosen["shapes"]:
        for mode in chosen["modes"]:
            for dtype in chosen["dtypes"]:
                results.append(run_config(shape, mode == "compiled", dtype, a))
                print(show(results[-1]), flush=True)
    if a.allocator_row and os.environ.get("MALLOC_MMAP_MAX_") is None:
        results += allocator_rows()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


def allocator_rows() -> list[dict]:
    """The same command again in a process with MALLOC_MMAP_MAX_=0 (glibc reads it at start-up): how much of the
    ratio is page faults on freshly mapped buffers rather than the model's own work."""
    import subprocess
    import tempfile

    argv = [a for a in sys.argv[1:] if a != "--allocator-row"]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rows.json"
        cut = [a for i, a in enumerate(argv) if a != "--json" and (i == 0 or argv[i - 1] != "--json")]
        env = dict(os.environ, MALLOC_MMAP_MAX_="0")
        print("with MALLOC_MMAP_MAX_=0 (heap reuse, no fresh pages per large buffer):", flush=True)
        subprocess.run([sys.executable, __file__, *cut, "--json", str(out)], env=env, check=True)
        rows = json.loads(out.read_text())
    for r in rows:
        r["allocator"] = "MALLOC_MMAP_MAX_=0"
    return rows


if __name__ == "__main__":
    main()
