"""The frozen StreamSpec of a run's token stream: built once, its fingerprint is the one saved states carry (the same
keys and values as before the spec existed, so older checkpoints resume), a changed field is named, and the layout
arithmetic and checks live in one place each."""

from __future__ import annotations

import dataclasses
import doctest
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from config import PRESETS
from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader, val_batches
from gpt2stream.data.sharding import num_readers, reader_index, readers_per_rank
from gpt2stream.data.sources import Plan, Unit
from gpt2stream.data.spec import FINGERPRINT, StreamSpec, changed_fields
from gpt2stream.errors import UserError


class IdTokenizer:
    """Texts "doc-<n> ..." -> the single token n+1; eot = 0."""

    eot_id = 0
    identity = "test:ids"

    def encode_ordinary_batch(self, texts, num_threads=8):
        return [[int(t.split()[0][4:]) + 1] for t in texts]


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    """2 parquet files x 3 row groups x 7 rows, and a 300-line jsonl file."""
    d = tmp_path / "pq"
    d.mkdir()
    for f in range(2):
        ids = range(f * 21, (f + 1) * 21)
        table = pa.table({"text": [f"doc-{i} " + "words " * (i % 7) for i in ids], "id": [f"id-{i}" for i in ids]})
        pq.write_table(table, d / f"part-{f:02d}.parquet", row_group_size=7)
    j = tmp_path / "a.jsonl"
    j.write_text("".join(json.dumps({"text": f"doc-{i} " + "w " * (i % 5)}) + "\n" for i in range(300)))
    return {"pq": d, "jsonl": j}


def cfg(data, **kw) -> DataConfig:
    base = dict(data=str(data), seq_len=1, shuffle_buffer=5, num_workers=0, val_docs=0, txt_docs="paragraph")
    return DataConfig(**{**base, **kw})


