"""The epoch-seeded document shuffle.

A reader's documents for an epoch form one stream (its units in epoch order). The stream is cut into consecutive
windows of ``shuffle_buffer`` documents; each window is filled, then emitted in a random order drawn from
(seed, epoch, reader, window). This is a shuffle buffer that drains completely before refilling, chosen because its
state is a stream position (where the window starts, how many of it were emitted), not a copy of the buffered texts:
checkpoints stay tiny and a resume re-reads at most one window.
"""

from __future__ import annotations

import numpy as np

_DOC_SALT = 0xD0C5
NO_SHUFFLE_WINDOW = 256  # documents tokenized together when shuffling is off


def window_size(shuffle_buffer: int) -> int:
    return shuffle_buffer if shuffle_buffer > 1 else NO_SHUFFLE_WINDOW


def window_order(n: int, shuffle_buffer: int, seed: int, epoch: int, reader: int, window: int) -> list[int]:
    """The order in which the ``n`` documents of a window are emitted.

    >>> window_order(4, shuffle_buffer=0, seed=1, epoch=0, reader=0, window=0)
    [0, 1, 2, 3]
    """
    if shuffle_buffer <= 1:
        return list(range(n))
    rng = np.random.default_rng([_DOC_SALT, seed, epoch, reader, window])
    return rng.permutation(n).tolist()
