"""Checks on a mixture's delivered blocks shared by the tests and bench/bench_mixture.py (no pytest, no fixtures)."""

from __future__ import annotations

from collections import Counter


def worst_window_error(sources: list, weights: dict, per_step: int, window: int = 50) -> float:
    """The largest |share - weight| of any source over any ``window`` consecutive steps (``sources``: the source
    of every block in step order)."""
    steps = [sources[i : i + per_step] for i in range(0, len(sources), per_step)]
    worst = 0.0
    for s in range(len(steps) - window + 1):
        counts = Counter(x for st in steps[s : s + window] for x in st)
        worst = max(worst, *(abs(counts[n] / (window * per_step) - w) for n, w in weights.items()))
    return worst