# (data, DataConfig fields, TrainLoader arguments, the fingerprint the loader saved before StreamSpec, less "data")
CASES = {
    "parquet, workers, automatic streams": (
        "pq", dict(num_workers=2), dict(batch_size=1, seed=1),
        dict(data_config="sample-10BT", split="train", text_column="text", txt_docs="paragraph", seq_len=1,
             shuffle_buffer=5, block_buffer=8192, val_docs=0, seed=1, tokenizer="test:ids", num_units=6, streams=1,
             blocks_per_step=1)),
    "parquet, validation rows, 8 blocks a step": (
        "pq", dict(seq_len=4, shuffle_buffer=9, block_buffer=64, val_docs=3),
        dict(batch_size=2, seed=7, total_batch_size=32),
        dict(data_config="sample-10BT", split="train", text_column="text", txt_docs="paragraph", seq_len=4,
             shuffle_buffer=9, block_buffer=64, val_docs=3, seed=7, tokenizer="test:ids", num_units=6, streams=4,
             blocks_per_step=8)),
    "jsonl pieces, --streams 2, rank 1 of 2": (
        "jsonl", dict(seq_len=2, streams=2, val_docs=10, shuffle_buffer=1, block_buffer=1),
        dict(batch_size=2, seed=0, total_batch_size=8, world_size=2, rank=1),
        dict(data_config="sample-10BT", split="train", text_column="text", txt_docs="paragraph", seq_len=2,
             shuffle_buffer=1, block_buffer=1, val_docs=10, seed=0, tokenizer="test:ids", num_units=2, streams=2,
             blocks_per_step=4)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fingerprint_is_the_dict_saved_before(data, case):
    kind, fields, kw, before = CASES[case]
    loader = TrainLoader(cfg(data[kind], **fields), tokenizer=IdTokenizer(), **kw)
    want = {"data": str(data[kind]), **before}
    fp = loader.state_dict()["fingerprint"]
    assert fp == loader.fingerprint() == loader.spec.fingerprint() == want
    assert list(fp) == list(FINGERPRINT)  # same keys in the same order: a saved state's bytes do not change
    assert loader.spec.changes(want) == []


def test_a_state_saved_before_the_spec_resumes_exactly(data):
    c = cfg(data["pq"], num_workers=2)
    whole = [x.item() for _, (x, _y) in zip(range(8), TrainLoader(c, batch_size=1, tokenizer=IdTokenizer(), seed=1),
                                            strict=False)]
    # written by the loader before StreamSpec, after two batches
    saved = {"format": "gpt2stream.data.TrainLoader/2",
             "fingerprint": {"data": str(data["pq"]), **CASES["parquet, workers, automatic streams"][3]},
             "layout": {"world_size": 1, "rank": 0, "num_workers": 2, "batch_size": 1},
             "streams": [{"start": None, "buf": 0, "taken": 2, "epoch": 0, "docs": 2, "skipped": 0}], "micro": 0}
    loader = TrainLoader(c, batch_size=1, tokenizer=IdTokenizer(), seed=1)
    loader.load_state_dict(saved)
    assert [x.item() for _, (x, _y) in zip(range(6), loader, strict=False)] == whole[2:]
    loader.close()


def _spec(**kw) -> StreamSpec:
    base = dict(data="d", data_config="c", split="train", text_column="text", txt_docs="file", seq_len=8,
                shuffle_buffer=100, block_buffer=64, val_docs=0, seed=1, tokenizer="gpt2", num_units=10,
                streams=4, blocks_per_step=8)
    return StreamSpec(**{**base, **kw})


def test_spec_is_frozen_hashable_and_pickles():
    s = _spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seq_len = 16
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(_spec())
    assert (s.k, s.window, s.buffer_blocks) == (2, 25, 16)  # 8 blocks / 4 streams; 100 / 4 docs; 64 / 4 blocks
    assert _spec(shuffle_buffer=1).window == 1 and _spec(block_buffer=2).buffer_blocks == 1


def test_fingerprint_holds_the_stream_fields_only():
    s = _spec(id_column="doc_id", kind="parquet", revision="a" * 40)
    fields = [f.name for f in dataclasses.fields(StreamSpec)]
    assert list(s.fingerprint()) == list(FINGERPRINT) == fields[: len(FINGERPRINT)]
    assert s.fingerprint() == _spec().fingerprint()  # ids, kind and revision are not part of it


def test_a_changed_field_is_named():
    saved = _spec().fingerprint()
    assert _spec().changes(saved) == []
    assert _spec(seed=2).changes(saved) == ["seed: saved 1, now 2"]
    assert _spec(streams=2, tokenizer="bpe:x").changes(saved) == ["tokenizer: saved 'gpt2', now 'bpe:x'",
                                                                  "streams: saved 4, now 2"]
    older = {k: v for k, v in saved.items() if k != "block_buffer"}  # a state without the field
    assert _spec().changes(older) == ["block_buffer: saved None, now 64"]
    assert changed_fields({"a": 1}, {"a": 1, "b": 2}, ("a", "b")) == ["b: saved None, now 2"]


def test_loader_names_the_changed_field(data):
    kind, fields, kw, _ = CASES["parquet, validation rows, 8 blocks a step"]
    sd = TrainLoader(cfg(data[kind], **fields), tokenizer=IdTokenizer(), **kw).state_dict()
    other = TrainLoader(cfg(data[kind], **{**fields, "streams": 2}), tokenizer=IdTokenizer(), **kw)
    with pytest.raises(UserError, match=r"the run changed \(streams: saved 4, now 2\); resume with the same"):
        other.load_state_dict(sd)
    other = TrainLoader(cfg(data[kind], **fields), tokenizer=IdTokenizer(), **{**kw, "batch_size": 3})
    other.load_state_dict(sd)  # the micro-batch is layout, not stream


def test_build_resolves_the_streams_from_the_plan():
    source = SimpleNamespace(kind="parquet", revision="b" * 40)
    plan = Plan(tuple(Unit(0, g) for g in range(6)), -1, 0, 0)
    s = StreamSpec.build(DataConfig(data="x/y", seq_len=4), blocks_per_step=8, seed=3, tokenizer=IdTokenizer(),
                         source=source, plan=plan)
    assert (s.streams, s.k, s.num_units, s.kind, s.revision, s.tokenizer) == (4, 2, 6, "parquet", "b" * 40,
                                                                              "test:ids")
    s = StreamSpec.build(DataConfig(data="x/y", seq_len=4, streams=2), blocks_per_step=8, seed=3,
                         tokenizer=IdTokenizer(), source=source, plan=plan)
    assert s.streams == 2
    with pytest.raises(UserError, match="has 6 row groups but the run has 8 canonical streams.*--streams 6 or less"):
        StreamSpec.build(DataConfig(data="x/y", seq_len=4, streams=8), blocks_per_step=8, seed=3,
                         tokenizer=IdTokenizer(), source=source, plan=plan)


def test_readers_per_rank_is_the_layout_arithmetic():
    from gpt2stream.data import sharding, shuffle, spec, streams

    assert [readers_per_rank(w) for w in (0, 1, 3)] == [1, 1, 3]
    assert num_readers(4, 0) == 4 and num_readers(4, 2) == 8 and reader_index(3, 1, 2) == 7
    for w in range(4):
        mine = [0, 3, 6]
        assert len(streams.worker_streams(mine, w)) == readers_per_rank(streams.effective_workers(w, mine))
    for mod in (sharding, shuffle, spec, streams):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__


def test_layout_arguments_are_checked_by_the_loaders(data):
    c = cfg(data["pq"])
    for kw, message in [(dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
                        (dict(batch_size=1, world_size=0), "world_size must be an integer >= 1, got 0"),
                        (dict(batch_size=1, rank=2, world_size=2), r"rank must be in \[0, 2\), got 2")]:
        for make in (TrainLoader, val_batches):
            with pytest.raises(UserError, match=message):
                make(c, tokenizer=IdTokenizer(), **kw)


def test_training_and_validation_share_one_opened_source(tmp_path, monkeypatch):
    from gpt2stream import distributed as D
    from gpt2stream.config import load_config
    from gpt2stream.data import loader as loader_mod
    from gpt2stream.train.build import build_parts
    from tests.test_train_common import TINY, make_jsonl

    opened = []
    real = loader_mod.open_source
    monkeypatch.setattr(loader_mod, "open_source", lambda c: opened.append(c) or real(c))
    make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    c = load_config([*TINY, "--data", str(tmp_path / "docs.jsonl"), "--num-workers", "0",
                     "--out-dir", str(tmp_path / "run")], PRESETS)
    cpu = D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="")
    parts = build_parts(c, cpu, None)
    assert len(opened) == 1 and parts.val and parts.loader.spec.num_units == len(parts.loader.plan.units)
    source = real(c.data)
    parts = build_parts(c, cpu, None, source=source)
    assert len(opened) == 1 and parts.loader.source is source and parts.val
    assert isinstance(parts.val[0][0], torch.Tensor)
