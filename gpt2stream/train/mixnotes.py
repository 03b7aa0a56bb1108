"""What the trainer says about a weighted mixture's sources as it goes: each source's epoch in the step records
(``epoch/<name>`` in metrics.jsonl), a line when a source starts a new epoch, and one line when a source reaches its
max_epochs and is dropped (the loader's view: this rank's canonical streams; the log is rank 0's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SourceNotes:
    """Follows the loader's per-source epochs and dropped sources; ``after_step`` logs what changed."""

    def __init__(self, loader: Any, log: Callable[[str], None]) -> None:
        self.loader, self.log = loader, log
        self.mixture: Any = getattr(loader, "mixture", None)
        self.epochs: dict[str, int] = self.source_epochs()
        self.dropped: set[str] = loader.dropped_sources() if self.mixture is not None else set()

    def source_epochs(self) -> dict[str, int]:
        return self.loader.source_epochs() if self.mixture is not None else {}

    def record(self) -> dict[str, int]:
        """The step record's ``epoch/<name>`` keys ({} for one source)."""
        return {f"epoch/{n}": e for n, e in self.source_epochs().items()}

    def after_step(self, step: int) -> None:
        if self.mixture is None:
            return
        now = self.source_epochs()
        for name, e in now.items():
            if e > self.epochs.get(name, 0):
                self.log(f"source {name}: epoch {e} begins (step {step})")
        self.epochs = now
        dropped = self.loader.dropped_sources()
        for name in [n for n in self.mixture.names if n in dropped - self.dropped]:
            self.log(self.drop_line(name, step, dropped))
        self.dropped = dropped

    def drop_line(self, name: str, step: int, dropped: set[str]) -> str:
        entries = {e.name: e for e in self.mixture.entries}
        rest = [n for n in self.mixture.names if n not in dropped]
        total = sum(entries[n].weight for n in rest)
        shares = ", ".join(f"{n} {entries[n].weight / total:.1%}" for n in rest) or "none"
        return (f"source {name} reached its max_epochs {entries[name].max_epochs} at step {step}: dropped from the "
                f"mixture; the other weights are renormalised: {shares}")
