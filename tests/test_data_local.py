"""The data pipeline end to end on local files: sharding over ranks x workers, epochs, shuffle, validation split,
iter_documents, and exact resume (through real DataLoader worker processes)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader, iter_documents, val_batches, val_documents
from gpt2stream.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


class IdTokenizer:
    """Texts "doc-<n> ..." -> the single token n+1; eot = 0. One document = one token, so with seq_len=1 and
    batch_size=1 every batch is exactly one document and the stream's documents can be read back from x."""

    eot_id = 0
    identity = "test:ids"

    def encode_ordinary_batch(self, texts, num_threads=8):
        return [[int(t.split()[0][4:]) + 1] for t in texts]


def cfg(data, **kw) -> DataConfig:
    base = dict(data=str(data), seq_len=1, shuffle_buffer=5, num_workers=0, val_docs=0, txt_docs="paragraph")
    base.update(kw)
    return DataConfig(**base)


def write_parquet(path: Path, ids: range, rows_per_group: int, text_col: str = "text") -> None:
    texts = [f"doc-{i} " + "words " * (i % 7) for i in ids]
    table = pa.table({text_col: texts, "id": [f"id-{i}" for i in ids]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=rows_per_group)


def parquet_dir(tmp_path: Path, files: int = 2, groups: int = 3, rows: int = 7) -> Path:
    d = tmp_path / "pq"
    n = groups * rows
    for f in range(files):
        write_parquet(d / f"part-{f:02d}.parquet", range(f * n, (f + 1) * n), rows)
    return d


def read_epochs(loader: TrainLoader, epochs: int) -> dict[int, list[tuple[int, int]]]:
    """Run until every canonical stream of the loader has started epoch ``epochs``; -> epoch -> [(stream, doc)].
    Each batch is one block holding one document (seq_len=1, one token per document)."""
    out: dict[int, list[tuple[int, int]]] = {}
    done: set[int] = set()
    for n, (x, y) in enumerate(loader):
        assert x.shape == y.shape == (1, 1) and y.item() == 0
        [(_, stream)], [(epoch, _id)] = loader.last_blocks, loader.last_docs
        if epoch >= epochs:
            done.add(stream)
            if done == set(loader.mine):
                break
        else:
            out.setdefault(epoch, []).append((stream, x.item() - 1))
        assert n < 10_000
    loader.close()
    return out


# ---------------------------------------------------------------------------------------------------------------
# sharding and epochs


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_document_once_per_epoch(tmp_path, world, workers):
    # 2 files x 3 row groups: fewer files than readers for most cases (up to 3 x 2 = 6 readers).
    data = parquet_dir(tmp_path)
    c = cfg(data, num_workers=workers, val_docs=4)
    per_epoch: dict[int, list[int]] = {0: [], 1: []}
    for rank in range(world):
        loader = TrainLoader(c, batch_size=1, tokenizer=IdTokenizer(), rank=rank, world_size=world, seed=3)
        for epoch, docs in read_epochs(loader, 2).items():
            per_epoch[epoch] += [d for _, d in docs]
    training = list(range(21, 42))[4:] + list(range(21))  # the first 4 rows of the last file are validation
    for epoch in (0, 1):
        assert sorted(per_epoch[epoch]) == sorted(training), f"epoch {epoch}"


@pytest.mark.parametrize("fmt", ["jsonl", "line", "paragraph", "file"])
def test_text_formats_every_document_once(tmp_path, fmt):
    n = 60 if fmt == "file" else 800
    d = tmp_path / "txt"
    d.mkdir()
    if fmt == "jsonl":
        with open(d / "a.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"doc-{i} " + "x " * (i % 5) + "padding" * 4, "id": i}) + "\n")
    elif fmt == "file":
        for i in range(n):
            (d / f"f{i:03d}.txt").write_text(f"doc-{i}\nline two\n\nmore")
    else:
        sep = "\n" if fmt == "line" else "\n\n"
        extra = "z\n" if fmt == "paragraph" else ""
        body = sep.join(f"doc-{i} " + extra + "y " * (i % 9) + "padding" * 4 for i in range(n))
        (d / "a.txt").write_text(body)
    kind = fmt if fmt in ("line", "paragraph", "file") else "paragraph"
    c = cfg(d, num_workers=2, val_docs=3, txt_docs=kind)
    got: list[int] = []
    for rank in range(2):
        loader = TrainLoader(c, batch_size=1, tokenizer=IdTokenizer(), rank=rank, world_size=2, seed=0)
        got += [doc for _, doc in read_epochs(loader, 1)[0]]
    expected = list(range(n - 3)) if fmt == "file" else list(range(3, n))
    assert sorted(got) == expected
    held = val_documents(c)
    assert [int(t.split()[0][4:]) for t in held] == ([n - 3, n - 2, n - 1] if fmt == "file" else [0, 1, 2])


def test_same_seed_same_order_new_epoch_new_order(tmp_path):
    data = parquet_dir(tmp_path, files=3, groups=2, rows=10)
    c = cfg(data, num_workers=2, shuffle_buffer=8)

    def run(seed):
        # 2 blocks per step: 2 canonical streams, one per worker process
        return read_epochs(TrainLoader(c, batch_size=1, tokenizer=IdTokenizer(), seed=seed, total_batch_size=2), 3)

    a, b, other = run(1), run(1), run(2)
    assert a == b
    assert a != other
    for w in (0, 1):  # each stream derives its own epoch: its order differs between epochs
        e0, e1, e2 = ([d for ww, d in a[e] if ww == w] for e in (0, 1, 2))
        assert e0 != e1 and e1 != e2
    assert sorted(d for _, d in a[0]) == sorted(d for _, d in a[1]) == list(range(60))


def test_block_buffer_mixes_blocks_and_keeps_each_once_per_epoch(tmp_path):
    data = parquet_dir(tmp_path, files=1, groups=3, rows=10)
    got = read_epochs(TrainLoader(cfg(data, shuffle_buffer=1, block_buffer=8), batch_size=1,
                                  tokenizer=IdTokenizer()), 2)
    plain = read_epochs(TrainLoader(cfg(data, shuffle_buffer=1, block_buffer=1), batch_size=1,
                                    tokenizer=IdTokenizer()), 2)
    for e in (0, 1):
        assert sorted(d for _, d in got[e]) == sorted(d for _, d in plain[e]) == list(range(30))
        assert got[e] != plain[e]
        # a buffer of 8 blocks: every block leaves within the 8 positions of the buffer it was packed in
        pos = {d: k for k, (_, d) in enumerate(plain[e])}
        assert all(k // 8 == pos[d] // 8 for k, (_, d) in enumerate(got[e]))


def test_shuffle_buffer_one_keeps_row_order_within_units(tmp_path):
    data = parquet_dir(tmp_path, files=1, groups=3, rows=10)
    docs = read_epochs(TrainLoader(cfg(data, shuffle_buffer=1, block_buffer=1), batch_size=1,
                                   tokenizer=IdTokenizer()), 1)[0]
    order = [d for _, d in docs]
    assert sorted(order) == list(range(30))
    for g in range(3):  # each row group in order, the row groups themselves shuffled
        k = order.index(g * 10)
        assert order[k : k + 10] == list(range(g * 10, g * 10 + 10))


# ---------------------------------------------------------------------------------------------------------------
# validation set and iter_documents


def test_val_set_is_disjoint_and_the_same_for_any_world_size(tmp_path):
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    data = parquet_dir(tmp_path, files=2, groups=3, rows=30)
    c = cfg(data, seq_len=16, val_docs=40)
    held = val_documents(c)
    assert len(held) == 40 and held[0].startswith("doc-90 ")  # first rows of the last file
    loader = TrainLoader(cfg(data, val_docs=40), batch_size=1, tokenizer=IdTokenizer())
    train_docs = {d for _, d in read_epochs(loader, 1)[0]}
    assert not train_docs & {int(t.split()[0][4:]) for t in held}
    assert len(train_docs) == 180 - 40

    def union(world):
        blocks = []
        shares = [val_batches(c, batch_size=3, tokenizer=tok, rank=r, world_size=world, num_tokens=16 * 10)
                  for r in range(world)]
        rows = [[row for x, y in share for row in torch.cat([x, y[:, -1:]], 1).tolist()] for share in shares]
        for j in range(sum(map(len, rows))):  # block j lives on rank j % world
            blocks.append(rows[j % world][j // world])
        return blocks

    one = union(1)
    assert len(one) == 10 and all(len(b) == 17 for b in one)
    assert union(2) == one and union(3) == one
    assert val_batches(cfg(data, val_docs=0), 2, tok, num_tokens=100) == []


def test_val_docs_larger_than_last_file_is_refused(tmp_path):
    data = parquet_dir(tmp_path, files=2, groups=1, rows=5)
    with pytest.raises(UserError, match="val_docs=6 but the last file .* has only 5 rows"):
        TrainLoader(cfg(data, val_docs=6), batch_size=1, tokenizer=IdTokenizer())


def test_iter_documents_file_order_limits_and_holdout(tmp_path):
    data = parquet_dir(tmp_path, files=2, groups=2, rows=5)
    c = cfg(data, val_docs=3)
    docs = list(iter_documents(c))
    assert [int(t.split()[0][4:]) for t in docs] == list(range(10)) + list(range(13, 20))
    assert len(list(iter_documents(c, max_docs=4))) == 4
    it = iter_documents(c, max_chars=50)
    got = "".join(it)
    assert len(got) == 50 == it.chars and got.startswith("doc-0 ")
    assert list(iter_documents(c, max_docs=0)) == []


# ---------------------------------------------------------------------------------------------------------------
# exact resume


def _fixture(tmp_path: Path) -> Path:
    from tests.hubserver import build_fineweb_repo

    fx = build_fineweb_repo(tmp_path / "repo", n_files=2, row_groups=3, rows_per_group=5, dump_files=0, seed=1,
                            paragraphs_per_doc=(1, 2))
    return fx.root / "sample" / "10BT"


def _resume_cfg(data, workers):
    return cfg(data, seq_len=32, shuffle_buffer=10, num_workers=workers, val_docs=6, block_buffer=12)


def _run(c, tok, n, state=None):
    loader = TrainLoader(c, batch_size=3, tokenizer=tok, seed=11)
    if state is not None:
        loader.load_state_dict(state)
    out, states = [], []
    for x, y in loader:
        out.append((x.clone(), y.clone()))
        states.append(copy.deepcopy(loader.state_dict()))
        if len(out) == n:
            break
    loader.close()
    return out, states


def _same(a, b):
    if len(a) != len(b):
        return False
    return all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_mid_file_and_across_epochs(tmp_path, workers):
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    c = _resume_cfg(_fixture(tmp_path), workers)
    ref, states = _run(c, tok, 90)
    epochs = [max(w["epoch"] for w in s["streams"] if w) for s in states]
    assert epochs[-1] >= 2, "fixture should span several epochs"
    cross = next(k for k in range(len(states)) if epochs[k + 6] > epochs[k])  # an epoch starts in the next batches
    assert all(w["epoch"] == 0 and w["taken"] > 0 for w in states[4]["streams"]), "batch 4: mid-buffer"
    assert any(w["buf"] > 0 and w["start"]["pos"] > 0 for s in states[:30] for w in s["streams"]), "mid-window"
    for k in sorted({4, cross, 50}):
        again, _ = _run(c, tok, 12, state=states[k])
        assert _same(again, ref[k + 1 : k + 13]), f"resume after batch {k}"
    for x, y in ref:
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


def test_resume_in_a_new_process(tmp_path):
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    data = _fixture(tmp_path)
    c = _resume_cfg(data, 2)
    ref, states = _run(c, tok, 30)
    state_path = tmp_path / "state.pt"
    torch.save(states[19], state_path)
    script = f"""
import hashlib, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader
from tokenizer import load_tokenizer
c = DataConfig(**{c.__dict__!r})
loader = TrainLoader(c, batch_size=3, tokenizer=load_tokenizer("gpt2"), seed=11)
loader.load_state_dict(torch.load({str(state_path)!r}, weights_only=True))
for i, (x, y) in zip(range(10), loader):
    print(hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest())
loader.close()
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    want = [hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest() for x, y in ref[20:30]]
    assert out.stdout.split() == want


def test_resume_refuses_a_changed_stream(tmp_path):
    data = parquet_dir(tmp_path, files=2, groups=3, rows=7)
    loader = TrainLoader(cfg(data, num_workers=2), batch_size=1, tokenizer=IdTokenizer(), seed=1)
    it = iter(loader)
    next(it), next(it)
    sd = loader.state_dict()
    loader.close()
    for kw, what in [(dict(seq_len=2), "seq_len"), (dict(shuffle_buffer=9), "shuffle_buffer"),
                     (dict(block_buffer=7), "block_buffer"), (dict(val_docs=1), "val_docs")]:
        other = TrainLoader(cfg(data, **{"num_workers": 2, **kw}), batch_size=1, tokenizer=IdTokenizer(), seed=1)
        with pytest.raises(UserError, match=f"cannot resume.*{what}: saved"):
            other.load_state_dict(sd)
    other = TrainLoader(cfg(data), batch_size=1, tokenizer=IdTokenizer(), seed=2)
    with pytest.raises(UserError, match="seed: saved 1, now 2"):
        other.load_state_dict(sd)
    other = TrainLoader(cfg(data), batch_size=1, tokenizer=IdTokenizer(), seed=1, total_batch_size=2)
    with pytest.raises(UserError, match="blocks_per_step: saved 1, now 2"):
        other.load_state_dict(sd)
    with pytest.raises(UserError, match="not from this version"):
        other.load_state_dict({"format": "something else"})
    with pytest.raises(UserError, match="before canonical streams"):
        other.load_state_dict({"format": "gpt2stream.data.TrainLoader/1"})


def _steps(loaders, n):
    """n steps of the global batch from the loaders of all ranks: per step, (i, c) -> block row, and the docs."""
    out = []
    its = [iter(ld) for ld in loaders]
    for _ in range(n):
        blocks, docs = {}, set()
        for ld, _it in zip(loaders, its, strict=True):
            step = ld.next_step()
            x = torch.cat([torch.cat([mx, my[:, -1:]], 1) for mx, my in step.micro])
            for key, row in zip(ld.order, x.tolist(), strict=True):
                blocks[key] = row
            docs |= set(step.docs)
        out.append((blocks, docs))
    for ld in loaders:
        ld.close()
    return out


def test_resume_on_another_layout_continues_the_same_steps(tmp_path):
    from gpt2stream.data.loader import merge_states
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    c = _resume_cfg(_fixture(tmp_path), 2)  # 4 blocks of 32 tokens a step: 4 canonical streams

    def make(world, workers, batch):
        return [TrainLoader(dataclasses.replace(c, num_workers=workers), batch_size=batch, tokenizer=tok, rank=r,
                            world_size=world, seed=11, total_batch_size=4 * 32) for r in range(world)]

    ref = _steps(make(1, 2, 4), 30)
    first = make(1, 2, 4)
    assert _steps(first, 7) == ref[:7]
    saved = [ld.state_dict() for ld in first]
    for world, workers, batch in [(2, 1, 3), (4, 0, 1), (3, 3, 2), (1, 0, 4)]:
        loaders = make(world, workers, batch)
        for ld in loaders:
            ld.load_state_dict(merge_states(saved))
        assert _steps(loaders, 23) == ref[7:], (world, workers, batch)
    # and from a state written by 4 ranks to 1
    four = make(4, 0, 1)
    _steps(four, 12)
    one = make(1, 1, 5)
    one[0].load_state_dict(merge_states([ld.state_dict() for ld in four]))
    assert _steps(one, 18) == ref[12:]


def test_docs_seen_and_epoch_counters(tmp_path):
    data = parquet_dir(tmp_path, files=1, groups=2, rows=5)
    loader = TrainLoader(cfg(data), batch_size=1, tokenizer=IdTokenizer())
    it = iter(loader)
    for _ in range(10):
        next(it)
    assert loader.docs_seen == 10 and loader.epoch == 0
    next(it)
    assert loader.docs_seen == 11 and loader.epoch == 1
    loader.close()


def test_iterating_again_continues_the_stream(tmp_path):
    data = parquet_dir(tmp_path, files=2, groups=3, rows=7)
    c = cfg(data, num_workers=2, shuffle_buffer=4)
    whole = [x.item() for _, (x, _y) in zip(range(30), TrainLoader(c, batch_size=1, tokenizer=IdTokenizer()),
                                            strict=False)]
    loader = TrainLoader(c, batch_size=1, tokenizer=IdTokenizer())
    parts = []
    for _ in range(3):  # e.g. a trainer that stops and restarts its loop: new workers from the kept state
        parts += [x.item() for _, (x, _y) in zip(range(10), loader, strict=False)]
        loader.close()
    assert parts == whole


def test_dataset_pickles_for_spawned_workers(tmp_path):
    """macOS and Windows start DataLoader workers with spawn: the dataset (source with its parquet footers,
    tokenizer, states) is pickled and must stream the same batches after the round trip."""
    import pickle

    from tokenizer import load_tokenizer

    c = _resume_cfg(_fixture(tmp_path), 0)
    loader = TrainLoader(c, batch_size=2, tokenizer=load_tokenizer("gpt2"), seed=4)
    it = iter(loader)
    first = [next(it)[0] for _ in range(3)]
    later = pickle.loads(pickle.dumps(loader._dataset()))  # carries the state after those 3 batches
    fourth = next(it)[0]
    loader.close()
    fresh = pickle.loads(pickle.dumps(TrainLoader(c, batch_size=2, tokenizer=load_tokenizer("gpt2"), seed=4)
                                      ._dataset()))
    # one item per step: this reader's blocks (an int32 array of seq_len + 1 tokens) in step order (one reader: all)
    got = [torch.from_numpy(blocks[:, :-1]) for _, (blocks, *_rest) in zip(range(3), fresh, strict=False)]
    assert all(a.equal(b) for a, b in zip(got, first, strict=True))
    assert torch.from_numpy(next(iter(later))[0][:, :-1]).equal(fourth)
