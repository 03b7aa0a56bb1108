"""One canonical stream of a weighted mixture: a sub-stream per source, and the source of every block chosen by a
low-discrepancy sequence over the weights.

Canonical stream ``c`` of ``C`` holds, for each source X, X's own stream: its units of each epoch in the order drawn
from (X's seed, epoch), the stream taking units ``[c::C]`` of it, with its own shuffle window and block buffer (their
sizes scaled by X's weight, so the mixture holds about what one source would). A block packs documents of one source
only, so the blocks' shares are the tokens' shares.

Global block ``n = s*B + i*C + c`` (the stream's block ``b = s*k + i``: ``n = b*C + c``) comes from the source whose
interval of the cumulative weights holds ``u_n = frac(n * phi + offset(seed))`` (a Weyl sequence with the golden
ratio, in 64-bit fixed point so every machine computes the same). Its points fill [0, 1) evenly at every scale, so
every window of steps holds each source's share of blocks to within a few blocks, and the choice depends only on
(seed, step, block, mixture): the same on every layout, DataLoader workers and micro-batch.

Each sub-stream counts its own epochs (a new unit order from (seed, source, epoch) when its units run out). A source
with ``max_epochs`` is dropped from the stream when its next block would be of epoch ``max_epochs``; the remaining
weights are renormalised (the same ``u_n`` picks among them). The state after each block is the stream's block count,
every sub-stream's state and the dropped sources: a resume rebuilds exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from gpt2stream.errors import UserError

PHI64 = 0x9E3779B97F4A7C15  # 2**64 / golden ratio (odd): the Weyl step in 64-bit fixed point
_MASK = (1 << 64) - 1
_OFFSET_SALT = 0x313C5
_SOURCE_SALT = 0x5C5
MIN_WINDOW = 8  # documents: a light source still shuffles among some (its window is otherwise scaled by its weight)

MixDocs = list[tuple[int, str, str]]  # (epoch, id, source name) of the documents whose first token is in a block


def weyl_offset(seed: int) -> int:
    """The sequence's start for a run's seed (a 64-bit integer)."""
    return int(np.random.default_rng([_OFFSET_SALT, seed]).integers(0, 1 << 63)) * 2 + 1


def weyl_point(n: int, offset: int) -> float:
    """u_n = frac(n * phi + offset / 2**64), exact in integers then rounded once.

    >>> weyl_point(0, 0), round(weyl_point(1, 0), 6)
    (0.0, 0.618034)
    """
    return ((n * PHI64 + offset) & _MASK) / float(1 << 64)


def pick(u: float, weights: Sequence[float], dropped: Sequence[bool]) -> int:
    """The source whose interval of the cumulative weights of those not dropped (renormalised) holds ``u``.

    >>> w = [0.5, 0.5]
    >>> pick(0.1, w, [False, False]), pick(0.6, w, [False, False]), pick(0.1, w, [True, False])
    (0, 1, 1)
    """
    active = [x for x, d in enumerate(dropped) if not d]
    total = math.fsum(weights[x] for x in active)
    acc = 0.0
    for x in active:
        acc += weights[x] / total
        if u < acc:
            return x
    return active[-1]  # u within rounding of 1


def source_seed(seed: int, index: int) -> int:
    """The seed of source ``index``'s unit orders, document shuffle and block buffers."""
    return int(np.random.default_rng([_SOURCE_SALT, seed, index]).integers(0, 1 << 31))


def sub_window(window: int, weight: float) -> int:
    """Documents per shuffle window of a source's sub-stream: the stream's window scaled by the source's weight
    (the sub-streams together hold about one window), at least MIN_WINDOW (or the stream's window if smaller).

    >>> sub_window(625, 0.5), sub_window(625, 0.01), sub_window(1, 0.5)
    (313, 8, 1)
    """
    if window <= 1:
        return window
    return max(math.ceil(window * weight), min(window, MIN_WINDOW))


def sub_buffer(buffer_blocks: int, weight: float) -> int:
    """Blocks in a source's block buffer: the stream's scaled by the source's weight (>= 1).

    >>> sub_buffer(64, 0.25), sub_buffer(1, 0.25)
    (16, 1)
    """
    return max(1, round(buffer_blocks * weight))


