"""Unit tests of the canonical-stream arithmetic (gpt2stream/data/streams.py): who computes which block of a step,
for world sizes 1-8 x DataLoader workers 0-3, and the loss weights that make uneven layouts exact."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gpt2stream.data import streams as S
from gpt2stream.data.doclog import step_records, truncate_after
from gpt2stream.data.shuffle import block_order, stream_block_buffer, stream_window
from gpt2stream.errors import UserError


@pytest.mark.parametrize("blocks,streams", [(16, 16), (24, 8), (8, 8), (512, 16), (12, 12)])
@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("workers", range(4))
def test_every_block_of_a_step_is_computed_once_and_weighted_exactly(blocks, streams, world, workers):
    if world > streams:
        with pytest.raises(UserError, match=f"{world} processes but the run has {streams} canonical streams"):
            S.check_streams(streams, blocks, world)
        return
    k = S.check_streams(streams, blocks, world)
    assert k * streams == blocks
    seen_streams, seen_blocks = [], []
    accum = S.accum_steps(streams, k, world, batch_size=3)
    for rank in range(world):
        mine = S.rank_streams(streams, world, rank)
        assert mine, "every rank computes something"
        readers = S.worker_streams(mine, workers)
        assert len(readers) == max(1, min(workers, len(mine))) == max(1, S.effective_workers(workers, mine))
        assert all(readers) and sorted(c for r in readers for c in r) == mine
        seen_streams += mine
        order = S.step_order(mine, streams, k)
        assert [i * streams + c for i, c in order] == sorted(i * streams + c for i, c in order)
        seen_blocks += order
        sizes = S.micro_sizes(len(order), 3)
        assert sum(sizes) == len(order) and all(0 < s <= 3 for s in sizes) and len(sizes) <= accum
        for rows in sizes:  # each micro-batch's mean loss x num/den; DDP then averages over the ranks
            num, den = S.loss_scale(rows, world, blocks)
            # every block's weight in the rank-averaged gradient is 1 / blocks, whoever computes it
            assert Fraction(num, den) / world / rows == Fraction(1, blocks)
    assert sorted(seen_streams) == list(range(streams))
    assert sorted(seen_blocks) == sorted((i, c) for c in range(streams) for i in range(k))
    # the weights of all micro-batch means add up to one mean per token: sum rows/blocks == 1
    total = sum(Fraction(rows, blocks) for rank in range(world)
                for rows in S.micro_sizes(k * len(S.rank_streams(streams, world, rank)), 3))
    assert total == 1


def test_even_layout_weights_are_one_over_accum():
    assert S.loss_scale(4, 2, 16) == (1, 2)  # 2 ranks x 2 micro-steps of 4 blocks
    assert S.accum_steps(16, 1, 2, 4) == 2


def test_uneven_layout_known_answer():
    # 8 streams over 3 ranks: 3, 3, 2 streams; 2 blocks each a step; micro-batch 4
    assert [S.rank_streams(8, 3, r) for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert S.micro_sizes(6, 4) == [4, 2] and S.micro_sizes(4, 4) == [4]
    assert S.accum_steps(8, 2, 3, 4) == 2
    assert S.step_order([2, 5], 8, 2) == [(0, 2), (0, 5), (1, 2), (1, 5)]


def test_default_streams_and_refusals():
    assert S.default_streams(16) == 16 and S.default_streams(2048 // 128) == 16  # tiny preset
    assert S.default_streams(524288 // 1024) == 512  # gpt2-124m: k = 1, so it can grow to 512 processes
    assert S.default_streams(2**20 // 1024) == 512  # gpt2-xl: k = 2
    assert S.default_streams(8, units=3) == 2 and S.default_streams(7) == 7
    # every world size up to 512 starts on the 124M step with the default streams (uneven ones too)
    assert all(S.check_streams(512, 512, w) == 1 for w in range(1, 513))
    with pytest.raises(UserError, match=r"513 processes but the run has 512 canonical streams \(fixed when it "
                                        r"started\).*--streams N >= 513 \(a divisor of its 512 blocks per step\)"):
        S.check_streams(512, 512, 513)
    with pytest.raises(UserError, match="--streams 5 must divide the 16 blocks"):
        S.check_streams(5, 16, 1)
    with pytest.raises(UserError, match="not a multiple of --seq-len 128"):
        S.blocks_per_step(1000, 128)


def test_stream_buffers_share_the_global_budget():
    assert stream_window(10000, 16) == 625 and stream_window(1, 16) == 1 and stream_window(16, 8) == 2
    assert stream_block_buffer(1024, 16) == 64 and stream_block_buffer(4, 16) == 1
    a = block_order(50, 64, seed=1, stream=3, buffer=2)
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert a == block_order(50, 64, seed=1, stream=3, buffer=2) != block_order(50, 64, seed=1, stream=4, buffer=2)
    assert block_order(5, 1, 0, 0, 0) == list(range(5))


def test_doclog_records_and_truncation(tmp_path):
    assert step_records(5, 0, [], 2) == [{"step": 5, "rank": 0, "epoch": 2, "ids": []}]
    p = tmp_path / "rank00000.jsonl"
    p.write_text('{"step": 1, "ids": []}\n{"step": 2, "ids": []}\n{"step": 3, "ids": []}\n{"step": 4, "id')
    truncate_after(p, 2)
    assert p.read_text() == '{"step": 1, "ids": []}\n{"step": 2, "ids": []}\n'
    truncate_after(tmp_path / "missing.jsonl", 0)
    assert not (tmp_path / "missing.jsonl").exists()
