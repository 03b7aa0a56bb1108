"""The compiled DDP module under torchrun: the gradient all-reduce overlaps backward (Dynamo's DDP graph split), and
the no_sync micro-steps of gradient accumulation do not recompile from step to step."""

from __future__ import annotations

import re

import pytest

from tests.test_train_common import TINY, make_jsonl, run


@pytest.mark.slow
def test_compiled_ddp_with_accumulation_does_not_recompile_per_step(tmp_path, monkeypatch):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    monkeypatch.setenv("TORCH_LOGS", "recompiles,ddp_graphs")
    # 256 tokens/step over 2 ranks of 2 x 32: 2 micro-steps per rank, the first under no_sync
    p = run([*TINY, "--data", str(data), "--num-workers", "0", "--compile", "--batch-size", "2", "--max-steps", "4",
             "--eval-every", "0", "--save-every", "0", "--val-docs", "0", "--out-dir", str(tmp_path / "run")],
            nproc=2, timeout=600)
    assert "compile True" in p.stdout and "2 micro-steps x 2 x 32 x 2 processes" in p.stdout
    assert "done: 4 steps" in p.stdout
    assert "[__ddp_graphs]" in p.stderr  # Dynamo compiled through DDP and split the graph at the buckets
    recompiles = [line for line in p.stderr.splitlines() if re.search(r"[Rr]ecompil", line)]
    assert recompiles == [], "\n".join(recompiles[:5])
