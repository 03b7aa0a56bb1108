"""The gradient all-reduce against the backward pass, from a written-down model (no measurement): docs/gpu.md.

Assumptions (change them with the constants below):
- every GPU's all-reduce traffic crosses a 400 Gb/s (50 GB/s) link: the inter-node case (inside one NVLink node
  the bandwidth is ~9x higher);
- ring all-reduce: 2(n-1)/n x bytes / bandwidth, plus 2(n-1) hops of 5 us latency (NCCL's trees cut the latency
  term to ~2 log2(n) hops; the bandwidth term is the same);
- backward = 2/3 of the training FLOPs (4N per token, attention left out) at 400 TFLOP/s achieved (~40% of an
  H100's 989 dense bf16);
- the presets' global batch (124M: 2**19 tokens, micro-batch 16; xl: 2**20 tokens, micro-batch 8; 1024-token
  sequences), split evenly: each GPU runs ceil(tokens per GPU / micro-batch tokens) micro-steps, and DDP all-reduces
  during the LAST micro-step's backward only (the others run under no_sync), so only that backward can hide it.

    python bench/cost_model.py
"""

from __future__ import annotations

import math

LINK_BYTES_S = 400e9 / 8
HOP_S = 5e-6
FLOPS = 400e12
MODELS = {"124M": (124_475_904, 2**19, 16), "xl": (1_557_611_200 + 47 * 1600, 2**20, 8)}  # padded vocab 50304
T = 1024


def allreduce_s(n: int, nbytes: float) -> float:
    return 2 * (n - 1) / n * nbytes / LINK_BYTES_S + 2 * (n - 1) * HOP_S


def row(name: str, n: int) -> str:
    params, batch, micro = MODELS[name]
    per_gpu = batch // n
    last_tokens = min(per_gpu, micro * T)
    steps = math.ceil(per_gpu / (micro * T))
    backward = 4 * params * last_tokens / FLOPS
    compute = 6 * params * per_gpu / FLOPS
    fp32, bf16 = allreduce_s(n, 4 * params), allreduce_s(n, 2 * params)
    exposed = [max(0.0, a - backward) for a in (fp32, bf16)]
    return (f"| {name} | {n} | {per_gpu:,} ({steps}) | {compute * 1e3:,.0f} | {backward * 1e3:.1f} | "
            f"{fp32 * 1e3:.1f} / {bf16 * 1e3:.1f} | {exposed[0] * 1e3:.0f} / {exposed[1] * 1e3:.0f} | "
            f"{exposed[0] / compute:.0%} / {exposed[1] / compute:.0%} |")


def main() -> None:
    print("| model | GPUs | tokens per GPU (micro-steps) | step compute ms | last backward ms | all-reduce ms fp32 / "
          "bf16 | exposed ms fp32 / bf16 | exposed / compute |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in MODELS:
        for n in (8, 64, 512):
            print(row(name, n))


if __name__ == "__main__":
    main()
