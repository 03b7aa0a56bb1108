"""One optimizer step: ``train_step(parts, batches, lr) -> StepStats`` (in-process, no subprocess needed to test it).

Gradient accumulation over the micro-batches, DDP's all-reduce on the last one only, the gradient norm clipped; the
optimizer steps only when both the loss and the norm are finite. Nothing here waits for the device: the loss and the
norm stay on it (``PendingStep``) until the loop reads a batch of them (``read_steps``: one all-reduce of the losses
and one host read every --log-every steps). A non-finite step is skipped on the device: every rank's non-finite loss
turns its gradients to NaN, the all-reduced norm is then NaN on every rank, and the fused AdamW takes it as
``found_inf`` (the mechanism torch's GradScaler uses) and leaves weights and moments untouched.
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


@dataclass(frozen=True)
class PendingStep:
    """A step whose figures are still on the device: this rank's share of the loss and the global norm."""

    loss_sum: torch.Tensor  # 0-d, this rank's share of the step's mean loss (not yet reduced over ranks)
    norm: torch.Tensor  # 0-d, the global gradient norm (gradients are all-reduced: the same on every rank)
    lr: float


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` honours ``found_inf`` on the device: torch's fused Adam/AdamW do."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and all(
        g.get("fused") for g in optimizer.param_groups)


def micro_scale(parts: Parts, rows: int) -> tuple[int, int]:
    """(num, den) multiplying a micro-batch's mean loss of ``rows`` blocks: weighted by its tokens, so that summed
    over every rank's micro-steps and averaged over the ranks it is the mean over the step's blocks (see
    data.streams.loss_scale)."""
    from gpt2stream.data.streams import loss_scale

    return loss_scale(rows, parts.info.world_size, parts.loader.blocks)


def dummy_batch(parts: Parts) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch of zeros in the training shape: what a rank without data runs (with weight 0) so that the
    other ranks' gradient all-reduces have a partner while the step's agreement is in flight."""
    x = torch.zeros(parts.cfg.train.batch_size, parts.cfg.data.seq_len, dtype=torch.long)
    return x, x


def accumulate(parts: Parts, batches: list) -> torch.Tensor:
    """Forward and backward over the micro-batches; returns this rank's share of the step's mean loss (a 0-d tensor,
    not synced). Every rank runs ``parts.accum`` micro-steps (DDP needs the same number of backward passes): a rank
    with fewer blocks repeats its first micro-batch with weight 0 (no batches at all: zeros, weight 0)."""
    info, n = parts.info, max(parts.accum, len(batches))
    loss_sum = torch.zeros((), device=info.device)
    first = batches[0] if batches else dummy_batch(parts)
    for micro in range(n):
        x, y = batches[micro] if micro < len(batches) else first
        num, den = micro_scale(parts, x.shape[0]) if micro < len(batches) else (0, 1)
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        # DDP averages gradients across ranks in backward; do it once, on the last micro-step
        last = micro == n - 1
        sync = contextlib.nullcontext() if (last or not info.ddp) else parts.ddp_model.no_sync()
        with sync:
            with autocast(parts.amp, info.device_type):
                _, loss = parts.ddp_model(x, y)
            loss = loss / den if num == 1 else loss * num / den  # the plain division keeps even layouts' bits
            if last:  # x 1.0, or NaN if any micro-step's loss was not finite: the norm then says so on every rank
                loss = loss * torch.where(torch.isfinite(loss_sum + loss.detach()), 1.0, math.nan)
            loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def zero_grad(parts: Parts) -> None:
    # under DDP the gradients are views into its buckets (gradient_as_bucket_view): zero them in place, since new
    # gradients (set_to_none) would be allocated by the no_sync micro-steps and copied into the buckets after
    wrapped = parts.ddp_model is not parts.fwd_model  # train/build.py wrap_ddp
    parts.optimizer.zero_grad(set_to_none=not wrapped)


def apply_step(parts: Parts, loss_sum: torch.Tensor, lr: float) -> PendingStep:
    """Clip and step the optimizer after ``accumulate``; the step is skipped when the norm is not finite. No host
    synchronisation with a fused Adam/AdamW (one read of the norm otherwise)."""
    set_lr(parts.optimizer, lr, parts.cfg.train.lr)  # every parameter group scaled alike
    clip = parts.cfg.train.grad_clip if parts.cfg.train.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip)
    if skips_on_device(parts.optimizer):
        parts.optimizer.found_inf = (~torch.isfinite(norm)).float()
        parts.optimizer.step()
    elif math.isfinite(norm.item()):
        parts.optimizer.step()
    zero_grad(parts)
    return PendingStep(loss_sum=loss_sum, norm=norm.detach(), lr=lr)


def train_step(parts: Parts, batches: list, lr: float, timer: StepTimer | None = None) -> StepStats:
    """One optimizer step over ``batches`` (the micro-batches) at learning rate ``lr``, read at once (the loop reads
    its steps in batches instead: ``accumulate``, ``apply_step``, ``read_steps``). Collective under DDP.
    ``timer`` is marked after each phase (timing.DEVICE_PHASES)."""
    timer = timer or NO_TIMER
    timer.start()
    loss_sum = accumulate(parts, batches)
    timer.mark("compute_ms")
    timer.mark("sync_ms")
    pending = apply_step(parts, loss_sum, lr)
    timer.mark("optim_ms")
    return read_steps([pending], parts.info)[0]


def read_steps(pending: list[PendingStep], info: D.DistInfo) -> list[StepStats]:
    """The figures of ``pending`` steps: one all-reduce of their losses (collective under DDP) and one host read."""
    if not pending:
        return []
    losses = torch.stack([p.loss_sum for p in pending])
    D.all_reduce_sum(losses, info)
    norms = torch.stack([p.norm.to(losses.dtype) for p in pending])
    sums, norms_f = torch.stack([losses, norms]).tolist()
    return [StepStats(loss=s / info.world_size, grad_norm=n, lr=p.lr, applied=math.isfinite(n))
            for s, n, p in zip(sums, norms_f, pending, strict=True)]
