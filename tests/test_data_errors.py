"""Bad input to the data pipeline: a clear UserError or a counted skip, never a hang or a traceback dump."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data import TrainLoader, iter_documents
from gpt2stream.errors import UserError


class CharTokenizer:
    """One token per character (code point + 1), eot = 0: exact token counts without BPE."""

    eot_id = 0
    identity = "test:chars"

    def encode_ordinary_batch(self, texts, num_threads=8):
        return [[ord(ch) + 1 for ch in t] for t in texts]


def cfg(data, **kw) -> DataConfig:
    base = dict(data=str(data), seq_len=8, shuffle_buffer=4, num_workers=0, val_docs=0, txt_docs="line")
    base.update(kw)
    return DataConfig(**base)


def loader_for(c, batch_size=1, **kw):
    return TrainLoader(c, batch_size=batch_size, tokenizer=CharTokenizer(), **kw)


def first(loader):
    try:
        return next(iter(loader))
    finally:
        loader.close()


def test_missing_text_column_lists_the_columns(tmp_path):
    pq.write_table(pa.table({"body": ["a"], "id": ["1"]}), tmp_path / "a.parquet")
    with pytest.raises(UserError, match=r"has no column 'text'; its columns are \['body', 'id'\]; set --text-column"):
        loader_for(cfg(tmp_path / "a.parquet"))
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x", "url": "u"}) + "\n")
    with pytest.raises(UserError, match=r"has no field 'text'; its fields are \['content', 'url'\]"):
        loader_for(cfg(tmp_path / "a.jsonl"))
    with pytest.raises(UserError, match="has no field 'text'"):
        list(iter_documents(cfg(tmp_path / "a.jsonl")))


def test_unusable_texts_are_skipped_and_counted(tmp_path):
    rows = [{"text": "good one"}, {"text": None}, {"text": ""}, {"text": 5}, {"text": ["a"]}, {"text": "  \n"},
            {"other": "no text key"}, {"text": "good two"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    it = iter_documents(cfg(tmp_path / "a.jsonl"))
    assert list(it) == ["good one", "good two"] and it.skipped == 6
    loader = loader_for(cfg(tmp_path / "a.jsonl", seq_len=1, block_buffer=1))
    seen = []
    for x, _ in loader:
        seen.append(x.item())
        if loader.epoch == 1:
            break
    loader.close()
    assert loader.docs_seen == 3 and loader.docs_skipped >= 6  # one doc into epoch 1
    assert len(seen) == 10  # 18 tokens (2 docs + 2 eot) = 9 blocks of 2 in epoch 0, then the first of epoch 1


def test_one_empty_unit_is_not_an_error(tmp_path):
    # 2 row groups, 2 readers, one group all None: the reader that draws it just gets the other one next epoch
    pq.write_table(pa.table({"text": [None] * 5 + ["real text here"] * 5}), tmp_path / "a.parquet", row_group_size=5)
    for rank in (0, 1):
        x, _ = first(loader_for(cfg(tmp_path / "a.parquet", num_workers=0), rank=rank, world_size=2))
        assert x.shape == (1, 8)


def test_all_texts_unusable_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": v}) + "\n" for v in [None, "", 3] * 10))
    for workers in (0, 1):  # from a worker process too, with the message intact
        with pytest.raises(UserError, match=r"^stream 0 of 1 found no usable text in 5 whole epochs: the \d+ "
                                            r"documents it read were all empty or not a string; check --text-column"):
            first(loader_for(cfg(tmp_path / "a.jsonl", num_workers=workers)))


def test_ten_megabyte_document(tmp_path):
    big = ("All work and no play. " * 500_000)[:10_000_000]
    pq.write_table(pa.table({"text": ["short one", big, "short two"]}), tmp_path / "big.parquet")
    c = cfg(tmp_path / "big.parquet", seq_len=1023, shuffle_buffer=1, block_buffer=1)
    loader = loader_for(c, batch_size=8)
    n, total, state, after = 0, 0, None, []
    for x, _y in loader:
        assert x.shape == (8, 1023)
        n += 1
        total += 8 * 1024
        if n == 300:
            state = loader.state_dict()
        elif 300 < n <= 303:
            after.append(x)
        if loader.epoch == 1:
            break
    loader.close()
    stream = len("short one") + 1 + len(big) + 1 + len("short two") + 1
    assert stream <= total < stream + 2 * 8 * 1024  # the whole epoch went through, nothing padded
    assert state["streams"][0]["start"]["tok"] > 300 * 8 * 1024 - 20  # saved in the middle of the big document
    again = loader_for(c, batch_size=8)
    again.load_state_dict(state)
    got = [x for _, (x, _y) in zip(range(3), again, strict=False)]
    again.close()
    assert all(a.equal(b) for a, b in zip(got, after, strict=True))


def test_ten_megabyte_txt_file_document(tmp_path):
    (tmp_path / "big.txt").write_text("word " * 2_000_000)
    loader = loader_for(cfg(tmp_path / "big.txt", txt_docs="file", seq_len=4095), batch_size=4)
    x, y = first(loader)
    assert x.shape == (4, 4095) and x[0, 0].item() == ord("w") + 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.parquet", b"this is not parquet at all", r"cannot read parquet file .*bad\.parquet"),
        ("bad.txt", b"caf\xe9 latin-1 text\n", r"bad\.txt: not UTF-8 text near byte 0"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": broken\n', r"bad\.jsonl: the line at byte 15 is not valid JSON"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        first(loader_for(cfg(tmp_path / name, txt_docs="line", num_workers=0)))


def test_corrupt_line_found_by_a_worker_keeps_its_message(tmp_path):
    lines = [json.dumps({"text": f"document {i} " * 20}) for i in range(300)]
    lines[250] = "{not json"
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    loader = loader_for(cfg(tmp_path / "a.jsonl", num_workers=2, shuffle_buffer=1), batch_size=4)
    with pytest.raises(UserError) as err:
        for _ in loader:
            pass
    loader.close()
    assert str(err.value).startswith(str(tmp_path / "a.jsonl") + ": the line at byte ")
    assert "Traceback" not in str(err.value)


def test_bad_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        loader_for(cfg(tmp_path / "missing.parquet"))
    with pytest.raises(UserError, match="no files match"):
        loader_for(cfg(str(tmp_path / "*.parquet")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .parquet"):
        loader_for(cfg(tmp_path / "empty"))
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "a.txt").write_text("x\n")
    (tmp_path / "mix" / "b.jsonl").write_text('{"text": "y"}\n')
    with pytest.raises(UserError, match="mixes file types"):
        loader_for(cfg(str(tmp_path / "mix" / "*")))
    # a directory takes one kind: jsonl before txt (README.md / notes.txt beside data files are not data)
    assert list(iter_documents(cfg(tmp_path / "mix"))) == ["y"]
    (tmp_path / "a.csv").write_text("text\nx\n")
    with pytest.raises(UserError, match="unknown file type"):
        loader_for(cfg(tmp_path / "a.csv"))


def test_fewer_units_than_streams_is_refused(tmp_path):
    pq.write_table(pa.table({"text": ["a b c"] * 10}), tmp_path / "one.parquet", row_group_size=5)
    with pytest.raises(UserError, match="2 row groups but the run has 4 canonical streams.*--streams 2 or less"):
        loader_for(cfg(tmp_path / "one.parquet", streams=4), batch_size=4)
    # automatic: as many streams as the data allows; more workers than streams are not started
    loader = loader_for(cfg(tmp_path / "one.parquet", num_workers=3), batch_size=4)
    assert (loader.streams, loader.num_workers) == (2, 2)
    assert first(loader)[0].shape == (4, 8)


def test_val_docs_must_leave_training_data(tmp_path):
    p = Path(tmp_path / "a.txt")
    p.write_text("one\ntwo\nthree\n")
    with pytest.raises(UserError, match="val_docs=3 but the last file .* has only 3 documents"):
        loader_for(cfg(p, val_docs=3))
    with pytest.raises(UserError, match="only 1 txt files"):
        loader_for(cfg(p, val_docs=1, txt_docs="file"))
