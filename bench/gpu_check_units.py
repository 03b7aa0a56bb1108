"""bench/gpu_check.py's in-process checks on one CUDA GPU (small models, a few steps each):

- ``ddp_world_size_1``: the trainer's compiled DDP wrapper (train/build.py wrap_ddp) in a 1-process NCCL group:
  steps run, gradients are views into DDP's buckets, the loader's batches are pinned, and Dynamo's recompile and
  graph-break counts over the steps;
- ``vocab_bias``: the padded vocabulary's -inf bias through Inductor's Triton kernels: the compiled forward's loss
  (fp32 and bf16 autocast) against an eager fp32 reference on the same weights, and no probability on a padded
  column.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def ddp_world_size_1(data: Path, steps: int = 4) -> dict:
    import torch
    import torch._dynamo
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    from config import PRESETS
    from gpt2stream import distributed as D
    from gpt2stream.config import load_config
    from gpt2stream.train import step as S
    from gpt2stream.train.build import build_parts, wrap_ddp

    dev = torch.device("cuda", 0)
    tmp = Path(tempfile.mkdtemp())
    dist.init_process_group("nccl", init_method=f"file://{tmp / 'pg'}", rank=0, world_size=1, device_id=dev)
    try:
        cfg = load_config(["--preset", "tiny", "--data", str(data), "--out-dir", str(tmp / "run"), "--device", "cuda",
                           "--dtype", "bfloat16", "--compile", "--num-workers", "0", "--val-docs", "4",
                           "--eval-tokens", "256", "--batch-size", "4", "--total-batch-size", "1024"], PRESETS)
        info = D.DistInfo(rank=0, local_rank=0, world_size=1, device=dev, backend="nccl")
        parts = build_parts(cfg, info, None)
        wrap_ddp(parts, always=True)
        torch._dynamo.reset()
        counters.clear()
        it = iter(parts.loader)
        pinned, losses, storages, params = [], [], set(), []
        for _ in range(steps):
            batches = [next(it) for _ in parts.loader.micro_sizes]
            pinned += [t.is_pinned() for b in batches for t in b]
            loss_sum = S.accumulate(parts, batches)
            params = [p for p in parts.model.parameters() if p.grad is not None]  # views into DDP's buckets
            storages = {p.grad.untyped_storage().data_ptr() for p in params}
            losses.append(S.read_steps([S.apply_step(parts, loss_sum, 1e-3)], info)[0].loss)
        breaks = sum(counters["graph_break"].values())
        recompiles = int(counters["stats"].get("unique_graphs", 0))
        parts.loader.close()
        fig = {"ok": all(pinned) and len(storages) < len(params) and all(math.isfinite(v) for v in losses),
               "losses": losses, "pinned_batches": all(pinned), "grad_params": len(params),
               "grad_storages": len(storages), "graph_breaks": breaks, "unique_graphs": recompiles}
    finally:
        dist.destroy_process_group()
    return fig


def vocab_bias(seq: int = 256) -> dict:
    import torch

    from gpt2stream.model import GPT, GPTConfig

    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=12, n_embd=768, block_size=seq, vocab_size=50257)).to(dev).eval()
    x = torch.randint(0, 50257, (4, seq), device=dev)
    y = torch.randint(0, 50257, (4, seq), device=dev)
    prec = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference and the fp32 comparison in true fp32
    try:
        with torch.no_grad():
            ref = model(x, y)[1].float().item()
            compiled = torch.compile(model)
            fp32 = compiled(x, y)[1].float().item()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf16 = compiled(x, y)[1].float().item()
                logits = compiled(x)[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prec
    padded = model.config.padded_vocab_size
    fig = {"loss_eager_fp32": ref, "loss_compiled_fp32": fp32, "loss_compiled_bf16": bf16,
           "diff_fp32": abs(fp32 - ref), "diff_bf16": abs(bf16 - ref), "logit_columns": int(logits.shape[-1]),
           "padded_vocab": padded}
    fig["ok"] = fig["diff_fp32"] < 1e-3 and fig["diff_bf16"] < 5e-2 and fig["logit_columns"] == 50257
    return fig


def datasets_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("datasets") is not None


if __name__ == "__main__":
    print(json.dumps({"datasets": datasets_importable(), "cwd": os.getcwd()}))
