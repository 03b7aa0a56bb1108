"""The compiled DDP module under torchrun, with activation checkpointing and gradient accumulation, in one run: the
losses are those of a plain eager run, the gradient all-reduce overlaps backward (Dynamo's DDP graph split), and the
no_sync micro-steps of accumulation do not recompile from step to step."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_train_common import TINY, make_jsonl, run, train_lines


@pytest.mark.slow
def test_compiled_ddp_with_checkpointing_and_accumulation_matches_eager_without_recompiling(tmp_path, monkeypatch):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    # 256 tokens/step over 2 ranks of 2 x 32: 2 micro-steps per rank, the first under no_sync
    args = [*TINY, "--data", str(data), "--num-workers", "0", "--batch-size", "2", "--max-steps", "4",
            "--eval-every", "0", "--save-every", "0", "--val-docs", "0", "--dtype", "float32"]
    # the reference in one process (4 micro-steps): the same global batches as 2 ranks (test_train_elastic.py), and
    # less than half the CPU of a second torchrun
    run([*args, "--out-dir", str(tmp_path / "plain")])
    monkeypatch.setenv("TORCH_LOGS", "recompiles,ddp_graphs")
    p = run([*args, "--out-dir", str(tmp_path / "ac"), "--compile", "--activation-checkpointing"], nproc=2,
            timeout=600)
    assert "compile True" in p.stdout and "2 micro-steps x 2 x 32 x 2 processes" in p.stdout
    assert "done: 4 steps" in p.stdout
    assert json.loads((tmp_path / "ac" / "config.json").read_text())["train"]["activation_checkpointing"] is True
    assert "[__ddp_graphs]" in p.stderr  # Dynamo compiled through DDP and split the graph at the buckets
    recompiles = [line for line in p.stderr.splitlines() if re.search(r"[Rr]ecompil", line)]
    assert recompiles == [], "\n".join(recompiles[:5])
    la, lb = ([r for r in train_lines(tmp_path / d) if r[1] != "val"] for d in ("plain", "ac"))
    assert [r[0] for r in la] == [r[0] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb, strict=True):
        assert ra[1] == pytest.approx(rb[1], abs=1e-4)  # compiled kernels round differently from eager ones
