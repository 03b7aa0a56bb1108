"""Checkpoint files: atomic writes, keep-last-K, newest-valid lookup with fallback, load_model."""

from __future__ import annotations

import pytest
import torch

from config import load_config
from gpt2stream.checkpoint import (
    atomic_torch_save,
    find_latest,
    list_checkpoints,
    load_model,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from gpt2stream.errors import UserError
from gpt2stream.model import GPT, GPTConfig


def _state(step: int, model: GPT | None = None) -> dict:
    cfg = load_config(["--preset", "tiny", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--vocab-size", "100",
                       "--block-size", "16", "--seq-len", "16", "--total-batch-size", "128"])
    model = model or GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=100))
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
    with pytest.raises(UserError, match="unreadable"):
        read_checkpoint(p)


def test_load_model_from_run_dir_and_file(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=100))
    path = save_checkpoint(_state(7, model), tmp_path, keep_last=3)
    for where in (tmp_path, path, tmp_path / "checkpoints"):
        loaded, cfg, spec = load_model(where)
        assert not loaded.training and spec == "gpt2" and cfg.model.n_embd == 16
        x = torch.randint(0, 100, (2, 8))
        assert torch.equal(loaded(x)[0], model.eval()(x)[0])
