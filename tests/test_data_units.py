"""Pure parts of the data pipeline: sharding arithmetic, shuffle orders, packing, byte-range document splitting."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest

from gpt2stream.data.packing import Packer, doc_tokens, pack_blocks
from gpt2stream.data.sharding import (
    check_enough_units,
    epoch_order,
    num_readers,
    reader_index,
    reader_units,
)
from gpt2stream.data.shuffle import NO_SHUFFLE_WINDOW, window_order, window_size
from gpt2stream.data.sources.text import iter_line_docs, iter_paragraph_docs
from gpt2stream.errors import UserError

# ---------------------------------------------------------------------------------------------------------------
# sharding


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("units", [6, 7, 12, 40])
def test_readers_partition_every_epoch(world, workers, units):
    R = num_readers(world, workers)
    if units < R:
        pytest.fail("fixture too small")  # every case here has units >= readers
    for epoch in range(3):
        order = epoch_order(units, seed=5, epoch=epoch)
        parts = [reader_units(order, reader_index(rank, w, workers), R)
                 for rank in range(world) for w in range(max(1, workers))]
        flat = [u for p in parts for u in p]
        assert sorted(flat) == list(range(units))  # disjoint and complete
        assert all(len(p) >= 1 for p in parts)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_reader_index_is_dense():
    seen = {reader_index(r, w, 2) for r in range(3) for w in range(2)}
    assert seen == set(range(6)) and num_readers(3, 2) == 6 and num_readers(3, 0) == 3
    assert reader_index(2, 0, 0) == 2


def test_epoch_order_seeded():
    assert epoch_order(50, seed=1, epoch=0) == epoch_order(50, seed=1, epoch=0)
    assert epoch_order(50, seed=1, epoch=0) != epoch_order(50, seed=1, epoch=1)
    assert epoch_order(50, seed=1, epoch=0) != epoch_order(50, seed=2, epoch=0)
    assert sorted(epoch_order(50, seed=1, epoch=3)) == list(range(50))
    assert epoch_order(5, seed=1, epoch=0, shuffle=False) == [0, 1, 2, 3, 4]


def test_reader_units_known_answer():
    assert reader_units([4, 0, 3, 1, 2], reader=0, num_readers=2) == [4, 3, 2]
    assert reader_units([4, 0, 3, 1, 2], reader=1, num_readers=2) == [0, 1]
    with pytest.raises(ValueError):
        reader_units([0, 1], reader=2, num_readers=2)


def test_too_few_units_is_a_user_error():
    check_enough_units(6, 6)
    with pytest.raises(UserError, match="5 row groups but there are 6 readers"):
        check_enough_units(5, 6, "row groups")


# ---------------------------------------------------------------------------------------------------------------
# shuffle


def test_window_order_seeded_and_a_permutation():
    a = window_order(100, 100, seed=3, epoch=0, reader=0, window=0)
    assert sorted(a) == list(range(100)) and a != list(range(100))
    assert a == window_order(100, 100, seed=3, epoch=0, reader=0, window=0)
    for other in [dict(seed=4, epoch=0, reader=0, window=0), dict(seed=3, epoch=1, reader=0, window=0),
                  dict(seed=3, epoch=0, reader=1, window=0), dict(seed=3, epoch=0, reader=0, window=1)]:
        assert window_order(100, 100, **other) != a
    assert window_order(5, 1, seed=3, epoch=0, reader=0, window=0) == [0, 1, 2, 3, 4]
    assert window_size(1) == NO_SHUFFLE_WINDOW and window_size(500) == 500


# ---------------------------------------------------------------------------------------------------------------
# packing


def test_pack_blocks_known_answer():
    # stream 1 2 0 3 4 5 0 6 0: nine tokens, three blocks
    assert pack_blocks([[1, 2], [3, 4, 5], [6]], eot=0, block_len=3) == [[1, 2, 0], [3, 4, 5], [0, 6, 0]]
    assert pack_blocks([[1, 2], [3]], eot=9, block_len=4) == [[1, 2, 9, 3]]  # the last eot is carried, not padded
    assert pack_blocks([[]], eot=7, block_len=2) == []


def test_packer_is_the_stream_cut_in_order_without_padding():
    rng = random.Random(0)
    docs = [[rng.randrange(1, 1000) for _ in range(rng.randrange(0, 50))] for _ in range(300)]
    stream = [t for d in docs for t in d + [0]]
    p = Packer(rows=3, block_len=17)
    out = []
    for d in docs:
        for b in p.push(doc_tokens(d, 0)):
            assert b.shape == (3, 17)
            out += b.reshape(-1).tolist()
            assert p.pending < 3 * 17
    assert out == stream[: len(out)]
    assert len(stream) - len(out) == p.pending < 51  # the rest is carried, never padded


def test_packer_pending_is_a_suffix_of_the_last_document():
    # The resume state relies on it: after each cut the carried tokens all come from the latest document.
    rng = random.Random(1)
    p = Packer(rows=2, block_len=9)
    for _ in range(500):
        arr = doc_tokens([1] * rng.randrange(0, 40), 0)
        for _b in p.push(arr):
            assert p.pending <= len(arr)


def test_huge_document_packs_lazily():
    arr = np.arange(1, 2_500_001, dtype=np.int32)
    p = Packer(rows=4, block_len=1025)
    n = sum(1 for _ in p.push(arr))
    assert n == 2_500_000 // (4 * 1025) and p.pending == 2_500_000 % (4 * 1025)


def test_packer_rejects_bad_shapes():
    with pytest.raises(ValueError):
        Packer(0, 5)
    with pytest.raises(ValueError):
        Packer(2, 1)


# ---------------------------------------------------------------------------------------------------------------
# byte ranges of jsonl/txt: every document belongs to exactly one range whatever the cut points


def _random_text(rng: random.Random) -> bytes:
    lines = []
    for _ in range(400):
        r = rng.random()
        if r < 0.25:
            lines.append("")
        elif r < 0.3:
            lines.append("   ")
        else:
            lines.append(" ".join(rng.choice(["alpha", "beta", "γάμμα", "delta"]) for _ in range(rng.randrange(1, 30))))
    text = "\n".join(lines)
    if rng.random() < 0.5:
        text += "\n"
    return text.encode()


@pytest.mark.parametrize("splitter", [iter_line_docs, iter_paragraph_docs])
@pytest.mark.parametrize("seed", range(6))
def test_ranges_cover_each_document_once(splitter, seed):
    rng = random.Random(seed)
    data = _random_text(rng)
    whole = list(splitter(io.BytesIO(data), 0, len(data)))
    assert whole and all(raw.strip() for _, raw in whole)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 40)))
        bounds = [0, *cuts, len(data)]
        pieces = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            pieces += list(splitter(io.BytesIO(data), a, b))
        assert pieces == whole


def test_paragraph_split_known_answer():
    data = b"a\nb\n\n\nc\n  \nd"
    assert list(iter_paragraph_docs(io.BytesIO(data), 0, len(data))) == [(0, b"a\nb\n"), (6, b"c\n"), (11, b"d")]
    assert list(iter_line_docs(io.BytesIO(data), 0, len(data))) == [(0, b"a\n"), (2, b"b\n"), (6, b"c\n"), (11, b"d")]


def test_tokenizer_threads_share_the_cores(monkeypatch):
    from gpt2stream.data.dataset import tokenizer_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert tokenizer_threads(0) == tokenizer_threads(1) == max(1, min(8, cores))
    assert tokenizer_threads(cores) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))  # many ranks on this node
    assert tokenizer_threads(1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "junk")
    assert tokenizer_threads(1) == max(1, min(8, cores))


def test_handle_cache_reuses_and_evicts(tmp_path):
    from gpt2stream.data.sources import HandleCache, LocalFile

    refs = []
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(str(i))
        refs.append(LocalFile(str(tmp_path / f"{i}.txt")))
    cache = HandleCache(keep=2)
    a = cache.get(0, refs[0])
    assert cache.get(0, refs[0]) is a  # reused
    b = cache.get(1, refs[1])
    cache.get(0, refs[0])  # 0 is now the most recent, 1 the oldest
    cache.get(2, refs[2])
    assert b.closed and not a.closed
    cache.discard(0)
    assert a.closed and cache.get(0, refs[0]) is not a
    cache.close()
