"""Learning-rate schedules behind one interface: ``lr_at(step)``, ``observe(val_loss)``, ``state_dict()``,
``load_state_dict()`` and ``resumed_at(step)``. ``cosine_lr`` and ``wsd_lr`` are also pure functions;
``make_schedule`` builds the configured one.

Steps are 0-based optimizer-update indices: ``cosine_lr(0, ...)`` is the lr of the first update.

>>> [round(cosine_lr(s, max_lr=1.0, min_lr=0.1, warmup_steps=2, max_steps=6), 4) for s in range(7)]
[0.5, 1.0, 1.0, 0.8682, 0.55, 0.2318, 0.1]
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any, Protocol

from gpt2stream.config import TrainConfig


class LRSchedule(Protocol):
    """What the trainer asks of a schedule. ``observe`` takes each validation loss (a no-op for cosine)."""

    def lr_at(self, step: int) -> float: ...

    def observe(self, val_loss: float) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, sd: dict[str, Any]) -> None: ...

    def resumed_at(self, step: int) -> str | None: ...


def warmup_lr(step: int, max_lr: float, warmup_steps: int) -> float:
    """Linear warmup: update ``step`` (0-based) gets max_lr * (step + 1) / warmup_steps, so the first lr is not 0."""
    return max_lr * (step + 1) / warmup_steps


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to max_lr, then a half cosine from max_lr (at step == warmup_steps) towards min_lr, which it
    reaches at step == max_steps (nanoGPT's convention); min_lr from there on."""
    if step < warmup_steps:
        return warmup_lr(step, max_lr, warmup_steps)
    if step >= max_steps:
        return min_lr
    ratio = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


class PlateauSchedule:
    """Cut the lr by ``factor`` when validation loss stops improving.

    Each ``observe(val_loss)`` (one per evaluation) judges the median of the last ``window`` losses, so one
    outlier evaluation (a lucky dip that would set an unbeatable best, or a spike) does not decide anything.
    The judged value improves when it is below best * (1 - threshold).
    After ``patience`` evaluations in a row without improvement the lr is multiplied by ``factor`` (never below
    ``min_lr``), then ``cooldown`` evaluations pass in which non-improvement is not counted. Warmup applies first
    (``lr_at``), as for cosine.
    """

    def __init__(self, max_lr: float, min_lr: float, factor: float, patience: int, threshold: float,
                 cooldown: int, window: int, warmup_steps: int = 0) -> None:
        self.max_lr, self.min_lr, self.factor = max_lr, min_lr, factor
        self.patience, self.threshold, self.cooldown, self.window = patience, threshold, cooldown, window
        self.warmup_steps = warmup_steps
        self.lr = max_lr
        self.best = math.inf
        self.bad = 0  # evaluations in a row without improvement
        self.cooldown_left = 0
        self.recent: list[float] = []
        self.cuts = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return min(warmup_lr(step, self.max_lr, self.warmup_steps), self.lr)
        return self.lr

    def observe(self, val_loss: float) -> float:
        """Take one validation loss; return the (possibly cut) lr. Non-finite losses are ignored."""
        if not math.isfinite(val_loss):
            return self.lr
        self.recent = (self.recent + [float(val_loss)])[-self.window:]
        judged = median(self.recent)
        if judged < self.best * (1.0 - self.threshold):
            self.best = judged
            self.bad = 0
        else:
            self.bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad = 0
        if self.bad >= self.patience and self.lr > self.min_lr:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.cooldown_left = self.cooldown
            self.bad = 0
            self.cuts += 1
        return self.lr

    def resumed_at(self, step: int) -> str | None:
        return None  # its state is the lr itself: a new max_steps changes nothing

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "bad": self.bad, "cooldown_left": self.cooldown_left,
                "recent": list(self.recent), "cuts": self.cuts}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.lr, self.best, self.bad = float(sd["lr"]), float(sd["best"]), int(sd["bad"])
        self.cooldown_left, self.recent, self.cuts = int(sd["cooldown_left"]), [float(v) for v in sd["recent"]], \
            int(sd["cuts"])


