"""Evaluation during training: the validation loss and bits per byte, the eval tasks (gpt2stream/evals) and the
logged sample."""

from __future__ import annotations

import math

import torch

from gpt2stream import distributed as D
from gpt2stream.data.mixture import entries
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


def val_groups(val: list | dict[str, list]) -> dict[str, list]:
    """``Parts.val`` as {source name: batches}: a mixture's dict as it is, a single source's list as {"": list}."""
    return val if isinstance(val, dict) else {"": val}


def val_tokens(val: list | dict[str, list]) -> int:
    """Tokens in this rank's validation batches (every source's)."""
    return sum(x.numel() for batches in val_groups(val).values() for x, _ in batches)


def _val_sums(parts: Parts, groups: dict[str, list]) -> list[list[float]]:
    """Per group [sum of losses x tokens, tokens, text bytes] over every rank's share (one all-reduce)."""
    info = parts.info
    dtype = reduce_dtype(info.device)
    nbytes = token_bytes(parts.tok, info.device)
    total = torch.zeros(max(len(groups), 1), 3, dtype=dtype, device=info.device)
    parts.fwd_model.eval()
    with torch.no_grad():
        for g, batches in enumerate(groups.values()):
            for x, y in batches:
                x, y = pad_batch(x, y, parts.cfg.train.batch_size)
                x, y = x.to(info.device), y.to(info.device)
                with autocast(parts.amp, info.device_type):
                    _, loss = parts.fwd_model(x, y)
                n = (y != -1).sum()
                total[g, 0] += loss.to(dtype) * n
                total[g, 1] += n
                total[g, 2] += nbytes[y[y != -1]].sum()
    parts.fwd_model.train()
    D.all_reduce_sum(total, info)  # sums, not means: the same figures on any world size
    return total.tolist()


def loss_and_bpb(loss_sum: float, tokens: float, text_bytes: float) -> tuple[float, float] | None:
    """(mean loss per token, bits per byte) of summed figures; None without tokens.

    >>> loss_and_bpb(2 * math.log(2) * 10, 10, 5)
    (1.3862943611198906, 4.0)
    """
    if tokens <= 0:
        return None
    return loss_sum / tokens, loss_sum / math.log(2) / max(text_bytes, 1.0)


def weighted_figures(per_source: dict[str, tuple[float, float]], weights: dict[str, float]) -> dict[str, float]:
    """A mixture's validation record: ``val_loss``/``val_bpb`` = sum of weight x that source's figure, over the
    sources that have a validation set (their weights renormalised to sum 1), then ``val/<name>`` and
    ``val/<name>/bpb`` of each source.

    >>> weighted_figures({"a": (2.0, 1.0), "b": (4.0, 3.0)}, {"a": 0.75, "b": 0.25})
    {'val_loss': 2.5, 'val_bpb': 1.5, 'val/a': 2.0, 'val/a/bpb': 1.0, 'val/b': 4.0, 'val/b/bpb': 3.0}
    """
    total = math.fsum(weights[n] for n in per_source)
    out = {"val_loss": math.fsum(weights[n] * v[0] for n, v in per_source.items()) / total,
           "val_bpb": math.fsum(weights[n] * v[1] for n, v in per_source.items()) / total}
    for name, (loss, bpb) in per_source.items():
        out[f"val/{name}"], out[f"val/{name}/bpb"] = loss, bpb
    return out


def validation(parts: Parts) -> dict[str, float] | None:
    """Over the fixed validation set (every rank's share; collective): ``val_loss``, the mean loss per token, and
    ``val_bpb``, the summed loss in bits over the UTF-8 bytes of the text the targets spell (byte-level BPE tokens
    concatenate to the documents' bytes; each document's closing <|endoftext|> is predicted but is no text), so runs
    with different tokenizers compare on one number (nanochat's evaluate_bpb). Sums are reduced, not means: exact
    under DDP. A mixture (``Parts.val`` a dict by source) reports each source's figures (``val/<name>``,
    ``val/<name>/bpb``) and, as ``val_loss``/``val_bpb``, their total weighted by the mixture's weights (what the
    plateau schedule watches). None without a validation set."""
    groups = val_groups(parts.val)
    sums = _val_sums(parts, groups)
    if not isinstance(parts.val, dict):
        figs = loss_and_bpb(*sums[0])
        return None if figs is None else {"val_loss": figs[0], "val_bpb": figs[1]}
    per_source = {name: f for name, s in zip(groups, sums, strict=False) if (f := loss_and_bpb(*s)) is not None}
    if not per_source:
        return None
    weights = {e.name: e.weight for e in entries(parts.cfg.data)}
    return weighted_figures(per_source, weights)


def val_line(step: int, val: dict[str, float]) -> str:
    """The log line of a validation: the (weighted) totals, then each source's loss and bits per byte.

    >>> val_line(10, {"val_loss": 2.5, "val_bpb": 1.5, "val/a": 2.0, "val/a/bpb": 1.0})
    'step     10 | val loss 2.5000 | val bpb 1.5000 | a 2.0000 (1.0000 bpb)'
    """
    line = f"step {step:>6} | val loss {val['val_loss']:.4f} | val bpb {val['val_bpb']:.4f}"
    names = [k[4:] for k in val if k.startswith("val/") and k.count("/") == 1]  # a name has no '/' (mixture.py)
    return line + "".join(f" | {n} {val[f'val/{n}']:.4f} ({val[f'val/{n}/bpb']:.4f} bpb)" for n in names)


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
