"""One canonical stream's blocks, mixed in a block buffer so that a long document does not fill a stretch of steps.

The stream packs its documents (ReaderStream, one block per row) and collects up to ``buffer_blocks`` consecutive
blocks; the buffer is emitted in an order drawn from (seed, stream, buffer index), then refills. A buffer also ends
where the stream's epoch changes, so every block of epoch e is emitted before any block of epoch e+1.

The next buffer is filled while the current one is handed out (a share after each block), not all at once when it
runs out, so the wait for a block stays flat; what is filled, and the order, are the same.

The state after each block is small: the document-stream state where the current buffer starts (ReaderStream's
handful of ints), the buffer's index and how many of its blocks were emitted. A resume re-packs that one buffer
(its documents' windows) and skips what was emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import numpy as np

from gpt2stream.data.shuffle import block_order

Docs = Sequence[tuple[int, str]]  # (epoch, id) of the documents whose first token is in a block


def fresh_stream_state() -> dict[str, Any]:
    return {"start": None, "buf": 0, "taken": 0, "epoch": 0, "docs": 0, "skipped": 0}


class BufferedStream:
    """Endless (block (seq_len+1,), docs, state) of canonical stream ``stream``, resumable from any state it gave."""

    def __init__(self, make_reader: Callable[[dict | None], Any], stream: int, *, seed: int, buffer_blocks: int,
                 state: dict | None = None) -> None:
        self.make_reader = make_reader  # doc-stream state (None = fresh) -> ReaderStream with rows=1
        self.stream = stream
        self.seed = seed
        self.buffer_blocks = max(1, buffer_blocks)
        self.state = dict(state) if state else fresh_stream_state()

    def _fill(self, gen: Iterator, buf: list[tuple], carry: tuple | None, upto: int) -> tuple[bool, tuple | None]:
        """Add blocks of the stream to ``buf`` (which starts with ``carry``, the first block of a new epoch, if
        any) until it holds ``upto`` blocks or the stream's epoch changes. Returns (buffer complete, the block
        that starts the next buffer when the epoch changed)."""
        if carry is not None and not buf:
            buf.append(carry)
        while len(buf) < min(upto, self.buffer_blocks):
            item = next(gen)
            if buf and item[1]["epoch"] != buf[0][1]["epoch"]:
                return True, item
            buf.append(item)
        return len(buf) >= self.buffer_blocks, None

    def blocks(self) -> Generator[tuple[np.ndarray, Docs, dict[str, Any]], None, None]:
        """The blocks, buffer after buffer. The first buffer is filled before the first block; each next one is
        filled a little after every block of the current one is handed out (as many blocks as the buffer holds,
        spread over its emission), so the work per block stays flat instead of a whole buffer's packing and
        tokenizing every ``buffer_blocks`` blocks. The blocks and their order are the same either way."""
        st = self.state
        gen = self.make_reader(st["start"]).batches()
        try:
            cur: list[tuple] = []
            _, carry = self._fill(gen, cur, None, self.buffer_blocks)
            while True:
                n, first = len(cur), st["taken"]
                order = block_order(n, self.buffer_blocks, self.seed, self.stream, st["buf"])
                end = cur[-1][1]  # where the next buffer starts
                nxt: list[tuple] = []
                done = False
                for m in range(first, n):
                    block, doc_state, docs = cur[order[m]]
                    cur[order[m]] = None  # type: ignore[call-overload]  # handed out: not held twice
                    st["docs"] += len(docs)
                    st["epoch"], st["skipped"] = doc_state["epoch"], end["skipped"]
                    if m + 1 == n:
                        st.update(start=dict(end), buf=st["buf"] + 1, taken=0)
                    else:
                        st["taken"] = m + 1
                    yield block[0], docs, {**st, "epoch": doc_state["epoch"]}
                    if not done:  # the next buffer, in proportion to what this one has handed out
                        done, carry = self._fill(gen, nxt, carry, -(-(m + 1 - first) * self.buffer_blocks //
                                                                    (n - first)))
                if not done:
                    _, carry = self._fill(gen, nxt, carry, self.buffer_blocks)
                cur = nxt
        finally:
            gen.close()
