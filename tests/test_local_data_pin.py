"""Local data pinned like Hub data: --resume refuses files edited in place or appended to since the run started (one
line naming the file and the change), --accept-data-change goes on and says what is lost; --data-revision on local
files is an error."""

from __future__ import annotations

import json

import pytest

from gpt2stream.data import local_pin
from tests.test_train_common import TINY, make_jsonl, run

SMALL = ["--max-steps", "2", "--eval-every", "0", "--save-every", "2", "--num-workers", "0"]


@pytest.fixture
def trained(tmp_path):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=120)
    out = tmp_path / "run"
    run([*TINY, "--data", str(data), *SMALL, "--out-dir", str(out)])
    files = json.loads((out / local_pin.FILENAME).read_text())["files"]
    assert [f["path"] for f in files] == [str(data)] and files[0]["size"] == data.stat().st_size
    return data, out


def one_error_line(p) -> str:
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), p.stderr[-3000:]
    return err[0]


def refused_then_accepted(out, data, what: str, step: int) -> None:
    """A resume to ``step`` is refused in one line naming the file and its change, and goes on (saying what is
    lost) with --accept-data-change, which the run's config then records."""
    resume = ["--out-dir", str(out), "--resume", "--max-steps", str(step)]
    line = one_error_line(run(resume, check=False))
    assert str(data) in line and what in line and "--accept-data-change" in line, line
    assert not (out / "checkpoints" / f"step_{step:08d}.pt").exists()
    p = run([*resume, "--accept-data-change"])
    assert "no longer promises each document once per epoch" in p.stderr and what in p.stderr
    assert (out / "checkpoints" / f"step_{step:08d}.pt").exists()
    assert json.loads((out / "config.json").read_text())["data"]["accept_data_change"] is True


def test_resume_on_changed_local_data_is_refused_unless_accepted(trained):
    data, out = trained
    raw = data.read_bytes()
    # same size: one word in the middle of a document replaced by another of equal length
    i = raw.index(b"winter", len(raw) // 2)
    data.write_bytes(raw[:i] + b"summer" + raw[i + 6:])
    refused_then_accepted(out, data, "was edited in place", 3)
    # the run now records the files as they are; the acceptance is not inherited by the next resume
    size = data.stat().st_size
    with open(data, "ab") as f:
        f.write(b'{"id": "new", "text": "A late document."}\n')
    refused_then_accepted(out, data, f"grew from {size} to", 4)


def test_data_revision_on_local_data_is_an_error(tmp_path):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=40)
    line = one_error_line(run([*TINY, "--data", str(data), *SMALL, "--data-revision", "v1", "--out-dir",
                               str(tmp_path / "run")], check=False))
    assert "--data-revision 'v1'" in line and "local files" in line
    assert not list(tmp_path.glob("run/checkpoints/*"))  # (the run-directory lock may have made the directory)
