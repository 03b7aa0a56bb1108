"""One canonical stream's blocks, mixed in a block buffer so that a long document does not fill a stretch of steps.

The stream packs its documents (ReaderStream, one block per row) and collects up to ``buffer_blocks`` consecutive
blocks; the buffer is emitted in an order drawn from (seed, stream, buffer index), then refills. A buffer also ends
where the stream's epoch changes, so every block of epoch e is emitted before any block of epoch e+1.

The state after each block is small: the document-stream state where the current buffer starts (ReaderStream's
handful of ints), the buffer's index and how many of its blocks were emitted. A resume re-packs that one buffer
(its documents' windows) and skips what was emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from gpt2stream.data.shuffle import block_order

Docs = list[tuple[int, str]]  # (epoch, id) of the documents whose first token is in a block


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

    def _fill(self, gen: Iterator, carry: tuple | None) -> tuple[list[tuple], tuple | None]:
        """The next buffer of (block, doc state after it, docs), and the first block of the next epoch if the
        buffer ended there (it starts the next buffer)."""
        buf = [carry] if carry is not None else []
        while len(buf) < self.buffer_blocks:
            item = next(gen)
            if buf and item[1]["epoch"] != buf[0][1]["epoch"]:
                return buf, item
            buf.append(item)
        return buf, None

    def blocks(self) -> Generator[tuple[np.ndarray, Docs, dict[str, Any]], None, None]:
        st = self.state
        gen = self.make_reader(st["start"]).batches()
        try:
            carry = None
            while True:
                buf, carry = self._fill(gen, carry)
                order = block_order(len(buf), self.buffer_blocks, self.seed, self.stream, st["buf"])
                end = buf[-1][1]  # where the next buffer starts
                for m in range(st["taken"], len(buf)):
                    block, doc_state, docs = buf[order[m]]
                    st["docs"] += len(docs)
                    st["epoch"], st["skipped"] = doc_state["epoch"], end["skipped"]
                    if m + 1 == len(buf):
                        st.update(start=dict(end), buf=st["buf"] + 1, taken=0)
                    else:
                        st["taken"] = m + 1
                    yield block[0], docs, {**st, "epoch": doc_state["epoch"]}
        finally:
            gen.close()
