"""New tokens per second with the KV cache against recomputing the whole context at every step.

    python bench/bench_kvcache.py                    # GPT-2 small shape (124M, random init), 512 new tokens
    python bench/bench_kvcache.py --new-tokens 128   # quicker (512 takes minutes: the uncached run dominates)

Both runs generate greedily from the same prompt with the same model through generate.generate_stream, so they must
produce the same tokens (checked). The cached run is timed before and after the uncached one and the mean is used,
so a change in machine load during the (long) uncached run biases the ratio less. Prints the ratio; target >= 5x.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2stream.config import ModelConfig  # noqa: E402
from gpt2stream.generate import generate_stream  # noqa: E402
from gpt2stream.model import GPT  # noqa: E402


def timed_generate(model: GPT, idx: torch.Tensor, new_tokens: int, use_cache: bool) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = [int(t) for t in generate_stream(model, idx, new_tokens, temperature=0.0, use_cache=use_cache)]
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    # GPT-2 small: 12 layers, 12 heads, width 768, context 1024
    model = GPT(ModelConfig(vocab_size=50257)).to(args.device).eval()
    idx = torch.randint(0, 50257, (1, args.prompt_tokens), device=args.device)
    print(f"GPT-2 small shape ({model.num_params() / 1e6:.0f}M params), prompt {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, greedy, {args.device}, {torch.get_num_threads()} threads", flush=True)
    timed_generate(model, idx, 8, True)  # warm-up: allocator, kernels
    c1, out_c = timed_generate(model, idx, args.new_tokens, True)
    print(f"  with KV cache:    {args.new_tokens / c1:8.2f} tok/s  ({c1:.1f} s)", flush=True)
    u, out_u = timed_generate(model, idx, args.new_tokens, False)
    print(f"  without cache:    {args.new_tokens / u:8.2f} tok/s  ({u:.1f} s)", flush=True)
    c2, _ = timed_generate(model, idx, args.new_tokens, True)
    print(f"  with KV cache:    {args.new_tokens / c2:8.2f} tok/s  ({c2:.1f} s, again)", flush=True)
    if out_c != out_u:
        raise SystemExit("error: cached and uncached greedy outputs differ")
    ratio = u / ((c1 + c2) / 2)
    print(f"speed-up from the KV cache: {ratio:.1f}x (target >= 5x); outputs identical", flush=True)


if __name__ == "__main__":
    main()
