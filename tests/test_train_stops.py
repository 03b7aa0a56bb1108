"""Stops through the real entry point: a non-finite gradient norm is never applied (and never saved), and a stop
signal skips the evaluation that was due and saves at once."""

from __future__ import annotations

import math
import re

import pytest

from gpt2stream.checkpoint import find_latest, read_checkpoint
from tests.test_train_common import train_lines
from tests.test_train_failures import _args, _ckpt_steps, _run_patched


@pytest.mark.slow
def test_inf_gradient_norm_with_a_finite_loss_stops_without_stepping(tmp_path):
    out = tmp_path / "run"
    patch = (  # the loss stays finite; from step 3 on, one parameter's gradient is inf
        "import gpt2stream.train.step as S\n"
        "_orig, _n = S.accumulate, [0]\n"
        "def accumulate(parts, batches):\n"
        "    _n[0] += 1\n"
        "    if _n[0] == 3:\n"
        "        parts.model.transformer.wte.weight.register_hook(lambda g: g * float('inf'))\n"
        "    return _orig(parts, batches)\n"
        "S.accumulate = accumulate\n"
    )
    p = _run_patched(patch, _args(tmp_path, "--max-steps", "6", "--save-every", "2", "--out-dir", str(out)))
    assert p.returncode == 4, p.stdout + p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and re.search(r"the gradient norm became (inf|nan) \(loss \d+\.\d+\) at step 3", err[0])
    assert f"Last good checkpoint: step 2 ({out / 'checkpoints' / 'step_00000002.pt'})" in err[0]
    assert _ckpt_steps(out) == [2]
    state = read_checkpoint(out / "checkpoints" / "step_00000002.pt")
    assert all(math.isfinite(v.float().abs().max().item()) for v in state["model"].values())
    assert [r[0] for r in train_lines(out)] == [1, 2]


@pytest.mark.slow
def test_signal_skips_the_due_evaluation_and_saves_at_once(tmp_path):
    out = tmp_path / "run"
    patch = (  # SIGTERM arrives during step 3, whose evaluation, sample and HellaSwag are due
        "import os, signal\n"
        "import gpt2stream.train.step as S\n"
        "_orig = S.accumulate\n"
        "def accumulate(parts, batches):\n"
        "    if parts.progress.step == 2:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return _orig(parts, batches)\n"
        "S.accumulate = accumulate\n"
    )
    args = _args(tmp_path, "--max-steps", "10", "--save-every", "0", "--out-dir", str(out))
    args[args.index("--eval-every") + 1] = "1"
    p = _run_patched(patch, [*args, "--sample-every", "1", "--sample-tokens", "4"])
    assert p.returncode == 143, p.stdout + p.stderr
    assert "stopped by SIGTERM after step 3" in p.stdout
    assert "sample @ step 2" in p.stdout and "sample @ step 3" not in p.stdout
    assert train_lines(out)[-1][0] == 3 and (2, "val") == train_lines(out)[-2][:2]  # no val loss after step 3
    assert find_latest(out)[1]["step"] == 3
