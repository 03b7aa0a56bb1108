"""Pack token streams into fixed blocks of T+1 tokens: documents end with <|endoftext|>, leftovers carry over.

Pure: no I/O, no tokenizer. Rows are cut from one continuous stream, so no position is ever padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

TOKEN_DTYPE = np.int32


def doc_tokens(ids: list[int] | np.ndarray, eot: int) -> np.ndarray:
    """A document's ids followed by the end-of-text separator."""
    out = np.empty(len(ids) + 1, dtype=TOKEN_DTYPE)
    out[:-1] = ids
    out[-1] = eot
    return out


class Packer:
    """Accumulates token arrays and cuts (rows, block_len) arrays from the front of the stream.

    ``pending`` is the number of tokens not yet handed out; after a cut they are always a suffix of the most
    recently pushed array (each cut happens as soon as enough tokens are there), which is what makes the resume
    state a (document, token offset) pair.
    """

    def __init__(self, rows: int, block_len: int) -> None:
        if rows < 1 or block_len < 2:
            raise ValueError(f"need rows >= 1 and block_len >= 2, got {rows}, {block_len}")
        self.rows = rows
        self.block_len = block_len
        self.need = rows * block_len
        self._parts: list[np.ndarray] = []  # the pending tokens (fewer than ``need``)
        self.pending = 0

    def push(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        """Add tokens; yield each complete (rows, block_len) array as soon as it exists (``pending`` counts down as
        they are handed out)."""
        total = self.pending + len(tokens)
        if total < self.need:
            self._parts.append(tokens)
            self.pending = total
            return
        # every complete block at once, in one copy (the blocks are views of it): no per-block copy loop
        m, need = total // self.need, self.need
        out = np.empty((m, self.rows, self.block_len), dtype=TOKEN_DTYPE)
        used = m * need - self.pending  # of ``tokens``
        np.concatenate([*self._parts, tokens[:used]], out=out.reshape(-1))
        self._parts.clear()
        if used < len(tokens):
            self._parts.append(tokens[used:])
        for i in range(m):
            self.pending = total - (i + 1) * need
            yield out[i]


def pack_blocks(docs: Iterable[list[int]], eot: int, block_len: int) -> list[list[int]]:
    """Reference packing, one block per row; the trailing partial block is kept back (carried), never padded.

    >>> pack_blocks([[1, 2], [3, 4, 5]], eot=0, block_len=3)
    [[1, 2, 0], [3, 4, 5]]
    """
    p = Packer(1, block_len)
    out: list[list[int]] = []
    for ids in docs:
        out += [b[0].tolist() for b in p.push(doc_tokens(ids, eot))]
    return out
