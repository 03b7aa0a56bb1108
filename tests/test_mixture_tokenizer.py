"""train_tokenizer.py --data with a mixture: the sources are interleaved by weight (each with its own text column),
small sources repeat as training repeats them, --max-docs / --max-chars still bound it, mistakes name the source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data import iter_documents
from gpt2stream.data.mixture import resolve
from tokenizer.train import train_bpe

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "train_tokenizer.py")


def jsonl(path: Path, key: str, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({key: t, "id": str(i)}) + "\n" for i, t in enumerate(texts)), "utf-8")
    return path


@pytest.fixture
def mix(tmp_path) -> Path:
    """big: 200 prose documents (key text), small: 10 code documents (key content, also an unusable one)."""
    big = jsonl(tmp_path / "big.jsonl", "text", [f"The river {i} runs past the old mill and the stone bridge."
                                                 for i in range(200)])
    small = jsonl(tmp_path / "small.jsonl", "content", [f"def f{i}(x):\n    return x * {i}\n" for i in range(10)]
                  + ["   "])
    path = tmp_path / "mix.yaml"
    path.write_text(f"sources:\n  - data: {big}\n    weight: 3\n"
                    f"  - data: {small}\n    text_column: content\n    weight: 1\n")
    return path


def data_cfg(path: Path) -> DataConfig:
    return resolve(DataConfig(data=str(path), val_docs=0))


def test_the_mixture_is_interleaved_by_weight_and_small_sources_repeat(mix):
    docs = iter_documents(data_cfg(mix))
    texts = list(docs)
    assert texts == list(iter_documents(data_cfg(mix)))  # deterministic
    code = [t.startswith("def ") for t in texts]
    chars = [0, 0]
    for t, is_code in zip(texts, code, strict=True):  # every prefix within one document per source of 3:1
        chars[is_code] += len(t)
        assert abs(chars[0] / 3 - chars[1]) <= 60, chars
    assert docs.docs_by["big"] == 200 and docs.epochs_by["big"] == 1  # the mixture ends once big is read
    assert docs.epochs_by["small"] > 2 and docs.skipped >= docs.epochs_by["small"] - 1  # its blank one per pass
    assert docs.shares().startswith("big 7") and ", small 2" in docs.shares()


def test_max_epochs_drops_a_source_and_max_docs_bounds_the_mixture(mix):
    mix.write_text(mix.read_text() + "    max_epochs: 1\n")
    docs = iter_documents(data_cfg(mix))
    texts = list(docs)
    assert docs.epochs_by["small"] == 1 and sum(t.startswith("def ") for t in texts) == 10
    assert docs.docs_by["big"] == 200  # the others go on, alone
    assert len(list(iter_documents(data_cfg(mix), max_docs=7))) == 7


def test_train_tokenizer_trains_on_the_mixture(mix, tmp_path):
    out = tmp_path / "tok.json"
    p = subprocess.run([sys.executable, SCRIPT, "--data", str(mix), "--max-chars", "3000", "--vocab-size", "300",
                        "--out", str(out), "--workers", "1"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "mixture of 2 sources:" in p.stderr and "(characters: big 7" in p.stderr, p.stderr
    expected = tmp_path / "expected.json"
    train_bpe(list(iter_documents(data_cfg(mix), max_chars=3000)), 300, workers=1).save(expected)
    assert out.read_bytes() == expected.read_bytes()
    mix.write_text(mix.read_text().replace("text_column: content", "text_column: body"))
    p = subprocess.run([sys.executable, SCRIPT, "--data", str(mix), "--vocab-size", "300", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "mixture source 'small'" in errors[0] and "no field 'body'" in errors[0], errors[0]
