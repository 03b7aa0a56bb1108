"""The epoch-seeded document shuffle.

A reader's documents for an epoch form one stream (its units in epoch order). The stream is cut into consecutive
windows of ``shuffle_buffer`` documents; each window is filled, then emitted in a random order drawn from
(seed, epoch, reader, window). This is a shuffle buffer that drains completely before refilling, chosen because its
state is a stream position (where the window starts, how many of it were emitted), not a copy of the buffered texts:
checkpoints stay tiny and a resume re-reads at most one window.
"""

from __future__ import annotations

# numpy.random by name, not reached lazily through np.random: a DataLoader worker forked from a process that
# never touched it imports it itself, 0.2-0.4 s before its first batch (measured, issue #23)
from numpy.random import default_rng

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
    rng = default_rng([_DOC_SALT, seed, epoch, reader, window])
    return rng.permutation(n).tolist()


_BLOCK_SALT = 0xB10C


def stream_window(shuffle_buffer: int, streams: int) -> int:
    """Documents per shuffle window of one canonical stream: --shuffle-buffer is shared out among the streams
    (1 = no document shuffle).

    >>> stream_window(10000, 16), stream_window(1, 16)
    (625, 1)
    """
    return -(-shuffle_buffer // streams) if shuffle_buffer > 1 else 1


def stream_block_buffer(block_buffer: int, streams: int) -> int:
    """Blocks in one canonical stream's block buffer: --block-buffer shared out among the streams (>= 1)."""
    return max(1, block_buffer // streams)


def block_order(n: int, buffer_blocks: int, seed: int, stream: int, buffer: int) -> list[int]:
    """The order in which the ``n`` packed blocks of one block buffer of a stream are emitted.

    >>> block_order(3, buffer_blocks=1, seed=0, stream=0, buffer=0)
    [0, 1, 2]
    """
    if buffer_blocks <= 1:
        return list(range(n))
    rng = default_rng([_BLOCK_SALT, seed, stream, buffer])
    return rng.permutation(n).tolist()
