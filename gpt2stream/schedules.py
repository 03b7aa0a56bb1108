"""Learning-rate schedules behind one interface: ``lr_at(step)``, ``observe(val_loss)``, ``state_dict()`` and
``load_state_dict()``. ``cosine_lr`` is also a pure function; ``make_schedule`` builds the configured one.

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

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "bad": self.bad, "cooldown_left": self.cooldown_left,
                "recent": list(self.recent), "cuts": self.cuts}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.lr, self.best, self.bad = float(sd["lr"]), float(sd["best"]), int(sd["bad"])
        self.cooldown_left, self.recent, self.cuts = int(sd["cooldown_left"]), [float(v) for v in sd["recent"]], \
            int(sd["cuts"])


class CosineSchedule:
    """``cosine_lr`` as an ``LRSchedule``: a function of the step alone, so its saved state is empty."""

    def __init__(self, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> None:
        self.max_lr, self.min_lr, self.warmup_steps, self.max_steps = max_lr, min_lr, warmup_steps, max_steps

    def lr_at(self, step: int) -> float:
        return cosine_lr(step, self.max_lr, self.min_lr, self.warmup_steps, self.max_steps)

    def observe(self, val_loss: float) -> float:
        return self.min_lr

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


def make_schedule(t: TrainConfig) -> LRSchedule:
    """The schedule a ``TrainConfig`` asks for (``t.schedule``: "cosine" or "plateau")."""
    if t.schedule == "plateau":
        return PlateauSchedule(t.lr, t.min_lr, t.plateau_factor, t.plateau_patience, t.plateau_threshold,
                               t.plateau_cooldown, t.plateau_window, t.warmup_steps)
    return CosineSchedule(t.lr, t.min_lr, t.warmup_steps, t.max_steps)
