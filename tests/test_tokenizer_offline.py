"""GPT-2's ranks ship inside the tokenizer package: no network, no cache directory, checked by sha256; the package
stands alone (no gpt2stream, no torch)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer import load_tokenizer
from tokenizer.errors import TokenizerError
from tokenizer.gpt2_ranks import RANKS_FILE, RANKS_SHA256, parse_tiktoken_ranks, read_gpt2_ranks
from tokenizer.patterns import GPT2_FAST

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_file_is_r50k_base_with_its_notice():
    assert hashlib.sha256(RANKS_FILE.read_bytes()).hexdigest() == RANKS_SHA256
    assert RANKS_SHA256 == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    notice = (RANKS_FILE.parent / "NOTICE").read_text(encoding="utf-8")
    assert "MIT License" in notice and "GPT-2" in notice and RANKS_SHA256 in notice


def test_same_pattern_ids_and_identity_as_tiktoken(tiktoken_r50k):
    import tiktoken_ext.openai_public as openai_public

    tok = load_tokenizer("gpt2")
    assert GPT2_FAST == openai_public.r50k_pat_str
    assert tok.encoding._mergeable_ranks == tiktoken_r50k._mergeable_ranks
    assert (tok.identity, tok.n_vocab, tok.eot_id) == ("tiktoken:r50k_base", 50257, 50256)
    s = "Hello world <|endoftext|> it's 1234 naïve"
    assert tok.encode(s, allowed_special="all") == tiktoken_r50k.encode(s, allowed_special="all")


def test_parse_tiktoken_ranks_known_answer():
    assert parse_tiktoken_ranks(b"IQ== 0\nIg== 1\n\nIyM= 2\n") == {b"!": 0, b'"': 1, b"##": 2}


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_missing_or_damaged_file_is_one_line_tokenizer_error(tmp_path, damage):
    path = tmp_path / "r50k_base.tiktoken"
    if damage == "changed":
        path.write_bytes(RANKS_FILE.read_bytes()[:-10] + b"9999999999")
    with pytest.raises(TokenizerError) as info:
        read_gpt2_ranks(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "reinstall" in msg
    assert ("missing" if damage == "missing" else "damaged") in msg


def test_loads_with_no_network_no_cache_and_imports_nothing_of_ours(tmp_path):
    """A fresh process with an empty tiktoken cache and a dead HF_ENDPOINT: GPT-2 loads from the package alone,
    writes no cache file, and neither gpt2stream nor torch is imported."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    code = ("import sys; from tokenizer import load_tokenizer; t = load_tokenizer('gpt2'); "
            "print(t.encode('Hello world')); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gpt2stream', 'torch', 'requests'}))")
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[15496, 995]", "[]"]
    assert list(cache.iterdir()) == []


def test_tokenizer_error_is_one_line_at_the_entry_point(tmp_path):
    """The standalone package's own error type still prints as gpt2stream's one ``error:`` line, exit 2."""
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "run_train.py"), "--preset", "tiny", "--data", "demo",
                           "--tokenizer", str(bad), "--print-config"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_package_imports_nothing_of_gpt2stream():
    import ast

    for f in sorted((ROOT / "tokenizer").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("gpt2stream", "config", "torch") for n in names), (f.name, names)
