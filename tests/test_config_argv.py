"""The command line parsed once into the run's config: on the preset, or with --resume on the checkpoint's saved
config; vocab_size resolved by one function on a copy; run_train.py's own switches in the same parse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from config import PRESETS
from gpt2stream import config
from gpt2stream.checkpoint import assemble_config, save_checkpoint
from gpt2stream.config import Actions, load_config, parse_argv, resolve_vocab
from gpt2stream.errors import UserError
from tests.conftest import ROOT, demo_texts

SMALL = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
         "--vocab-size", "100", "--seq-len", "16", "--total-batch-size", "128"]


def _run_dir(tmp_path):
    """A run directory with one checkpoint at step 3 of a small model (its config has max_steps 7)."""
    from gpt2stream.config import ModelConfig
    from gpt2stream.model import GPT

    run = tmp_path / "run"
    cfg = load_config([*SMALL, "--max-steps", "7", "--out-dir", str(run)], PRESETS)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=100))
    state = {"step": 3, "tokens_seen": 3 * 128, "model": model.state_dict(), "optimizer": {},
             "config": cfg.to_dict(), "ranks": [{"loader": {}, "rng": {}}], "tokenizer_spec": "gpt2",
             "world_size": 1, "metrics": []}
    return run, save_checkpoint(state, run, keep_last=3)


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "run_train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _counting_parse(monkeypatch) -> list[int]:
    calls = []
    real = config.parse_flags

    def parse_flags(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(config, "parse_flags", parse_flags)
    return calls


def test_resume_parses_argv_once_and_continues_the_checkpoints_config(tmp_path, monkeypatch):
    run, path = _run_dir(tmp_path)
    calls = _counting_parse(monkeypatch)
    cfg = assemble_config(*parse_argv(["--resume", "--out-dir", str(run), "--max-steps", "9"], PRESETS))
    assert len(calls) == 1
    # the checkpoint's shape (not the default preset's), this command line's max_steps, the exact file named
    assert (cfg.model.n_embd, cfg.model.vocab_size, cfg.data.seq_len, cfg.preset) == (16, 100, 16, "tiny")
    assert (cfg.train.max_steps, cfg.train.out_dir, cfg.train.resume) == (9, str(run), str(path))


def test_resume_path_takes_the_run_directory_of_the_checkpoint(tmp_path):
    run, path = _run_dir(tmp_path)
    cfg = assemble_config(*parse_argv(["--resume", str(path)], PRESETS))
    assert (cfg.train.out_dir, cfg.train.resume, cfg.train.max_steps) == (str(run), str(path), 7)


def test_no_resume_applies_the_flags_on_the_preset(tmp_path, monkeypatch):
    calls = _counting_parse(monkeypatch)
    base, flags = parse_argv(["--max-steps", "3", "--preset", "tiny", "--resume", ""], PRESETS)
    assert flags == {"max-steps": 3, "resume": ""} and base.train.max_steps == 200  # the preset is left as it is
    cfg = assemble_config(base, flags)
    assert (cfg.preset, cfg.train.max_steps, cfg.train.resume) == ("tiny", 3, "")
    assert len(calls) == 1


def test_the_entry_points_switches_are_part_of_the_one_parse():
    actions = Actions()
    base, flags = parse_argv(["--print-config", "--preset", "tiny", "--lr", "1e-3"], PRESETS, actions)
    assert actions == Actions(print_config=True)
    assert flags == {"lr": 1e-3} and base.preset == "tiny"
    with pytest.raises(UserError, match="did you mean --print-config"):
        parse_argv(["--print-confg"], PRESETS, Actions())
    with pytest.raises(UserError, match="unknown option --print-config"):  # config alone has no such flag
        load_config(["--print-config"], PRESETS)


def test_resolve_vocab_fills_in_a_copy():
    cfg = load_config(["--preset", "tiny"], PRESETS)
    got = resolve_vocab(cfg, 300)
    assert got.model.vocab_size == 300 and cfg.model.vocab_size is None  # the caller's config is unchanged
    assert got.train == cfg.train and got.data == cfg.data
    assert resolve_vocab(got, 50257) is got  # a vocab_size given explicitly stays (the build then checks it)


def test_unknown_flag_on_resume_is_one_line_before_any_checkpoint_is_read(tmp_path):
    empty = tmp_path / "nothing-here"
    run, _ = _run_dir(tmp_path)
    for out_dir in (empty, run):
        r = _cli("--resume", "--out-dir", str(out_dir), "--max-stpes", "5")
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == ["error: unknown option --max-stpes; did you mean --max-steps?"], r.stderr
    r = _cli("--resume", "--out-dir", str(empty))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "no checkpoint in" in r.stderr, r.stderr


def test_print_config_on_resume_shows_the_config_the_run_continues_with(tmp_path):
    run, path = _run_dir(tmp_path)
    r = _cli("--resume", "--out-dir", str(run), "--max-steps", "9", "--print-config")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["model"]["n_embd"], got["model"]["vocab_size"]) == (16, 100)
    assert (got["train"]["max_steps"], got["train"]["resume"]) == (9, str(path))


def test_print_config_shows_the_vocab_size_of_a_trained_tokenizer(tmp_path):
    from tokenizer.train import train_bpe

    tok = train_bpe(demo_texts()[:50], 300, workers=1)
    tok.save(tmp_path / "tok.json")
    r = _cli("--preset", "tiny", "--tokenizer", str(tmp_path / "tok.json"), "--print-config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["vocab_size"] == tok.n_vocab == 300
