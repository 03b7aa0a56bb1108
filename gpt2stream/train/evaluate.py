"""Evaluation during training: the validation loss and bits per byte, the eval tasks (gpt2stream/evals) and the
logged sample."""

from __future__ import annotations

import math

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


def token_bytes(tok, device: torch.device) -> torch.Tensor:
    """UTF-8 bytes of every token id's text (0 for special tokens such as <|endoftext|>, which are no text)."""
    lengths = torch.zeros(tok.n_vocab, dtype=torch.int64)
    ranks = tok.mergeable_ranks
    lengths[torch.tensor(list(ranks.values()))] = torch.tensor([len(b) for b in ranks])
    return lengths.to(device)


def validation(parts: Parts) -> dict[str, float] | None:
    """Over the fixed validation set (every rank's share; collective): ``val_loss``, the mean loss per token, and
    ``val_bpb``, the summed loss in bits over the UTF-8 bytes of the text the targets spell (byte-level BPE tokens
    concatenate to the documents' bytes; each document's closing <|endoftext|> is predicted but is no text), so runs
    with different tokenizers compare on one number (nanochat's evaluate_bpb). Sums are reduced, not means: exact
    under DDP. None without a validation set."""
    info = parts.info
    dtype = reduce_dtype(info.device)
    nbytes = token_bytes(parts.tok, info.device)
    total = torch.zeros(3, dtype=dtype, device=info.device)  # sum of losses x tokens, tokens, bytes
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
            total[2] += nbytes[y[y != -1]].sum()
    parts.fwd_model.train()
    D.all_reduce_sum(total, info)
    loss_sum, tokens, text_bytes = total.tolist()
    if tokens <= 0:
        return None
    return {"val_loss": loss_sum / tokens, "val_bpb": loss_sum / math.log(2) / max(text_bytes, 1.0)}


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
