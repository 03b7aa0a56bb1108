"""One optimizer step: ``train_step(parts, batches, lr) -> StepStats`` (in-process, no subprocess needed to test it).

Gradient accumulation over the micro-batches, DDP's all-reduce on the last one only, the loss averaged over ranks,
the gradient norm clipped; the optimizer steps only when both the loss and the norm are finite.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from gpt2stream import distributed as D
from gpt2stream.optim import set_lr
from gpt2stream.precision import autocast
from gpt2stream.train.build import Parts
from gpt2stream.train.timing import NO_TIMER, StepTimer


@dataclass(frozen=True)
class StepStats:
    loss: float  # mean training loss over the step's micro-batches and all ranks
    grad_norm: float  # global gradient norm before clipping
    lr: float
    applied: bool  # False: the loss or the norm was not finite and the optimizer did not step

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)




def micro_scale(parts: Parts, rows: int) -> tuple[int, int]:
    """(num, den) multiplying a micro-batch's mean loss of ``rows`` blocks: weighted by its tokens, so that summed
    over every rank's micro-steps and averaged over the ranks it is the mean over the step's blocks (see
    data.streams.loss_scale)."""
    from gpt2stream.data.streams import loss_scale

    return loss_scale(rows, parts.info.world_size, parts.loader.blocks)


def accumulate(parts: Parts, batches: list) -> torch.Tensor:
    """Forward and backward over the micro-batches; returns this rank's share of the step's mean loss (a 0-d tensor,
    not synced). Every rank runs ``parts.accum`` micro-steps (DDP needs the same number of backward passes): a rank
    with fewer blocks repeats its first micro-batch with weight 0."""
    info, n = parts.info, max(parts.accum, len(batches))
    loss_sum = torch.zeros((), device=info.device)
    for micro in range(n):
        x, y = batches[micro] if micro < len(batches) else batches[0]
        num, den = micro_scale(parts, x.shape[0]) if micro < len(batches) else (0, 1)
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        # DDP averages gradients across ranks in backward; do it once, on the last micro-step
        last = micro == n - 1
        sync = contextlib.nullcontext() if (last or not info.ddp) else parts.ddp_model.no_sync()
        with sync:
            with autocast(parts.amp, info.device_type):
                _, loss = parts.ddp_model(x, y)
            loss = loss / den if num == 1 else loss * num / den  # the plain division keeps even layouts' bits
            loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_step(parts: Parts, batches: list, lr: float, timer: StepTimer | None = None) -> StepStats:
    """One optimizer step over ``batches`` (the micro-batches) at the schedule's learning rate ``lr`` (each parameter
    group at its own multiple of it). Collective under DDP. ``timer`` is marked after each phase
    (timing.DEVICE_PHASES); it adds no host sync."""
    info, timer = parts.info, timer or NO_TIMER
    set_lr(parts.optimizer, lr, parts.cfg.train.lr)  # every parameter group scaled alike
    timer.start()
    loss_sum = accumulate(parts, batches)
    timer.mark("compute_ms")
    D.all_reduce_sum(loss_sum, info)
    timer.mark("sync_ms")
    clip = parts.cfg.train.grad_clip if parts.cfg.train.grad_clip > 0 else math.inf
    norm_t = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip)
    loss_sum_f, norm = torch.stack([loss_sum, norm_t.to(loss_sum.dtype)]).tolist()  # one host sync for both
    loss = loss_sum_f / info.world_size
    applied = math.isfinite(loss) and math.isfinite(norm)
    if applied:
        parts.optimizer.step()
    # under DDP the gradients are views into its buckets (gradient_as_bucket_view): zero them in place, since new
    # gradients (set_to_none) would be allocated by the no_sync micro-steps and copied into the buckets after
    parts.optimizer.zero_grad(set_to_none=not info.ddp)
    timer.mark("optim_ms")
    if info.device_type == "cuda":
        torch.cuda.synchronize()
    return StepStats(loss=loss, grad_norm=norm, lr=lr, applied=applied)
