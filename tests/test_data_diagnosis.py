"""Valid data trains with the defaults, and data that cannot be trained on gets the right diagnosis, through
run_train.py: few large documents (a jsonl of a handful of long texts, one huge line with --txt-docs line), a
directory of .md files, UTF-16 text (named as such), a zero-row parquet file (never "--streams 0 or less"), and texts
that are all unusable (a data error before the first step: no checkpoint, no advice to --resume, and the same
command runs again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_train_common import TINY, WORDS, run

ONE_STEP = ["--max-steps", "1", "--eval-every", "0", "--save-every", "0", "--num-workers", "0"]


def long_text(n_words: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def one_error_line(p) -> str:
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), (p.returncode, p.stderr[-3000:])
    return err[0]


def few_large_jsonl(d: Path) -> list[str]:
    """6 documents of ~100 KB: each far larger than a piece of the file (which used to leave most streams with no
    document at all, and fail with "no usable text ... check --text-column")."""
    with open(d / "six.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"d{i}", "text": long_text(14_000, i)}) + "\n")
    return ["--data", str(d / "six.jsonl"), "--val-docs", "1"]


def one_line_txt(d: Path) -> list[str]:
    (d / "one.txt").write_text(long_text(150_000, 7) + "\n")  # ~1 MB, one document with --txt-docs line
    return ["--data", str(d / "one.txt"), "--txt-docs", "line", "--val-docs", "0"]


def md_directory(d: Path) -> list[str]:
    (d / "notes").mkdir()
    for i in range(4):
        (d / "notes" / f"n{i}.md").write_text(f"# Note {i}\n\n" + long_text(400, i) + "\n")
    return ["--data", str(d / "notes"), "--val-docs", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("make", [few_large_jsonl, one_line_txt, md_directory], ids=lambda f: f.__name__)
def test_valid_data_trains_with_the_defaults(tmp_path, make):
    out = tmp_path / "run"
    run([*TINY, *make(tmp_path), *ONE_STEP, "--out-dir", str(out)])
    assert (out / "checkpoints" / "step_00000001.pt").exists()


def test_utf16_text_is_named(tmp_path):
    """With a byte-order mark through run_train.py; without one (NUL bytes) as rank 0 opens the data."""
    from types import SimpleNamespace

    from gpt2stream.config import DataConfig
    from gpt2stream.data.job import open_data_for_job
    from gpt2stream.data.mixture import resolve
    from gpt2stream.errors import UserError

    text = "A first paragraph.\n\nA second one.\n" * 50
    data, plain = tmp_path / "u16.txt", tmp_path / "u16le.txt"
    data.write_bytes(text.encode("utf-16"))
    plain.write_bytes(text.encode("utf-16-le"))
    line = one_error_line(run([*TINY, "--data", str(data), "--val-docs", "0", *ONE_STEP, "--out-dir",
                               str(tmp_path / "run")], check=False))
    with pytest.raises(UserError) as e:
        open_data_for_job(resolve(DataConfig(data=str(plain), val_docs=0)), SimpleNamespace(rank=0, ddp=False))
    for msg in (line, str(e.value)):
        assert "UTF-16" in msg and "not UTF-8" in msg and "--text-column" not in msg, msg


def test_zero_row_parquet_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    line = one_error_line(run([*TINY, "--data", str(tmp_path / "empty.parquet"), "--val-docs", "0", *ONE_STEP,
                               "--out-dir", str(tmp_path / "run")], check=False))
    assert "holds no documents" in line and "--streams" not in line


def test_data_error_before_the_first_step_saves_nothing_and_reruns(tmp_path):
    data = tmp_path / "ints.jsonl"
    data.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(60)))
    out = tmp_path / "run"
    args = [*TINY, "--data", str(data), "--val-docs", "0", *ONE_STEP, "--out-dir", str(out)]
    for _ in range(2):  # the same command again: not refused with "already has checkpoints"
        p = run(args, check=False)
        assert p.returncode == 2, p.stderr[-3000:]
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "no usable text" in errors[0] and "not a string" in errors[0], p.stderr[-3000:]
        assert "--resume" not in p.stdout + p.stderr and "nothing was trained or saved" in p.stdout
        assert not list(out.glob("checkpoints/*.pt"))


def test_skipped_documents_are_reported_once_then_counted_at_the_end(tmp_path):
    data = tmp_path / "half.jsonl"
    with open(data, "w") as f:
        for i in range(120):  # every other text an integer: skipped, never silently
            f.write(json.dumps({"id": f"d{i}", "text": long_text(40, i) if i % 2 else i}) + "\n")
    out = tmp_path / "run"
    p = run([*TINY, "--data", str(data), "--val-docs", "0", *ONE_STEP, "--max-steps", "3", "--out-dir", str(out)])
    notes = [ln for ln in p.stderr.splitlines() if "skipping documents" in ln]
    assert len(notes) == 1 and notes[0].startswith("warning: ") and str(data) in notes[0], p.stderr[-3000:]
    done = [ln for ln in p.stdout.splitlines() if ln.startswith("done: ")]
    assert len(done) == 1 and "documents skipped (text empty or not a string)" in done[0], p.stdout[-2000:]
    assert int(done[0].split("; ")[-1].split()[0].replace(",", "")) >= 1
    assert "skipping documents" in (out / "train.log").read_text()
