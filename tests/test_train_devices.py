"""Device choice and device-side reductions for multi-GPU runs, checked without a GPU (pure functions, gloo)."""

from __future__ import annotations

import pytest
import torch

from gpt2stream import distributed as D
from gpt2stream.errors import UserError
from gpt2stream.train import autocast_dtype


def test_each_local_rank_gets_its_own_gpu():
    assert [D.cuda_index("auto", r, 8, 8) for r in range(8)] == list(range(8))
    assert [D.cuda_index("cuda", r, 8, 8) for r in range(8)] == list(range(8))


def test_single_process_may_pick_a_gpu():
    assert D.cuda_index("cuda:3", 0, 1, 8) == 3
    assert D.cuda_index("cuda", 0, 1, 8) == 0


def test_explicit_gpu_under_torchrun_is_refused():
    # every rank on cuda:0 -> NCCL "Duplicate GPU detected" (or a hang) at the first collective
    with pytest.raises(UserError, match="--device cuda:0 would put all 8 processes"):
        D.cuda_index("cuda:0", 5, 8, 8)


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(UserError, match="8 processes on this node but only 4 CUDA"):
        D.cuda_index("auto", 6, 8, 4)


def test_missing_gpu_index_is_refused():
    with pytest.raises(UserError, match="has 2 CUDA device"):
        D.cuda_index("cuda:5", 0, 1, 2)


def test_local_world_size_from_env(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert D.local_world_size() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert D.local_world_size() == 8


def test_bf16_autocast_on_cuda_only_by_default():
    assert autocast_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("float32", torch.device("cuda", 0)) is None