def wsd_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int, decay_frac: float,
           shape: str = "1-sqrt") -> float:
    """Warmup-stable-decay: linear warmup to max_lr, max_lr until the last ``decay_frac`` of ``max_steps``, then a
    decay to min_lr, which it reaches at step == max_steps; ``shape`` "linear" or "1-sqrt" (Hagele et al. 2024,
    "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations": 1-sqrt cools down best).

    >>> [round(wsd_lr(s, 1.0, 0.0, 1, 10, 0.4, "linear"), 2) for s in range(11)]
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if step < warmup_steps:
        return warmup_lr(step, max_lr, warmup_steps)
    start = decay_start(max_steps, decay_frac, warmup_steps)
    if step < start:
        return max_lr
    return decay_from(step, start, max_lr, min_lr, max_steps, shape)


def decay_start(max_steps: int, decay_frac: float, warmup_steps: int = 0) -> int:
    """The first step of WSD's decay (never inside the warmup).

    >>> decay_start(1000, 0.2)
    800
    """
    return max(warmup_steps, max_steps - round(decay_frac * max_steps))


def decay_from(step: int, start: int, start_lr: float, min_lr: float, end: int, shape: str) -> float:
    """A decay from ``start_lr`` at ``start`` to ``min_lr`` at ``end`` (and after): "cosine", "linear" or
    "1-sqrt". Also how an extended run continues from the lr it was at (``StepSchedule.resumed_at``).

    >>> [round(decay_from(s, 2, 1.0, 0.0, 6, "1-sqrt"), 3) for s in (2, 3, 5, 6)]
    [1.0, 0.5, 0.134, 0.0]
    """
    if step >= end:
        return min_lr
    p = max(0.0, (step - start) / (end - start))  # 0 -> 1 over the decay
    keep = {"cosine": 0.5 * (1.0 + math.cos(math.pi * p)), "linear": 1.0 - p, "1-sqrt": 1.0 - math.sqrt(p)}[shape]
    return min_lr + keep * (start_lr - min_lr)


class StepSchedule:
    """A schedule that is a function of the step and ``max_steps`` (cosine, WSD). Its state is ``max_steps`` and an
    anchor: when ``--resume --max-steps N`` changes the end and the new curve would lift the lr at the resume step,
    the lr instead decays from where it was (the anchor) to min_lr at the new end, so it never jumps upwards."""

    name = "cosine"
    shape = "cosine"  # how an anchored continuation decays

    def __init__(self, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> None:
        self.max_lr, self.min_lr, self.warmup_steps, self.max_steps = max_lr, min_lr, warmup_steps, max_steps
        self.anchor: tuple[int, float] | None = None
        self.saved: dict[str, Any] = {}

    def curve(self, step: int) -> float:
        return cosine_lr(step, self.max_lr, self.min_lr, self.warmup_steps, self.max_steps)

    def lr_at(self, step: int) -> float:
        if self.anchor is not None and step >= self.anchor[0]:
            return decay_from(step, self.anchor[0], self.anchor[1], self.min_lr, self.max_steps, self.shape)
        return self.curve(step)

    def observe(self, val_loss: float) -> float:
        return self.min_lr

    def state_dict(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps, "anchor": list(self.anchor) if self.anchor else None}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.saved = dict(sd)  # judged against this run's max_steps by resumed_at, once the step is known
        anchor = sd.get("anchor")
        self.anchor = (int(anchor[0]), float(anchor[1])) if anchor else None

    def resumed_at(self, step: int) -> str | None:
        """After a restore at ``step``: None when the end is unchanged, else the line saying what the lr does."""
        old_end = self.saved.get("max_steps")
        if old_end is None or old_end == self.max_steps:
            return None
        new_end, self.max_steps = self.max_steps, int(old_end)
        old = self.lr_at(step)  # on the curve the run was on
        self.max_steps = new_end
        new = self.lr_at(step)
        what = f"--schedule {self.name}: max_steps {old_end} -> {new_end}: "
        if new > old * (1 + 1e-9):
            self.anchor = (step, old)
            return what + (f"the new curve would lift the lr from {old:.3e} to {new:.3e} at step {step}; instead it "
                           f"decays ({self.shape}) from {old:.3e} to min_lr {self.min_lr:.3e} at step {new_end}")
        return what + f"the lr at step {step} is {new:.3e} (was {old:.3e}) and follows the new curve" + self.where()

    def where(self) -> str:
        return f" to min_lr at step {self.max_steps}"


class CosineSchedule(StepSchedule):
    """``cosine_lr`` as an ``LRSchedule``."""


class WSDSchedule(StepSchedule):
    """``wsd_lr`` as an ``LRSchedule``: extending a run in its stable phase moves the decay to the new end."""

    name = "wsd"

    def __init__(self, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int, decay_frac: float,
                 shape: str) -> None:
        super().__init__(max_lr, min_lr, warmup_steps, max_steps)
        self.decay_frac, self.shape = decay_frac, shape

    def curve(self, step: int) -> float:
        return wsd_lr(step, self.max_lr, self.min_lr, self.warmup_steps, self.max_steps, self.decay_frac, self.shape)

    def where(self) -> str:
        start = decay_start(self.max_steps, self.decay_frac, self.warmup_steps)
        return f"; the decay now runs over steps {start}-{self.max_steps}"


def make_schedule(t: TrainConfig) -> LRSchedule:
    """The schedule a ``TrainConfig`` asks for (``t.schedule``: "cosine", "wsd" or "plateau")."""
    if t.schedule == "plateau":
        return PlateauSchedule(t.lr, t.min_lr, t.plateau_factor, t.plateau_patience, t.plateau_threshold,
                               t.plateau_cooldown, t.plateau_window, t.warmup_steps)
    if t.schedule == "wsd":
        return WSDSchedule(t.lr, t.min_lr, t.warmup_steps, t.max_steps, t.decay_frac, t.decay_shape)
    return CosineSchedule(t.lr, t.min_lr, t.warmup_steps, t.max_steps)
