"""The multiple-choice scorer every task shares, completion-style as the GPT-2 reproductions score HellaSwag.

An example is a context and any number of candidate endings. Every ending is appended to the context (with a
leading space, as GPT-2's tokenizer expects between words) and the model's cross-entropy is taken over the ending's
tokens only:

* ``acc``      -- the prediction is the ending with the lowest *summed* loss (total log-likelihood);
* ``acc_norm`` -- the prediction is the ending with the lowest *mean* loss per ending token (length-normalised).

Example i is scored on rank ``i % world``; the counts are summed over the ranks (gpt2stream/distributed.py), so the
result is the same on every rank. Precision comes from gpt2stream/precision.py. A task is data: ``MultipleChoiceTask``
with a ``load`` function (see hellaswag.py), registered in ``gpt2stream.evals.TASKS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from gpt2stream import distributed as D
from gpt2stream.precision import autocast, reduce_dtype

PAD_MULTIPLE = 32  # rows are padded to a multiple of this: few distinct shapes, so torch.compile recompiles little
Progress = Callable[[int, int, int], None]  # (examples done, correct by acc_norm, correct by acc) on this rank


@dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, ...]
    label: int  # index of the right ending


@dataclass(frozen=True)
class MultipleChoiceTask:
    """A registered task: its name (the metrics' prefix, ``hellaswag_acc_norm``), the name printed in logs, and
    ``load(path, limit)`` -> its examples (``path`` "" = the task's own source, e.g. a cached download)."""

    name: str
    title: str
    load: Callable[[str, int | None], list[Example]] = field(repr=False)

    def evaluate(self, model: Any, tokenizer: Any, examples: Sequence[Example], info: D.DistInfo,
                 amp: torch.dtype | None = None, progress: Progress | None = None) -> dict[str, float]:
        return score(model, tokenizer, examples, info, amp, progress)


def render_example(example: Example, tokenizer: Any, block_size: int,
                   pad_multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, torch.Tensor, int]:
    """-> tokens (E, T), mask (E, T) with 1 on the ending tokens, label; E endings. T is padded (token 0, mask 0).

    A row longer than the context keeps its last block_size tokens (context cut from the left); GPT-2's 1024 never
    needs this on HellaSwag, small models may.
    """
    ctx = tokenizer.encode_ordinary(example.context)
    rows, masks = [], []
    for ending in example.endings:
        end = tokenizer.encode_ordinary(" " + ending)  # the space belongs to the ending, as GPT-2 tokenizes text
        rows.append((ctx + end)[-block_size:])
        masks.append(([0] * len(ctx) + [1] * len(end))[-block_size:])
    longest = max(len(r) for r in rows)
    T = min(block_size, -(-longest // pad_multiple) * pad_multiple)
    tokens = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask, example.label


def ending_losses(model: Any, tokens: torch.Tensor, mask: torch.Tensor,
                  amp: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, mean loss per token) of each row's masked tokens, each predicted from the tokens before it."""
    with torch.no_grad(), autocast(amp, tokens.device.type):
        logits, _ = model(tokens)  # (E, T, V)
    logits = logits[:, :-1, :].float()
    targets = tokens[:, 1:]
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    shift_mask = mask[:, 1:].to(losses.dtype)
    total = (losses.view(tokens.size(0), -1) * shift_mask).sum(dim=1)
    return total, total / shift_mask.sum(dim=1)


def unwrap(model: Any) -> Any:
    """The GPT inside DDP and torch.compile wrappers (for its config)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def local_counts(model: Any, tokenizer: Any, examples: Sequence[Example], rank: int = 0, world: int = 1,
                 device: str | torch.device = "cpu", amp: torch.dtype | None = None,
                 progress: Progress | None = None) -> torch.Tensor:
    """This rank's share, examples i with i % world == rank: [correct by acc, correct by acc_norm, examples,
    sum of 1 / endings] (float64, exact for counts)."""
    block_size = unwrap(model).config.block_size
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64)
    try:
        for i in range(rank, len(examples), world):
            tokens, mask, label = render_example(examples[i], tokenizer, block_size)
            total, mean = ending_losses(model, tokens.to(device), mask.to(device), amp)
            counts += torch.tensor([total.argmin().item() == label, mean.argmin().item() == label, 1,
                                    1 / tokens.size(0)], dtype=torch.float64)
            if progress is not None and int(counts[2]) % 500 == 0:
                progress(int(counts[2]), int(counts[1]), int(counts[0]))
    finally:
        model.train(was_training)
    return counts


def summarize(counts: torch.Tensor) -> dict[str, float]:
    """{"acc", "acc_norm", "n": examples scored, "chance": the accuracy of guessing} from (summed) counts."""
    correct, correct_norm, n, inverse_endings = counts.tolist()
    n = int(round(n))
    return {"acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1), "n": n,
            "chance": inverse_endings / max(n, 1)}


def score(model: Any, tokenizer: Any, examples: Sequence[Example], info: D.DistInfo,
          amp: torch.dtype | None = None, progress: Progress | None = None) -> dict[str, float]:
    """Every rank's share scored and the counts summed over the ranks (collective: every rank calls it); the same
    result on every rank. ``model`` may be the plain GPT or its torch.compile'd form; ``progress`` is called every
    500 examples with this rank's running counts."""
    counts = local_counts(model, tokenizer, examples, info.rank, info.world_size, info.device, amp, progress)
    return summarize(D.all_reduce_sum(counts.to(info.device, reduce_dtype(info.device)), info).cpu())
