"""train_tokenizer.py end to end, as a user runs it: local files, the Hub (local test server), errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers

from gpt2stream.errors import UserError
from gpt2stream.tokenizer_cli import main as cli_main
from tokenizer import Tokenizer
from tokenizer.errors import TokenizerError
from tokenizer.train import train_bpe

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "train_tokenizer.py")

DOCS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and we'll see 1,234 foxes!",
    "Unicode: café, naïve, Straße, Привет, 日本語のテキスト, 한국어, emoji 😀👍🏽.",
    "Whitespace   runs\t\tand\n\n\nnewlines   \n",
    "",  # unusable: skipped
    "Numbers 0 1 22 333 4444 55555 and the fox again, the fox, the dog.",
] * 4


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def jsonl_file(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": str(i)}) + "\n" for i, d in enumerate(DOCS)), "utf-8")
    return path


@pytest.mark.slow
def test_must_show_corpus_vocab_8192(corpus_dir, corpus_text, tmp_path):
    """python train_tokenizer.py --data ../shared/corpus --vocab-size 8192 --out /tmp/t.json"""
    out = tmp_path / "t.json"
    proc = run(["--data", str(corpus_dir), "--vocab-size", "8192", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "chars read" in proc.stderr and "distinct" in proc.stderr and "merges: 7935" in proc.stderr
    assert "wrote" in proc.stderr and "8192 tokens" in proc.stderr
    tok = Tokenizer.from_file(out)
    hf = tokenizers.Tokenizer.from_file(str(out))
    assert tok.n_vocab == hf.get_vocab_size() == 8192 and tok.eot_id == 8191
    text = corpus_text[:200_000]
    ids = tok.encode_ordinary(text)
    assert ids == hf.encode(text).ids
    assert tok.decode(ids) == text
    # an 8k English vocabulary compresses well: > 3.5 bytes/token on prose (FineWeb-Edu), > 3.2 on verse (the demo
    # plays, short lines and speaker names: 3.35 measured)
    prose = (corpus_dir / "fineweb_edu_sample.txt").exists()
    assert len(text.encode()) / len(ids) > (3.5 if prose else 3.2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_local_jsonl_equals_in_process_training(jsonl_file, tmp_path):
    out = tmp_path / "cli.json"
    proc = run(["--data", str(jsonl_file), "--vocab-size", "400", "--pattern", "gpt4", "--out", str(out)],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "from 16 documents" in proc.stderr and "4 unusable skipped" in proc.stderr
    expected = tmp_path / "expected.json"
    train_bpe([d for d in DOCS if d], 400, pattern="gpt4", workers=1).save(expected)
    assert out.read_bytes() == expected.read_bytes()


def test_parquet_with_limits_and_workers_is_deterministic(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": DOCS * 10, "id": [str(i) for i in range(len(DOCS) * 10)]}), path,
                   row_group_size=25)
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.json"
        cli_main(["--data", str(path), "--text-column", "body", "--max-docs", "50", "--vocab-size", "350",
                  "--workers", workers, "--out", str(out), "--quiet"])
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    first50 = [d for d in DOCS * 10 if d][:50]
    expected = tmp_path / "expected.json"
    train_bpe(first50, 350, workers=1).save(expected)
    assert outs[0] == expected.read_bytes()


def test_max_chars_and_txt_paragraphs(tmp_path):
    txt = tmp_path / "book.txt"
    txt.write_text("\n\n".join(d for d in DOCS if d), encoding="utf-8")
    out = tmp_path / "t.json"
    cli_main(["--data", str(txt), "--txt-docs", "paragraph", "--max-chars", "300", "--vocab-size", "300",
              "--out", str(out), "--quiet"])
    assert Tokenizer.from_file(out).n_vocab == 300


@pytest.mark.slow
def test_hub_through_local_test_server(hub_server, tmp_path):
    out = tmp_path / "hub.json"
    proc = run(["--data", "HuggingFaceFW/fineweb-edu", "--data-config", "sample-10BT", "--vocab-size", "600",
                "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: no --max-chars or --max-docs" in proc.stderr  # a whole Hub dataset can be huge: say so
    texts = [t for t in hub_server.fixture.texts("sample-10BT") if isinstance(t, str) and t.strip()]
    assert f"from {len(texts)} documents" in proc.stderr, proc.stderr
    expected = tmp_path / "expected.json"
    train_bpe(texts, 600, workers=1).save(expected)
    assert out.read_bytes() == expected.read_bytes()
    assert hub_server.total_bytes_served() > 0


def test_error_vocab_too_small(tmp_path, jsonl_file):
    proc = run(["--data", str(jsonl_file), "--vocab-size", "256", "--out", str(tmp_path / "t.json")], cwd=tmp_path)
    assert_one_line_error(proc, "--vocab-size 256", "257")
    assert not (tmp_path / "t.json").exists()


def test_error_empty_corpus(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "   "}) + "\n", encoding="utf-8")
    proc = run(["--data", str(empty), "--out", str(tmp_path / "t.json")], cwd=tmp_path)
    assert_one_line_error(proc, "empty")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "/nonexistent/dir/x.txt"], ["does not exist"]),
        (["--max-docs", "0"], ["--max-docs"]),
        (["--workers", "0"], ["--workers"]),
        (["--vocab-size", "99999999"], ["--vocab-size"]),
        (["--out", "/nonexistent/dir/t.json"], ["--out"]),
        (["--max-chars", "12x"], ["--max-chars", "'12x'"]),
        (["--max-chars", "1.5"], ["whole number"]),
        (["--pattern", "gpt5"], ["--pattern", "gpt5"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_bad_arguments_are_user_errors(args, words, jsonl_file):
    argv = ["--data", str(jsonl_file), "--quiet", *args] if "--data" not in args else ["--quiet", *args]
    with pytest.raises(UserError) as info:
        cli_main(argv)
    for w in words:
        assert w in str(info.value)


def test_count_flags_accept_units():
    from gpt2stream.tokenizer_cli import build_parser

    args = build_parser().parse_args(["--max-chars", "2G", "--max-docs", "1e5"])
    assert (args.max_chars, args.max_docs) == (2_000_000_000, 100_000)


def test_flag_error_is_one_line_exit_2(tmp_path):
    assert_one_line_error(run(["--pattern", "gpt5"], cwd=tmp_path), "--pattern")


def test_existing_output_untouched_on_error(tmp_path, jsonl_file):
    out = tmp_path / "t.json"
    out.write_text("precious", encoding="utf-8")
    with pytest.raises(UserError):
        cli_main(["--data", str(tmp_path / "missing.jsonl"), "--out", str(out), "--quiet"])
    assert out.read_text(encoding="utf-8") == "precious"


def test_out_is_a_directory_is_one_line_error(tmp_path, jsonl_file):
    (tmp_path / "outdir").mkdir()
    proc = run(["--data", str(jsonl_file), "--vocab-size", "300", "--quiet", "--out", "outdir"], cwd=tmp_path)
    assert_one_line_error(proc, "--out", "directory")
    assert list((tmp_path / "outdir").iterdir()) == []


def test_unwritable_target_is_user_error_and_leaves_no_temp_file(tmp_path):
    (tmp_path / "taken").mkdir()
    tok = train_bpe(DOCS, 300, workers=1)
    with pytest.raises(TokenizerError, match="directory"):
        tok.save(tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_output_file_mode_follows_umask(tmp_path, jsonl_file):
    """A tokenizer is shared with other users and machines: not the 0600 of a temp file."""
    import os

    old = os.umask(0o022)
    try:
        cli_main(["--data", str(jsonl_file), "--vocab-size", "300", "--quiet", "--out", str(tmp_path / "t.json")])
    finally:
        os.umask(old)
    assert (tmp_path / "t.json").stat().st_mode & 0o777 == 0o644


def test_shell_expanded_glob_names_the_fix(tmp_path, jsonl_file):
    other = tmp_path / "docs2.jsonl"
    other.write_text(jsonl_file.read_text("utf-8"), "utf-8")
    proc = run(["--data", str(jsonl_file), str(other), "--out", str(tmp_path / "t.json")], cwd=tmp_path)
    assert_one_line_error(proc, "quote the glob")
    assert not (tmp_path / "t.json").exists()


def test_missing_local_file_is_exactly_one_line(tmp_path):
    """No 'reading all of the Hub dataset' note before the error: a missing file is not a Hub id."""
    proc = run(["--data", "missing.jsonl", "--out", str(tmp_path / "t.json")], cwd=tmp_path)
    assert_one_line_error(proc, "missing.jsonl", "does not exist")


def test_cli_does_not_import_torch(tmp_path, jsonl_file):
    """The README's CLI memory figure assumes it: PyTorch costs ~1 s and ~200 MiB that tokenizer training never uses."""
    argv = ["--data", str(jsonl_file), "--vocab-size", "300", "--quiet", "--out", str(tmp_path / "t.json")]
    code = (f"import sys; from gpt2stream.tokenizer_cli import main; main({argv!r}); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
