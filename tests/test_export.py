"""python -m gpt2stream.export: a checkpoint -> a directory transformers loads, with the same logits and tokens (a
trained tokenizer's export loading in transformers: test_e2e_train.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from gpt2stream.checkpoint import save_checkpoint
from gpt2stream.config import ModelConfig
from gpt2stream.model import GPT
from tests.test_checkpoint import _state
from tests.test_train_common import ROOT, env


def _export(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpt2stream.export", *map(str, args)],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)


def _run_dir(path, model, vocab_size, tokenizer_spec="gpt2"):
    """A run directory as the trainer leaves it: config.json, metrics.jsonl, checkpoints/."""
    state = _state(3, model)
    state["config"]["model"]["vocab_size"] = vocab_size
    state["config"]["data"]["tokenizer"] = state["tokenizer_spec"] = tokenizer_spec
    save_checkpoint(state, path, keep_last=1)
    (path / "config.json").write_text(json.dumps(state["config"], indent=2))
    (path / "metrics.jsonl").write_text('{"step": 3, "loss": 1.0}\n')
    return path


def test_export_checkpoint_loads_in_transformers(tmp_path, tiktoken_r50k):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257))
    run = _run_dir(tmp_path / "run", model, 50257)
    out = tmp_path / "hf"
    p = _export(run, out)
    assert p.returncode == 0, p.stderr
    assert "GPT2LMHeadModel.from_pretrained" in p.stdout and "AutoTokenizer.from_pretrained" in p.stdout
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    x = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        ours = model.eval()(x)[0]
        theirs = hf(x).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert hf.config.eos_token_id == 50256
    # GPT-2's tokenizer is written too, so AutoTokenizer gives the tokens the model was trained on
    tok = AutoTokenizer.from_pretrained(out)
    enc = tiktoken_r50k
    for text in ("Hello world", "  Héllo\n\nwörld 1234 it's<|endoftext|>x"):
        assert tok(text)["input_ids"] == enc.encode(text, allowed_special="all")
    assert tok.eos_token_id == 50256 and tok.decode(enc.encode("Hello world")) == "Hello world"


def test_export_refuses_to_write_over_a_run(tmp_path):
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=100))
    run = _run_dir(tmp_path / "run", model, 100)
    copy = tmp_path / "copy"  # another run's files (config.json with our sections only)
    copy.mkdir()
    (copy / "config.json").write_text((run / "config.json").read_text())
    before = {p: p.read_bytes() for p in [*run.rglob("*"), copy / "config.json"] if p.is_file()}
    ckpt = next((run / "checkpoints").iterdir())
    for src, out in ((run, run), (ckpt, run), (run, run / "checkpoints"), (run, copy)):
        p = _export(src, out)
        err = p.stderr.splitlines()
        assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: OUT_DIR"), p.stderr
        assert "export to a new directory" in err[0]
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p for p in [*run.rglob("*"), *copy.rglob("*")] if p.is_file()) == sorted(before)


def test_export_help_goes_to_stdout():
    p = _export("--help")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("usage: python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR")
    assert "AutoTokenizer.from_pretrained" in p.stdout and "must not be a run directory" in p.stdout


def test_export_bad_input_is_one_line(tmp_path):
    for args in ((tmp_path / "missing", tmp_path / "o"), ("only-one",), ("--bogus", "a", "b")):
        p = _export(*args)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.splitlines()) == 1, p.stderr


def test_export_keeps_the_users_own_files_unless_forced(tmp_path):
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257))
    run = _run_dir(tmp_path / "run", model, 50257)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}\n')
    (mine / "notes.txt").write_text("keep\n")
    p = _export(run, mine)
    err = p.stderr.splitlines()
    assert p.returncode == 2 and len(err) == 1 and "config.json, notes.txt" in err[0] and "--force" in err[0], p.stderr
    assert sorted(x.name for x in mine.iterdir()) == ["config.json", "notes.txt"]
    assert (mine / "config.json").read_text() == '{"my": "settings"}\n'
    # an earlier export is written over without --force; --force writes beside other files and leaves them alone
    assert _export(run, tmp_path / "hf").returncode == 0 and _export(run, tmp_path / "hf").returncode == 0
    p = _export(run, mine, "--force")
    assert p.returncode == 0, p.stderr
    assert json.loads((mine / "config.json").read_text())["model_type"] == "gpt2"
    assert (mine / "notes.txt").read_text() == "keep\n" and (mine / "model.safetensors").is_file()
