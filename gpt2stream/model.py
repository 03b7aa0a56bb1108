"""GPT-2, exactly: learned positions, pre-LayerNorm blocks, GELU(tanh) MLP, tied LM head, GPT-2's init.

Parameter names follow Hugging Face's GPT2LMHeadModel (``transformer.h.0.attn.c_attn.weight``, ...), so weight
import/export (hf_interop.py) is a rename plus a transpose of the Conv1D weights.

The token embedding is padded to a multiple of ``vocab_multiple`` (50257 -> 50304) because matmuls with a round
dimension are faster on GPUs. The padded rows are never a prediction: logits are cut to the real ``vocab_size``
before any loss, argmax or sampling.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    """Shape of the network. The defaults are GPT-2 small (124M)."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # context length: the number of learned position embeddings
    vocab_size: int = 50257  # real vocabulary; ids >= vocab_size are never predicted
    vocab_multiple: int = 64  # pad the embedding rows to a multiple of this (1 = no padding)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "vocab_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name}={value!r}: must be a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout={self.dropout}: must be in [0, 1)")

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to block_size."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device, dtype: torch.dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, 2, batch_size, config.n_head, config.block_size, hs)
        self.kv = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0  # number of positions filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at the current position; return everything cached for this layer."""
        t0, t1 = self.pos, self.pos + k.size(2)
        self.kv[layer, 0, :, :, t0:t1] = k
        self.kv[layer, 1, :, :, t0:t1] = v
        return self.kv[layer, 0, :, :, :t1], self.kv[layer, 1, :, :, :t1]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_scaled_init = True
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer, k, v)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:  # one new token sees every cached position: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            # query i sits at absolute position past + i and sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_scaled_init = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if getattr(module, "residual_scaled_init", False):
            # each block adds two residual branches; keep the residual stream's variance from growing with depth
            std *= (2 * self.config.n_layer) ** -0.5
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)

    def num_params(self) -> int:
        """Number of distinct parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, vocab_size), mean loss or None).

        targets == -1 is ignored by the loss. With ``last_only`` only the last position's logits are computed
        (generation). With a ``cache`` the positions continue from ``cache.pos`` and the cache advances by T.
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.pos += T
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = self.lm_head(x)[..., : self.config.vocab_size]  # drop the padding columns
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ---- generation -------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_stream(
        self,
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

        With the KV cache each step costs one position. Once the sequence outgrows the context, each step
        recomputes the last block_size tokens (a sliding window), which is exactly what the uncached path does.
        Stops early when every row has produced ``stop_token``.
        """
        bs = self.config.block_size
        param = next(self.parameters())
        seq = idx
        cache: KVCache | None = None
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if not use_cache or seq.size(1) > bs:
                cache = None
                logits, _ = self(seq[:, -bs:], last_only=True)
            elif cache is None:
                cache = KVCache(self.config, seq.size(0), param.device, param.dtype)
                logits, _ = self(seq, cache=cache, last_only=True)
            else:
                logits, _ = self(seq[:, -1:], cache=cache, last_only=True)
            if cache is not None and cache.pos >= bs:
                cache = None  # full: from now on the window slides
            nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B,)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            yield nxt
            if stop_token is not None:
                finished |= nxt == stop_token
                if bool(finished.all()):
                    return

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Return idx extended by up to max_new_tokens sampled tokens (B, T + n)."""
        new = list(self.generate_stream(idx, max_new_tokens, **kwargs))
        return torch.cat([idx] + [t[:, None] for t in new], dim=1)

    # ---- training helpers -------------------------------------------------------------------------------

    def configure_optimizers(
        self, weight_decay: float, lr: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        """AdamW where 2-D weights (matmuls, embeddings) decay and biases and LayerNorm gains don't."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # the fused kernel updates every tensor in one pass; torch has it for CUDA and CPU (faster on both)
        fused = device_type in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, **({"fused": True} if fused else {}))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6N for the matmuls plus attention's 12·L·C·T (PaLM)."""
        c = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_embd * seq_len

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak FLOP/s."""
        return self.flops_per_token(seq_len or self.config.block_size) * tokens_per_second / peak_flops

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **overrides) -> GPT:
        """GPT-2 weights in the Hugging Face layout, from a local directory or a Hub repo id (e.g. "gpt2")."""
        from gpt2stream.hf_interop import load_hf_gpt2  # keeps huggingface_hub out of plain model imports

        return load_hf_gpt2(name_or_dir, **overrides)


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
