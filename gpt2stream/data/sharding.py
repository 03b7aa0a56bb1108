"""Which units each reader gets: pure arithmetic, no I/O.

A *reader* is one (rank, DataLoader worker) pair; there are ``world_size * readers_per_rank(num_workers)`` of
them. Every epoch the unit order is shuffled with a generator seeded by (seed, epoch) -- identical on every reader --
and reader ``r`` takes every R-th unit of that order starting at ``r``. So in each epoch the readers' parts are
disjoint and together hold every unit exactly once, and no reader reads a unit it does not use.

>>> reader_units(epoch_order(5, seed=0, epoch=0, shuffle=False), reader=1, num_readers=2)
[1, 3]
"""

from __future__ import annotations

from numpy.random import default_rng  # by name: see shuffle.py

from gpt2stream.errors import UserError

_ORDER_SALT = 0x5EED0  # keeps the unit-order stream apart from the document-shuffle stream


def readers_per_rank(num_workers: int) -> int:
    """The readers of one rank: one per DataLoader worker; num_workers=0 means the rank reads in its own process,
    still one reader.

    >>> readers_per_rank(0), readers_per_rank(3)
    (1, 3)
    """
    return max(1, num_workers)


def num_readers(world_size: int, num_workers: int) -> int:
    return world_size * readers_per_rank(num_workers)


def reader_index(rank: int, worker: int, num_workers: int) -> int:
    return rank * readers_per_rank(num_workers) + worker


def epoch_order(num_units: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order in which the units are dealt out in this epoch (same for every reader)."""
    if not shuffle:
        return list(range(num_units))
    rng = default_rng([_ORDER_SALT, seed, epoch])
    return rng.permutation(num_units).tolist()


def reader_units(order: list[int], reader: int, num_readers: int) -> list[int]:
    """Reader ``reader``'s units for the epoch: every num_readers-th entry of ``order``."""
    if not 0 <= reader < num_readers:
        raise ValueError(f"reader must be in [0, {num_readers}), got {reader}")
    return order[reader::num_readers]


def check_enough_units(num_units: int, readers: int, what: str = "units") -> None:
    """Every reader needs at least one unit, else it would wait forever for data."""
    if num_units < readers:
        raise UserError(
            f"the training data has {num_units} {what} but there are {readers} readers (world size x "
            f"DataLoader workers); use fewer --num-workers or more / larger data files"
        )
