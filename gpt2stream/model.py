"""GPT-2, exactly: learned positions, pre-LayerNorm blocks, GELU(tanh) MLP, tied LM head, GPT-2's init.

Parameter names follow Hugging Face's GPT2LMHeadModel (``transformer.h.0.attn.c_attn.weight``, ...), so weight
import/export (hf_interop.py) is a rename plus a transpose of the Conv1D weights. Generation lives in generate.py.

The token embedding is padded to a multiple of ``vocab_multiple`` (50257 -> 50304) because matmuls with a round
dimension are faster on GPUs. The padded columns are never a prediction: the loss is taken over the padded width
with those columns' logits at -inf (an LM-head bias, so the logits are not copied), and logits handed out are a
view of the real ``vocab_size`` columns. The loss (cross_entropy.py) keeps one (B, T, Vp) tensor for backward.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from gpt2stream.config import ModelConfig
from gpt2stream.cross_entropy import cross_entropy


class Cache(Protocol):
    """What attention needs from a key/value cache (generate.KVCache is one)."""

    pos: int  # positions already cached; new tokens continue from here

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...



class ResidualProjection(nn.Linear):
    """A projection back into the residual stream: initialised with std scaled by 1/sqrt(2 * n_layer) (GPT-2)."""

class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = ResidualProjection(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
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
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = ResidualProjection(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class Trunk(nn.Module):
    """Embeddings, blocks and the final norm, under GPT-2's (and Hugging Face's) names: wte, wpe, h.N, ln_f."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)


class GPT(nn.Module):
    def __init__(self, config: ModelConfig, activation_checkpointing: bool = False):
        super().__init__()
        self.config = config
        # recompute each block's activations in backward instead of keeping them: less memory, one more forward
        self.activation_checkpointing = activation_checkpointing
        self.transformer = Trunk(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, ResidualProjection):
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
        cache: Cache | None = None,
        last_only: bool = False,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, vocab_size) or None, mean loss or None).

        Without targets: (logits, None). With targets: (None, loss), so no (B, T, V) tensor outlives the call;
        ``return_logits=True`` gives (logits, loss). targets == -1 is ignored by the loss. With ``last_only`` only
        the last position's logits are computed (generation). With a ``cache`` the positions continue from
        ``cache.pos`` and the cache advances by T.
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        recompute = self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for block in self.transformer.h:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x, cache)  # (B, T, C)
        if cache is not None:
            cache.pos += T
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        V = self.config.vocab_size
        if targets is None:
            return self.lm_head(x)[..., :V], None  # (B, T, V): a view, no copy
        logits = F.linear(x, self.lm_head.weight, self._vocab_bias(x))  # (B, T, Vp), padded columns at -inf
        loss = cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)  # fp32, lean backward
        return (logits[..., :V] if return_logits else None), loss

    def _vocab_bias(self, x: torch.Tensor) -> torch.Tensor | None:
        """0 for the real vocabulary, -inf for the padding columns (None without padding)."""
        V, Vp = self.config.vocab_size, self.config.padded_vocab_size
        if V == Vp:
            return None
        bias = torch.zeros(Vp, device=x.device, dtype=x.dtype)
        bias[V:] = float("-inf")
        return bias

    # ---- training helpers -------------------------------------------------------------------------------

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6N for the matmuls plus attention's 12·L·C·T (PaLM)."""
        c = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_embd * seq_len

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak FLOP/s."""
        return self.flops_per_token(seq_len or self.config.block_size) * tokens_per_second / peak_flops
