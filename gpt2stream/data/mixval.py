"""Validation per source of a weighted mixture: each source's own held-out documents, packed into its own blocks.

Each source holds out its first ``val_docs`` rows (its MixEntry's, else the run's ``--val-docs``) exactly as a run
of that source alone would (``source.plan(val_docs)``/``read_val``): the training plan of that source excludes the
same rows, so they are never trained on. Each source gets ``num_tokens`` (``--eval-tokens``) of validation blocks
of its own rather than a share of them by weight: every source's loss is then measured as precisely as a
single-source run's, a small source included (validation costs ``len(mixture)`` times a single source's).
Blocks are shared out over ranks as ``val_batches`` does (block j to rank j % world_size), so summed losses reduce
to the same figures on any world size.
"""

from __future__ import annotations

import torch

from gpt2stream.config import DataConfig
from gpt2stream.data.loader import val_batches
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.open import open_mixture
from tokenizer import Tokenizer

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def mixture_val_batches(cfg: DataConfig, batch_size: int, tokenizer: Tokenizer, rank: int = 0, world_size: int = 1,
                        num_tokens: int = 0, source: MixtureSource | None = None) -> dict[str, Batches]:
    """{source name: this rank's share of that source's validation batches}, in the mixture's order. A source with
    ``val_docs`` 0 (or ``num_tokens`` 0) maps to []. ``source``: the job's opened mixture (else opened here)."""
    mix = source if source is not None else open_mixture(cfg)
    return {e.name: val_batches(e.data_cfg(cfg), batch_size=batch_size, tokenizer=tokenizer, rank=rank,
                                world_size=world_size, num_tokens=num_tokens, source=src)
            for e, src in zip(mix.entries, mix.sources, strict=True)}


def has_validation(cfg: DataConfig) -> bool:
    """Whether the run holds out validation documents: ``val_docs`` > 0, for a mixture on at least one source."""
    if cfg.mixture:
        return any(int(d.get("val_docs", 0)) > 0 for d in cfg.mixture)
    return cfg.val_docs > 0