def fresh_mix_state(sources: int) -> dict[str, Any]:
    return {"blocks": 0, "sources": [None] * sources, "dropped": [False] * sources, "epoch": 0, "docs": 0,
            "skipped": 0}


SubBlocks = Generator[tuple[np.ndarray, list[tuple[int, str]], dict[str, Any]], None, None]


class MixStream:
    """Endless (block, docs, state) of canonical stream ``stream`` of a mixture, resumable from any state it gave.

    ``make_sub(x, state)``: source x's sub-stream (a BufferedStream) from its state (None = fresh)."""

    def __init__(self, make_sub: Callable[[int, dict | None], Any], stream: int, *, streams: int, seed: int,
                 names: Sequence[str], weights: Sequence[float], max_epochs: Sequence[int],
                 state: dict | None = None) -> None:
        self.make_sub = make_sub
        self.stream, self.streams = stream, streams
        self.offset = weyl_offset(seed)
        self.names, self.weights, self.max_epochs = list(names), list(weights), list(max_epochs)
        st = state or fresh_mix_state(len(self.names))
        self.state = {**st, "sources": list(st["sources"]), "dropped": list(st["dropped"])}

    def _next_from(self, x: int, gens: dict[int, SubBlocks]) -> tuple[np.ndarray, list, dict] | None:
        """Source x's next block, or None when it would be of epoch max_epochs (x is then dropped)."""
        if x not in gens:
            gens[x] = self.make_sub(x, self.state["sources"][x]).blocks()
        block, docs, sub = next(gens[x])
        if self.max_epochs[x] and int(sub["epoch"]) >= self.max_epochs[x]:
            gens.pop(x).close()
            self.state["dropped"][x] = True
            return None
        return block, docs, sub

    def _choose(self, gens: dict[int, SubBlocks]) -> tuple[int, np.ndarray, list, dict]:
        st = self.state
        u = weyl_point(st["blocks"] * self.streams + self.stream, self.offset)
        while not all(st["dropped"]):
            x = pick(u, self.weights, st["dropped"])
            got = self._next_from(x, gens)
            if got is not None:
                return (x, *got)
        raise UserError(f"every source of the mixture reached its max_epochs ({self._limits()}) on canonical stream "
                        f"{self.stream}; raise max_epochs or lower --max-steps")

    def _limits(self) -> str:
        return ", ".join(f"{n} {m}" for n, m, in zip(self.names, self.max_epochs, strict=True))

    def blocks(self) -> Generator[tuple[np.ndarray, MixDocs, dict[str, Any], int], None, None]:
        """(block (seq_len+1,), docs, state after it, index of its source), block after block."""
        st = self.state
        gens: dict[int, SubBlocks] = {}
        try:
            while True:
                x, block, docs, sub = self._choose(gens)
                st["sources"][x] = sub
                st["blocks"] += 1
                subs = [s for s in st["sources"] if s]
                st["epoch"] = max(int(s["epoch"]) for s in subs)
                st["docs"], st["skipped"] = sum(int(s["docs"]) for s in subs), sum(int(s["skipped"]) for s in subs)
                name = self.names[x]
                out = {**st, "sources": list(st["sources"]), "dropped": list(st["dropped"])}
                yield block, [(e, d, name) for e, d in docs], out, x
        finally:
            for gen in gens.values():
                gen.close()


def source_epochs(state: dict | None, names: Sequence[str]) -> dict[str, int]:
    """{source name: epoch of its sub-stream} in one canonical stream's mixture state."""
    subs = (state or {}).get("sources") or [None] * len(names)
    return {n: int(s["epoch"]) if s else 0 for n, s in zip(names, subs, strict=True)}


def dropped_sources(state: dict | None, names: Sequence[str]) -> set[str]:
    """The sources a canonical stream's mixture state has dropped (their max_epochs reached)."""
    flags = (state or {}).get("dropped") or [False] * len(names)
    return {n for n, d in zip(names, flags, strict=True) if d}
