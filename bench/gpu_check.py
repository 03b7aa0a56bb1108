"""GPU acceptance check: one CUDA GPU, at most ~8 minutes including compilation, any torch (2.11 + CUDA 13 on the
GPU image) and no `datasets` package needed.

    PYTHONPATH=. python bench/gpu_check.py --json gpu_check.json   # the JSON is rewritten after every stage
    python bench/gpu_check.py --deterministic                        # the resume must then be bit-identical

The stages, in order, on the first visible GPU (a timeout still leaves the JSON of the finished ones):
  0. env    GPU name, torch and CUDA versions, whether `datasets` is importable (it need not be).
  1. ddp    the trainer's compiled DDP wrapper in a 1-process NCCL group (tiny preset, 4 steps): gradients are views
     into DDP's buckets, batches pinned, Dynamo's graph-break and unique-graph counts (gpu_check_units.py).
  2. bias   the padded vocabulary's -inf bias through Inductor's Triton kernels: compiled fp32 and bf16 losses
     against an eager fp32 reference on the same weights.
  3. train  GPT-2 124M through run_train.py (compiled, bf16, B=16 x T=1024, 20 steps) on a local corpus (../shared's
     FineWeb-Edu sample if present, else generated text), with validation, a small HellaSwag file and a sample at
     the last step (compiled): tok/s, MFU, peak memory and ms/step (steps after the first 5) from its metrics.jsonl.
  4. plain  an independent nanoGPT-style GPT-2 (bench_train.py's, at build-nanogpt's 50304 columns) on the same
     data, dtype and compile setting in build-nanogpt's loop in this process: the ratio ours/plain of tok/s
     (>= 1.0: the trainer adds no overhead) and of peak memory.
  5. resume the same run again, SIGKILLed after its step-10 checkpoint and resumed with --resume: the state at step
     20 must equal the uninterrupted run's (weights within 5e-2, losses within 1e-2: bf16 kernels are not
     deterministic; exactly with --deterministic). The measured differences are printed.
  6. kvcache new tokens/s of KV-cache generation against recomputing the context (GPT-2 124M shape, bf16), and how
     many greedy tokens agree before the first difference: reported, not a check (batch 1 is launch-bound).
Without CUDA it exits 2 with one line. Exit 1 when a check fails (ddp, bias, resume), 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

B, T, STEPS, CUT, SKIP = 16, 1024, 20, 10, 5


def make_corpus(path: Path, n_docs: int = 6000) -> Path:
    corpus = ROOT.parent / "shared" / "corpus" / "fineweb_edu_sample.txt"
    if corpus.is_file():
        paras = [p for p in corpus.read_text(encoding="utf-8").splitlines() if p.strip()]
    else:
        import random

        rng = random.Random(0)
        words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
                 "river stone light garden winter market letter engine forest window").split()
        paras = [" ".join(rng.choice(words) for _ in range(rng.randint(80, 400))) for _ in range(n_docs)]
    with open(path, "w") as f:
        for i in range(max(n_docs, len(paras))):
            f.write(json.dumps({"id": str(i), "text": paras[i % len(paras)]}) + "\n")
    return path


def make_hellaswag(path: Path, n: int = 40) -> Path:
    words = "river stone light garden winter market letter engine forest window candle harbor".split()
    with open(path, "w") as f:
        for i in range(n):
            w = words[i % len(words)]
            f.write(json.dumps({"ctx": f"The {w} was", "label": i % 4,
                                "endings": [f" {words[(i + k) % len(words)]} and quiet." for k in range(4)]}) + "\n")
    return path


def train_args(data: Path, hs: Path, out: Path, deterministic: bool) -> list[str]:
    return ["--preset", "gpt2-124m", "--data", str(data), "--out-dir", str(out), "--device", "cuda",
            "--dtype", "bfloat16", "--compile", "--batch-size", str(B), "--total-batch-size", str(B * T),
            "--max-steps", str(STEPS), "--warmup-steps", "10", "--num-workers", "2", "--val-docs", "200",
            "--eval-every", str(STEPS), "--eval-tokens", str(2 * B * T), "--save-every", str(CUT),
            "--sample-every", str(STEPS), "--sample-tokens", "32", "--evals-every", str(STEPS),
            "--evals-data", f"hellaswag={hs}", "--log-every", "5"] + (["--deterministic"] if deterministic else [])


def run_train(args: list[str], kill_after: Path | None = None, timeout: float = 240) -> str:
    """run_train.py in a subprocess; with ``kill_after``, SIGKILL its process group once that file exists."""
    cmd = [sys.executable, str(ROOT / "run_train.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        if kill_after is not None:
            while not kill_after.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no {kill_after.name} (exit {p.returncode}):\n{p.stdout.read()[-3000:]}")
                time.sleep(0.05)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return ""
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"run_train.py exited {p.returncode}:\n{out[-4000:]}")
    return out


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_figures(run_dir: Path) -> dict:
    steps = [r for r in records(run_dir) if "loss" in r][SKIP:]
    ms = sorted(r["ms"] for r in steps)[len(steps) // 2]
    mfu = [r["mfu"] for r in steps if r.get("mfu") is not None]
    return {"ms_per_step": ms, "tok_s": B * T / ms * 1000, "mfu": sorted(mfu)[len(mfu) // 2] if mfu else None,
            "peak_mem_gb": max(r.get("peak_mem_gb", 0.0) for r in steps)}


def plain_figures(data: Path, ours: dict) -> dict:
    """build-nanogpt's loop on an independent nanoGPT-style GPT-2 (bench_train.py's, at build-nanogpt's padded
    vocabulary of 50304): AdamW groups, bf16 autocast, compile, clip; pre-tokenized data."""
    import torch
    from bench_train import RefConfig, RefGPT, ref_optimizer

    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    ids: list[int] = []
    with open(data) as f:
        for line in f:
            ids += tok.encode_ordinary(json.loads(line)["text"]) + [tok.eot_id]
            if len(ids) > STEPS * B * T + 1:
                break
    tokens = torch.tensor(ids[: STEPS * B * T + 1], dtype=torch.long)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")
    model = RefGPT(RefConfig(block_size=T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768)).to(dev)
    fwd = torch.compile(model)
    opt = ref_optimizer(model, 6e-4)
    torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for step in range(STEPS):
        t0 = time.perf_counter()
        buf = tokens[step * B * T:][: B * T + 1].to(dev, non_blocking=True)
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            _, loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    ms = sorted(times[SKIP:])[len(times[SKIP:]) // 2] * 1000
    tok_s = B * T / ms * 1000
    # the same model FLOPs per token as ours, so MFU scales with tok/s
    mfu = None if ours["mfu"] is None else ours["mfu"] * tok_s / ours["tok_s"]
    figures = {"ms_per_step": ms, "tok_s": tok_s, "mfu": mfu,
               "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 2**30}
    del model, fwd, opt
    torch.cuda.empty_cache()
    return figures


def kvcache_figures(new_tokens: int = 256) -> dict:
    import torch

    from gpt2stream.config import ModelConfig
    from gpt2stream.generate import generate_stream
    from gpt2stream.model import GPT

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50257)).to(dev).eval()
    idx = torch.randint(0, 50257, (1, 16), device=dev)

    def timed(use_cache: bool) -> tuple[float, list[int]]:
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            out = [int(t) for t in generate_stream(model, idx, new_tokens, temperature=0.0, use_cache=use_cache)]
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t0, out

    timed(True)
    cached, a = timed(True)
    full, b = timed(False)
    # bf16 kernels of different shapes may break a near-tie differently: count the greedy tokens agreed before
    # the first difference rather than require all
    agreed = next((i for i, (p, q) in enumerate(zip(a, b, strict=True)) if p != q), len(a))
    return {"cached_tok_s": new_tokens / cached, "recompute_tok_s": new_tokens / full, "speedup": full / cached,
            "agreed_tokens": agreed, "new_tokens": new_tokens}


def compare_resume(full: Path, cut: Path, exact: bool) -> dict:
    import torch

    from gpt2stream.checkpoint import find_latest

    a, b = find_latest(full)[1], find_latest(cut)[1]
    worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    la = [r["loss"] for r in records(full) if "loss" in r]
    lb = [r["loss"] for r in records(cut) if "loss" in r]
    loss_diff = max(abs(x - y) for x, y in zip(la, lb, strict=True))
    same_step = a["step"] == b["step"] == STEPS
    ok = same_step and (worst == 0.0 and loss_diff == 0.0 if exact else worst < 5e-2 and loss_diff < 1e-2)
    equal = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    return {"ok": ok, "cut": CUT, "bit_identical": equal, "max_weight_diff": worst, "max_loss_diff": loss_diff,
            "exact": exact}


def table(fig: dict) -> str:
    o, p, r, k = fig["ours"], fig["plain"], fig["resume"], fig["kvcache"]
    mfu = (lambda v: "n/a" if v is None else f"{v * 100:.1f}%")
    rows = [
        ("", "ours", "plain", "ours/plain"),
        ("tok/s", f"{o['tok_s']:,.0f}", f"{p['tok_s']:,.0f}", f"{o['tok_s'] / p['tok_s']:.3f}"),
        ("ms/step", f"{o['ms_per_step']:.1f}", f"{p['ms_per_step']:.1f}", ""),
        ("MFU", mfu(o["mfu"]), mfu(p["mfu"]), ""),
        ("peak memory GiB", f"{o['peak_mem_gb']:.2f}", f"{p['peak_mem_gb']:.2f}",
         f"{o['peak_mem_gb'] / p['peak_mem_gb']:.3f}"),
    ]
    lines = [f"{fig['gpu']} | torch {fig['torch']} | GPT-2 124M, compiled, bf16, B={B} x T={T}, {STEPS} steps"]
    if "ddp" in fig:
        g = fig["ddp"]
        lines.append(f"  compiled DDP at world size 1: {'ok' if g['ok'] else 'FAILED'} (gradients in "
                     f"{g['grad_storages']} bucket storages for {g['grad_params']} parameters, pinned batches "
                     f"{g['pinned_batches']}, graph breaks {g['graph_breaks']}, unique graphs {g['unique_graphs']})")
    if "bias" in fig:
        v = fig["bias"]
        lines.append(f"  padded-vocab -inf bias through Triton: {'ok' if v['ok'] else 'FAILED'} (loss diff to eager "
                     f"fp32: compiled fp32 {v['diff_fp32']:.2g}, compiled bf16 {v['diff_bf16']:.2g})")
    lines += [f"  {a:<16} {b:>12} {c:>12} {d:>11}" for a, b, c, d in rows]
    lines.append(f"  resume after kill -9 at step {r.get('cut', CUT)}: {'ok' if r['ok'] else 'FAILED'} (bit-identical "
                 f"{r['bit_identical']}, max weight diff {r['max_weight_diff']:.3g}, max loss diff "
                 f"{r['max_loss_diff']:.3g}{', --deterministic' if r['exact'] else ''})")
    lines.append(f"  validation {fig['val_loss']:.4f} | HellaSwag acc_norm {fig['hellaswag_acc_norm']:.3f} on "
                 f"{fig['hellaswag_n']} | sample {fig['sample_chars']} chars")
    lines.append(f"  KV cache: {k['cached_tok_s']:.0f} vs {k['recompute_tok_s']:.0f} tok/s recomputing "
                 f"({k['speedup']:.1f}x; greedy tokens equal for the first {k['agreed_tokens']} of {k['new_tokens']})")
    return "\n".join(lines)


def stages(a, fig: dict, d: Path, save) -> None:
    """Run the stages in order, saving ``fig`` after each (a timeout keeps what was measured)."""
    import torch
    from gpu_check_units import datasets_importable, ddp_world_size_1, vocab_bias

    from gpt2stream.mfu import peak_flops

    peak = peak_flops(torch.device("cuda"), torch.bfloat16)
    fig.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda,
               datasets_importable=datasets_importable(), mfu_peak=peak.source)
    save("env")
    data, hs = make_corpus(d / "corpus.jsonl"), make_hellaswag(d / "hellaswag.jsonl")
    fig["ddp"] = ddp_world_size_1(data)
    save("ddp")
    fig["bias"] = vocab_bias()
    save("bias")
    full, cut = d / "full", d / "cut"
    run_train(train_args(data, hs, full, a.deterministic))
    rec = records(full)
    fig.update(ours=train_figures(full), val_loss=next(r["val_loss"] for r in rec if "val_loss" in r),
               hellaswag_acc_norm=next(r["hellaswag_acc_norm"] for r in rec if "hellaswag_acc_norm" in r),
               hellaswag_n=next(r["hellaswag_n"] for r in rec if "hellaswag_n" in r),
               sample_chars=len(next(r["sample"] for r in rec if "sample" in r)))
    save("train")
    fig["plain"] = plain_figures(data, fig["ours"])
    save("plain")
    run_train(train_args(data, hs, cut, a.deterministic), kill_after=cut / "checkpoints" / f"step_{CUT:08d}.pt")
    run_train(["--out-dir", str(cut), "--resume"])
    fig["resume"] = compare_resume(full, cut, a.deterministic)
    save("resume")
    fig["kvcache"] = kvcache_figures()
    save("kvcache")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="", help="write the figures to this file (rewritten after every stage)")
    ap.add_argument("--deterministic", action="store_true", help="train with --deterministic: exact resume")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: bench/gpu_check.py needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); "
              "run it on a machine with one", file=sys.stderr)
        return 2
    t_start, fig = time.monotonic(), {"stages_done": []}

    def save(stage: str) -> None:
        fig["stages_done"].append(stage)
        fig["wall_s"] = round(time.monotonic() - t_start, 1)
        print(f"[gpu_check] {stage} done at {fig['wall_s']} s: {json.dumps(fig.get(stage, ''))[:300]}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as d:
        stages(a, fig, Path(d), save)
    print(table(fig) + f"\n  MFU peak: {fig['mfu_peak']} | wall {fig['wall_s']} s", flush=True)
    return 0 if all(fig[k]["ok"] for k in ("ddp", "bias", "resume")) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
