"""Evaluation during training: the validation loss, the eval tasks (gpt2stream/evals) and the logged sample."""

from __future__ import annotations

import torch

from gpt2stream import distributed as D
from gpt2stream.generate import generate_stream
from gpt2stream.precision import autocast, reduce_dtype
from gpt2stream.train.build import Parts


def pad_batch(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ragged last batch filled up to ``batch_size`` rows with ignored targets (-1): every forward has one shape,
    so a compiled model does not recompile for it (on some ranks only)."""
    short = batch_size - x.shape[0]
    if short <= 0:
        return x, y
    return (torch.cat([x, x.new_zeros(short, x.shape[1])]), torch.cat([y, y.new_full((short, y.shape[1]), -1)]))


def val_loss(parts: Parts) -> float | None:
    """Mean loss per token over the fixed validation set (every rank's share; collective). None without one."""
    info = parts.info
    dtype = reduce_dtype(info.device)
    total = torch.zeros(2, dtype=dtype, device=info.device)  # sum of losses x tokens, tokens
    parts.fwd_model.eval()
    with torch.no_grad():
        for x, y in parts.val:
            x, y = pad_batch(x, y, parts.cfg.train.batch_size)
            x, y = x.to(info.device), y.to(info.device)
            with autocast(parts.amp, info.device_type):
                _, loss = parts.fwd_model(x, y)
            n = (y != -1).sum()
            total[0] += loss.to(dtype) * n
            total[1] += n
    parts.fwd_model.train()
    D.all_reduce_sum(total, info)
    return (total[0] / total[1]).item() if total[1] > 0 else None


def run_eval(parts: Parts, name: str, examples: list) -> dict[str, float]:
    """The registered task ``name`` scored on every rank's share of its examples (collective), as
    ``python -m gpt2stream.evals`` scores it."""
    from gpt2stream.evals import get_task

    # the plain module: the examples' varying lengths would make a compiled forward recompile again and again
    return get_task(name).evaluate(parts.model, parts.tok, examples, parts.info, parts.amp)


def sample(parts: Parts, step: int) -> str:
    """A fresh document of ``sample_tokens`` tokens, seeded by the step (rank 0 only)."""
    dev = parts.info.device
    g = torch.Generator(device=dev).manual_seed(parts.cfg.train.seed + step)
    idx = torch.tensor([[parts.tok.eot_id]], device=dev)  # start a fresh document
    parts.model.eval()
    with autocast(parts.amp, parts.info.device_type):
        ids = [int(t) for t in generate_stream(parts.model, idx, parts.cfg.eval.sample_tokens, temperature=1.0,
                                               top_k=50, generator=g)]
    parts.model.train()
    return parts.tok.decode(ids)
