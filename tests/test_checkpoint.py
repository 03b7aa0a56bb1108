"""Checkpoint files: atomic writes, keep-last-K, newest-valid lookup with fallback, loading the model back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from config import PRESETS
from gpt2stream.checkpoint import (
    atomic_torch_save,
    find_latest,
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from gpt2stream.config import ModelConfig, load_config
from gpt2stream.errors import UserError
from gpt2stream.model import GPT


def _state(step: int, model: GPT | None = None, vocab: int = 100) -> dict:
    cfg = load_config(["--preset", "tiny", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
                       "--vocab-size", str(vocab), "--seq-len", "16", "--total-batch-size", "128"], PRESETS)
    model = model or GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=100))
    return {"step": step, "tokens_seen": step * 128, "model": model.state_dict(), "optimizer": {},
            "config": cfg.to_dict(), "ranks": [{"loader": {}, "rng": {}}], "tokenizer_spec": "gpt2",
            "world_size": 1, "metrics": [{"step": step, "loss": 1.0}]}


def test_save_keeps_last_k_and_finds_newest(tmp_path):
    for s in (1, 2, 3, 4):
        save_checkpoint(_state(s), tmp_path, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 4]
    path, state = find_latest(tmp_path)
    assert path.name == "step_00000004.pt" and state["step"] == 4
    assert find_latest(tmp_path / "nothing-here") is None


def test_corrupt_newest_warns_and_falls_back(tmp_path):
    for s in (1, 2):
        save_checkpoint(_state(s), tmp_path, keep_last=3)
    newest = tmp_path / "checkpoints" / "step_00000002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    warnings = []
    path, state = find_latest(tmp_path, warn=warnings.append)
    assert state["step"] == 1 and path.name == "step_00000001.pt"
    assert len(warnings) == 1 and "step_00000002.pt is unreadable" in warnings[0]
    (tmp_path / "checkpoints" / "step_00000001.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no valid checkpoint"):
        find_latest(tmp_path, warn=warnings.append)


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.ones(3)}, target)
    good = target.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # part of the bytes reach the temp file, then the disk is "full"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"a": torch.zeros(1000)}, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path):
    save_checkpoint(_state(1), tmp_path, keep_last=3)
    stale = tmp_path / "checkpoints" / ".tmp-step_00000002.pt.999"
    stale.write_bytes(b"half a checkpoint")
    assert find_latest(tmp_path)[1]["step"] == 1
    save_checkpoint(_state(2), tmp_path, keep_last=3)
    assert not stale.exists()


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, p)
    with pytest.raises(UserError, match="not a gpt2stream checkpoint"):
        read_checkpoint(p)
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(UserError, match="no checkpoint in"):
        resolve_checkpoint(tmp_path)


def test_weights_only_refuses_pickled_code(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "gpt2stream-checkpoint", "obj": object()}, p)
    with pytest.raises(UserError, match="not a gpt2stream checkpoint .*could run code"):
        read_checkpoint(p)


def test_load_model_from_run_dir_and_file(tmp_path):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257))
    path = save_checkpoint(_state(7, model, vocab=50257), tmp_path, keep_last=3)
    from gpt2stream.loading import load_source

    for where in (tmp_path, path, tmp_path / "checkpoints"):
        is_file = where.is_file()
        got = load_source("" if is_file else str(where), str(where) if is_file else "", "", "", torch.device("cpu"))
        loaded, cfg, spec = got.model, got.config, got.tokenizer_spec
        assert not loaded.training and spec == "gpt2" and cfg.model.n_embd == 16
        x = torch.randint(0, 50257, (2, 8))
        assert torch.equal(loaded(x)[0], model.eval()(x)[0])


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "mmap" not in msg and "_use_new_zipfile" not in msg and "miniz" not in msg, msg
    return msg


def _run_and_cut_copy(tmp_path):
    """A run directory with one checkpoint and a config.json, plus a copy of the checkpoint cut in half."""
    run = tmp_path / "run"
    path = save_checkpoint(_state(1), run, keep_last=3)
    (run / "config.json").write_text('{"model": {}}')
    cut = tmp_path / "t.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return run, path, cut


def test_bad_checkpoint_files_say_what_is_wrong_and_what_to_do(tmp_path):
    run, path, cut = _run_and_cut_copy(tmp_path)
    for mmap in (False, True):  # the sampler and the trainer load with mmap=True
        msg = _one_line_error(resolve_checkpoint, cut, mmap=mmap)
        assert "is unreadable: the file is truncated or corrupt" in msg and "use an earlier checkpoint" in msg
        assert "fall back to the newest valid checkpoint automatically" in msg
        (tmp_path / "g.pt").write_text("x\n")
        msg = _one_line_error(resolve_checkpoint, tmp_path / "g.pt", mmap=mmap)
        assert msg.startswith(f"{tmp_path / 'g.pt'} is not a checkpoint") and "give a run directory" in msg
        # a file of the run where the run directory belongs (--out-dir RUN/config.json)
        msg = _one_line_error(resolve_checkpoint, run / "config.json", mmap=mmap)
        assert "is not a checkpoint (a JSON file)" in msg and f"give the run directory {run} " in msg
        (tmp_path / "empty.pt").write_bytes(b"")
        msg = _one_line_error(read_checkpoint, tmp_path / "empty.pt", mmap=mmap)
        assert "empty (truncated)" in msg and "use an earlier checkpoint" in msg
    # inside a run the fallback warning says what is wrong; the final error says what to do
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    warnings = []
    msg = _one_line_error(find_latest, run, warn=warnings.append, mmap=True)
    assert warnings == [f"checkpoint {path} is unreadable: the file is truncated or corrupt (an interrupted save or "
                        "copy); trying the previous checkpoint"]
    assert msg.startswith(f"no valid checkpoint in {run / 'checkpoints'}") and "restore a checkpoint" in msg


@pytest.mark.slow
def test_sampler_reports_a_bad_checkpoint_in_one_line(tmp_path):
    from tests.test_train_common import ROOT, env

    run, _, cut = _run_and_cut_copy(tmp_path)
    for args, expected in ((["--ckpt", str(cut)], "truncated or corrupt"),
                           (["--out-dir", str(run / "config.json")], f"give the run directory {run} ")):
        p = subprocess.run([sys.executable, str(ROOT / "run_sample.py"), *args, "--prompt", "x"],
                           capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=120)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and expected in p.stderr, p.stderr
        assert p.stderr.rstrip().endswith("automatically" if "--ckpt" in args else "run/checkpoints"), p.stderr
