"""Canonical streams and who computes which block of a step: pure arithmetic, no I/O.

A run has ``C`` canonical streams, fixed when it starts and saved with it. Canonical stream ``c`` reads the units
``epoch_order[c::C]`` of every epoch (sharding.py), packs its own documents into blocks of seq_len+1 tokens and
mixes them in its block buffer. Optimizer step ``s`` trains ``B = total_batch_size / seq_len`` blocks: ``k = B / C``
from every stream (its blocks ``s*k .. s*k+k-1``). Step block ``j = i*C + c`` is stream c's i-th block of the step.
None of this depends on the world size, the DataLoader workers or the micro-batch: they only decide who computes a
block. Rank ``r`` computes the streams ``c % world == r``; its DataLoader workers share those out the same way.

>>> rank_streams(streams=8, world=3, rank=1)
[1, 4, 7]
>>> worker_streams([1, 4, 7], num_workers=2)
[[1, 7], [4]]
"""

from __future__ import annotations

import math

from gpt2stream.data.sharding import readers_per_rank
from gpt2stream.errors import UserError

# The default C: as many streams as the step has blocks (k = 1), up to this many, so a run can later grow to that
# many processes. A stream is cheap (shared read thread, open files and tokenizer pool per reader, its share of the
# buffers; a rank with many streams keeps their partly read units on local disk: unitspill.py).
MAX_AUTO_STREAMS = 512
# The readers the cut of jsonl/txt files into pieces is planned for (sources' plan()): the value it has always had
# for automatic streams, so a saved run re-plans the same units. Pieces are then ~1/128 of the data (4 KiB..4 MiB).
PLAN_READERS = 16


def blocks_per_step(total_batch_size: int, seq_len: int) -> int:
    if total_batch_size % seq_len:
        raise UserError(f"--total-batch-size {total_batch_size} is not a multiple of --seq-len {seq_len}; "
                        f"use a multiple of {seq_len}")
    return total_batch_size // seq_len


def default_streams(blocks: int, units: int | None = None) -> int:
    """The largest divisor of ``blocks`` that is <= MAX_AUTO_STREAMS and <= the data's ``units`` (a stream needs
    at least one unit): the most processes the run can ever use.

    >>> default_streams(16), default_streams(512), default_streams(1024), default_streams(7), default_streams(16, 3)
    (16, 512, 512, 7, 2)
    """
    top = min(blocks, MAX_AUTO_STREAMS, units if units is not None else blocks)
    return max(d for d in range(1, max(1, top) + 1) if blocks % d == 0)


def check_streams(streams: int, blocks: int, world: int) -> int:
    """Blocks per stream per step (k); UserError naming the numbers when the layout cannot work."""
    if streams < 1 or blocks % streams:
        raise UserError(f"--streams {streams} must divide the {blocks} blocks of a step (--total-batch-size / "
                        f"--seq-len); use a divisor of {blocks}, e.g. {default_streams(blocks)}")
    if world > streams:
        raise UserError(f"{world} processes but the run has {streams} canonical streams (fixed when it started), "
                        f"each process needs at least one; use at most {streams} processes, or start a new run "
                        f"with --streams N >= {world} (a divisor of its {blocks} blocks per step)")
    return blocks // streams


def rank_streams(streams: int, world: int, rank: int) -> list[int]:
    """The streams rank ``rank`` computes."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    return list(range(rank, streams, world))


def worker_streams(mine: list[int], num_workers: int) -> list[list[int]]:
    """How a rank's streams are shared out among its readers: one list per reader (num_workers=0: one reader,
    the process itself). Never more readers than streams."""
    readers = readers_per_rank(effective_workers(num_workers, mine))
    return [mine[w::readers] for w in range(readers)]


def effective_workers(num_workers: int, mine: list[int]) -> int:
    """DataLoader worker processes actually started: a worker without a stream would have nothing to read."""
    return 0 if num_workers == 0 else min(num_workers, len(mine))


def step_order(mine: list[int], streams: int, k: int) -> list[tuple[int, int]]:
    """(i, c) of this rank's blocks of a step, in the global step order j = i*C + c."""
    return sorted(((i, c) for c in mine for i in range(k)), key=lambda ic: ic[0] * streams + ic[1])


def micro_sizes(n_blocks: int, batch_size: int) -> list[int]:
    """Rows of each micro-batch of a rank's ``n_blocks`` blocks: full ones, then the remainder.

    >>> micro_sizes(10, 4)
    [4, 4, 2]
    """
    return [min(batch_size, n_blocks - a) for a in range(0, n_blocks, batch_size)]


def accum_steps(streams: int, k: int, world: int, batch_size: int) -> int:
    """Micro-steps every rank runs per optimizer step: those of the busiest rank (rank 0, which has
    ceil(C / world) streams); ranks with fewer blocks fill up with micro-steps of weight 0."""
    return math.ceil(k * math.ceil(streams / world) / batch_size)


def loss_scale(rows: int, world: int, blocks: int) -> tuple[int, int]:
    """(num, den): a micro-batch's mean loss times num/den, summed over every micro-batch of every rank and then
    averaged over the ranks (as DDP averages gradients), is the mean over the step's tokens: num/den =
    rows x world / blocks. With an even layout this is 1/accum.

    >>> loss_scale(4, 2, 16), loss_scale(2, 3, 12)
    ((1, 2), (1, 2))
    """
    num, den = rows * world, blocks
    g = math.gcd(num, den)
    return num // g, den // g
