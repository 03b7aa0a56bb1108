"""bench/bench_train.py end to end on the tiny shape: our GPT and the bench's independent nanoGPT-style GPT-2 give the
same losses from the same weights on the same batches (the figures themselves are the benchmark's business)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_train_common import ROOT, env


@pytest.mark.slow
def test_our_gpt_and_an_independent_nanogpt_agree_step_by_step(tmp_path):
    out = tmp_path / "train.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--shapes", "tiny", "--modes", "eager",
                        "--dtypes", "float32", "--steps", "2", "--warmup", "1", "--rounds", "1", "--no-memory",
                        "--ref-vocab", "padded", "--json", str(out)], capture_output=True, text=True, env=env(),
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    (r,) = json.loads(out.read_text())
    assert r["shape"] == "tiny" and r["mode"] == "eager" and r["dtype"] == "float32"
    assert r["max_loss_diff"] <= 1e-4, r
    assert r["ours_tok_s"] > 0 and r["ref_tok_s"] > 0 and "ratio" in r
