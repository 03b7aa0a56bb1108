"""Generation from a GPT: a key/value cache, next-token sampling (temperature, top-k, top-p) and the token loop.

With the cache each new token costs one position. Once the sequence outgrows the context, each step recomputes the
last block_size tokens (a sliding window), which is exactly what the uncached path does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.nn import functional as F

from gpt2stream.config import ModelConfig
from gpt2stream.model import GPT


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to block_size.

    The buffer takes the dtype of the first keys stored: under autocast that is the autocast dtype (bf16 keys stay
    bf16, so attention reads the cache without a cast), otherwise the model's dtype.
    """

    def __init__(self, config: ModelConfig, batch_size: int, device: torch.device):
        hs = config.n_embd // config.n_head
        self.shape = (config.n_layer, 2, batch_size, config.n_head, config.block_size, hs)
        self.device = device
        self.kv: torch.Tensor | None = None  # (L, 2, B, nh, block_size, hs), allocated on the first update
        self.pos = 0  # number of positions filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at the current position; return everything cached for this layer."""
        if self.kv is None:
            self.kv = torch.empty(self.shape, device=self.device, dtype=k.dtype)
        t0, t1 = self.pos, self.pos + k.size(2)
        self.kv[layer, 0, :, :, t0:t1] = k
        self.kv[layer, 1, :, :, t0:t1] = v
        return self.kv[layer, 0, :, :, :t1], self.kv[layer, 1, :, :, :t1]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row from logits (B, V). temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always survives)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) one step at a time, continuing idx (B, T).

    Stops early when every row has produced ``stop_token``.
    """
    bs = model.config.block_size
    seq = idx
    cache: KVCache | None = None
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        if not use_cache or seq.size(1) > bs:
            cache = None
            logits, _ = model(seq[:, -bs:], last_only=True)
        elif cache is None:
            cache = KVCache(model.config, seq.size(0), idx.device)
            logits, _ = model(seq, cache=cache, last_only=True)
        else:
            logits, _ = model(seq[:, -1:], cache=cache, last_only=True)
        if cache is not None and cache.pos >= bs:
            cache = None  # full: from now on the window slides
        nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B,)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        yield nxt
        if stop_token is not None:
            finished |= nxt == stop_token
            if bool(finished.all()):
                return


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """Return idx extended by up to max_new_tokens sampled tokens (B, T + n); kwargs as for generate_stream."""
    new = list(generate_stream(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx] + [t[:, None] for t in new], dim=1)
