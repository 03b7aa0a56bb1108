"""A run can grow from a few processes to 512: with the default streams (C = the step's blocks, 512 for the 124M
step) the same global batches come out of one reader holding all 512 streams as out of 24, 64 or 512 ranks, and a
state written by 2 ranks resumes on any of them exactly; the loss weights stay one per block (arithmetic); and one
real torchrun run grows to a world size the old default (C <= 16, the largest divisor) refused, with the losses of
the run it was cut from."""

from __future__ import annotations

import shutil
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader
from gpt2stream.data import streams as S
from gpt2stream.data.loader import merge_states
from gpt2stream.data.open import open_source
from gpt2stream.data.unitspill import SpilledRows, UnitSpill
from tests.test_train_common import TINY, make_jsonl, run, train_lines
from tests.test_train_elastic import assert_close_lines, steps_only

BLOCKS = 512  # the 124M preset's step: 524288 / 1024 blocks


class IdTokenizer:
    """Texts "doc-<n> ..." -> the single token n+1; eot = 0 (with seq_len 1, one block is one document)."""

    eot_id = 0
    identity = "test:ids"

    def encode_ordinary_batch(self, texts, num_threads=8):
        return [[int(t.split()[0][4:]) + 1] for t in texts]


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> tuple[DataConfig, object]:
    """4 parquet files x 160 row groups x 4 rows (640 units: 512 streams get one or two each; 5 steps an epoch)."""
    d = tmp_path_factory.mktemp("wide")
    for f in range(4):
        ids = range(f * 640, (f + 1) * 640)
        table = pa.table({"text": [f"doc-{i} words" for i in ids], "id": [f"id-{i}" for i in ids]})
        pq.write_table(table, d / f"part-{f}.parquet", row_group_size=4)
    c = DataConfig(data=str(d), seq_len=1, shuffle_buffer=1024, block_buffer=2048, num_workers=0, val_docs=0)
    return c, open_source(c)


def rank_steps(c, source, world: int, rank: int, n: int, state=None, batch: int = 64):
    """Rank ``rank``'s blocks of the next n steps: per step {(i, c): block row}; and its state after them."""
    ld = TrainLoader(c, batch_size=batch, tokenizer=IdTokenizer(), rank=rank, world_size=world, seed=5,
                     total_batch_size=BLOCKS * c.seq_len, source=source)
    assert ld.streams == BLOCKS and ld.k == 1  # the default
    if state is not None:
        ld.load_state_dict(state)
    out = []
    for _ in range(n):
        step = ld.next_step()
        x = torch.cat([torch.cat([mx, my[:, -1:]], 1) for mx, my in step.micro])
        out.append(dict(zip(ld.order, map(tuple, x.tolist()), strict=True)))
    sd = ld.state_dict()
    ld.close()
    return out, sd


def global_steps(c, source, world: int, n: int, state=None, ranks=None):
    """The global batches of n steps, every rank of ``world`` (or those of ``ranks``) read one after another (ranks
    are independent)."""
    steps: list[dict] = [{} for _ in range(n)]
    states = []
    for r in ranks if ranks is not None else range(world):
        mine, sd = rank_steps(c, source, world, r, n, state)
        for s, blocks in enumerate(mine):
            assert not set(blocks) & set(steps[s]), "a block computed twice"
            steps[s].update(blocks)
        states.append(sd)
    assert ranks is not None or all(len(s) == BLOCKS for s in steps)
    return steps, merge_states(states)


@pytest.mark.slow
def test_512_streams_give_the_same_steps_on_one_reader_and_on_many_ranks(wide):
    c, source = wide
    ref, _ = global_steps(c, source, 1, 7)  # one reader holding all 512 streams (their units on disk)
    docs = [b for step in ref for b in step.values()]
    assert len(set(docs[: 4 * BLOCKS])) == 4 * BLOCKS, "the first epoch repeats no document"
    first, saved = global_steps(c, source, 2, 3)  # a run started on 2 processes
    assert first == ref[:3]
    after, _ = global_steps(c, source, 24, 4, saved)  # resumed on 24 processes: the same next steps (past an epoch)
    assert after == ref[3:]
    for world, some in ((64, [0, 5, 63]), (512, [0, 1, 255, 511])):  # on 64 or 512: these ranks' blocks are the same
        after, _ = global_steps(c, source, world, 4, saved, ranks=some)
        assert all(len(a) == len(some) * BLOCKS // world for a in after), world
        assert after == [{key: step[key] for key in a} for a, step in zip(after, ref[3:], strict=True)], world


@pytest.mark.parametrize("world", [24, 64, 100, 511, 512])
def test_every_block_weighs_one_over_the_step_on_large_worlds(world):
    k = S.check_streams(S.default_streams(BLOCKS), BLOCKS, world)
    total = Fraction(0)
    for rank in range(world):
        sizes = S.micro_sizes(k * len(S.rank_streams(BLOCKS, world, rank)), 64)
        assert sizes and len(sizes) <= S.accum_steps(BLOCKS, k, world, 64)
        for rows in sizes:
            num, den = S.loss_scale(rows, world, BLOCKS)
            assert Fraction(num, den) / world / rows == Fraction(1, BLOCKS)
            total += Fraction(rows, BLOCKS)
    assert total == 1


def test_a_spilled_unit_reads_back_the_same_rows(tmp_path, monkeypatch):
    from gpt2stream.data.sources.base import Row

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    rows = [Row(f"text {i} é" * (i % 4), f"id-{i}") for i in range(10)] + [Row(None, "x"), Row(3, "y")]
    spill = UnitSpill()
    kept = spill.spill(7, rows, 4)
    assert isinstance(kept, SpilledRows) and len(kept) == len(rows)
    assert kept[4:6] == rows[4:6] and kept[6:12] == rows[6:] and kept[12:20] == []
    with pytest.raises(IndexError):
        kept[2:5]
    assert list(tmp_path.glob("gpt2stream-units-*/7.rows"))
    kept.drop()
    spill.close()
    assert not list(tmp_path.glob("gpt2stream-units-*"))


@pytest.mark.slow
def test_a_run_started_on_2_processes_resumes_on_3_where_the_old_default_refused(tmp_path):
    # 34 blocks of 32 tokens a step: the old default was 2 streams (the largest divisor <= 16), so 3 processes
    # were refused; now it has 34 (k = 1: the data has more units than that)
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=400)
    common = [*TINY, "--data", str(data), "--total-batch-size", str(34 * 32), "--eval-every", "0",
              "--save-every", "3", "--min-lr", "3e-3", "--num-workers", "0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    run([*common, "--max-steps", "6", "--out-dir", str(full)], nproc=2)  # uninterrupted: the reference
    shutil.copytree(full, cut)  # as if it had died after its step-3 checkpoint
    (cut / "checkpoints" / "step_00000006.pt").unlink()
    p = run(["--out-dir", str(cut), "--resume", "--max-steps", "6"], nproc=3)
    assert " at step 3" in p.stdout
    assert len(steps_only(train_lines(full))) == 6
    assert_close_lines(steps_only(train_lines(cut)), steps_only(train_lines(full)))
