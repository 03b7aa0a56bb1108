"""Smooth delivery: a stream's next block buffer is filled a share at a time while the current one is handed out,
so no block waits for a whole buffer's packing; the blocks, their order and every resume state are exactly those
of filling a buffer at once when the last one runs out (the reference below, the algorithm before)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader
from gpt2stream.data.blockbuffer import BufferedStream
from gpt2stream.data.dataset import FIRST_BATCH, batch_spans
from gpt2stream.data.shuffle import block_order


class FakeReader:
    """Blocks 0, 1, 2, ... of a stream whose epochs hold ``per_epoch`` blocks; counts the blocks pulled."""

    pulled = 0

    def __init__(self, per_epoch: list[int], state: dict | None) -> None:
        self.per_epoch = per_epoch
        self.start = state["n"] if state else 0

    def batches(self):
        n = self.start
        while True:
            epoch, left = 0, n
            while left >= self.per_epoch[epoch % len(self.per_epoch)]:
                left -= self.per_epoch[epoch % len(self.per_epoch)]
                epoch += 1
            FakeReader.pulled += 1
            yield np.array([[n]]), {"n": n + 1, "epoch": epoch, "skipped": 0}, [(epoch, f"d{n}")]
            n += 1


def reference(per_epoch: list[int], buffer_blocks: int, count: int) -> list[int]:
    """The order before: fill a whole buffer (cut at an epoch change), emit it permuted, repeat."""
    gen = FakeReader(per_epoch, None).batches()
    out, carry, b = [], None, 0
    while len(out) < count:
        buf = [carry] if carry else []
        carry = None
        while len(buf) < buffer_blocks:
            item = next(gen)
            if buf and item[1]["epoch"] != buf[0][1]["epoch"]:
                carry = item
                break
            buf.append(item)
        out += [int(buf[i][0][0, 0]) for i in block_order(len(buf), buffer_blocks, 3, 1, b)]
        b += 1
    return out[:count]


def stream(per_epoch, buffer_blocks, state=None):
    return BufferedStream(lambda st: FakeReader(per_epoch, st), 1, seed=3, buffer_blocks=buffer_blocks,
                          state=state).blocks()


@pytest.mark.parametrize("per_epoch,buffer_blocks", [([50], 8), ([13, 7, 30], 8), ([5], 16), ([40], 1)])
def test_same_blocks_same_order_and_exact_resume_from_every_block(per_epoch, buffer_blocks):
    count = 100
    ref = reference(per_epoch, buffer_blocks, count)
    gen = stream(per_epoch, buffer_blocks)
    got, states = [], []
    for _ in range(count):
        block, _docs, st = next(gen)
        got.append(int(block[0]))
        states.append(st)
    gen.close()
    assert got == ref
    for cut in range(0, count - 1, 7):
        again = stream(per_epoch, buffer_blocks, states[cut])
        assert [int(next(again)[0][0]) for _ in range(count - cut - 1)] == ref[cut + 1 :], cut
        again.close()


def test_the_next_buffer_fills_a_share_per_block_not_all_at_once():
    gen = stream([10**9], 64)
    FakeReader.pulled = 0
    next(gen)
    assert FakeReader.pulled == 64  # the first buffer is filled before its first block
    pulls = []
    for _ in range(64 * 5):
        before = FakeReader.pulled
        next(gen)
        pulls.append(FakeReader.pulled - before)
    gen.close()
    assert max(pulls) <= 2 and sum(pulls) == 64 * 5  # before: 64 blocks at once every 64th block, else none


class CountingTokenizer:
    """Texts "doc-<n> ..." -> the single token n+1 (eot 0), counting the documents encoded."""

    eot_id = 0
    identity = "test:ids"

    def __init__(self) -> None:
        self.encoded = 0
        self.lock = threading.Lock()

    def encode_ordinary(self, text):
        with self.lock:
            self.encoded += 1
        return [int(text.split()[0][4:]) + 1]

    def encode_ordinary_batch(self, texts, num_threads=8):
        return [self.encode_ordinary(t) for t in texts]


def test_the_next_windows_first_tokenizer_batch_is_ready_before_the_stream_reaches_it(tmp_path):
    """The stall of every window's start: its first tokenizer batch is tokenized with the window's read, while
    the window before is still handed out, and no more than that runs ahead."""
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"doc-{i} words" for i in range(300)], "id": [str(i) for i in range(300)]}),
                   path, row_group_size=300)
    tok = CountingTokenizer()
    window = 100  # batches of window 0: 64 + 36 documents; window 1's first batch: FIRST_BATCH
    cfg = DataConfig(data=str(path), seq_len=1, shuffle_buffer=window, block_buffer=1, num_workers=0, val_docs=0)
    loader = TrainLoader(cfg, batch_size=1, tokenizer=tok, seed=0)
    next(loader)  # one document of window 0 handed out; the consumer stops here
    deadline = time.monotonic() + 20
    while tok.encoded < window + FIRST_BATCH and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert tok.encoded == window + FIRST_BATCH  # before: 100, the next window waited for the consumer
    loader.close()
    assert batch_spans(0, 1000) == [(0, 64), (64, 192), (192, 448), (448, 960), (960, 1000)]
    assert batch_spans(70, 100) == [(70, 100)]  # a resumed window starts at its saved position
