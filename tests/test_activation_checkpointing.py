"""--activation-checkpointing: the same losses and gradients as without it, less peak memory, and it trains
under torch.compile with DDP."""

from __future__ import annotations

import json

import pytest
import torch

from gpt2stream.config import ModelConfig
from gpt2stream.model import GPT
from gpt2stream.peakmem import peak_bytes
from tests.test_train_common import TINY, make_jsonl, run, train_lines


def _step(model: GPT, idx: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout masks in both runs
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_losses_and_gradients_equal_without_it_in_fp32(dropout):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=3, n_head=2, n_embd=32, block_size=32, vocab_size=101, dropout=dropout))
    idx = torch.randint(0, 101, (4, 33))
    loss, grads = _step(model, idx)
    model.activation_checkpointing = True
    loss_ac, grads_ac = _step(model, idx)
    assert abs(loss - loss_ac) < 1e-5
    for n in grads:
        assert (grads[n] - grads_ac[n]).abs().max().item() < 1e-5, n


def test_peak_memory_is_lower():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=256))
    idx = torch.randint(0, 256, (4, 257))
    peaks = {}
    for ac in (False, True):
        model.activation_checkpointing = ac
        model.zero_grad(set_to_none=True)
        peaks[ac], _ = peak_bytes(lambda: model(idx[:, :-1], idx[:, 1:])[1].backward())
    # 4 blocks keep ~18 (B, T, C) activations each without it, ~1 each plus one block's worth with it
    assert peaks[True] < 0.7 * peaks[False], peaks


@pytest.mark.slow
def test_trains_compiled_under_ddp_with_the_losses_of_a_plain_run(tmp_path):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    args = [*TINY, "--data", str(data), "--num-workers", "0", "--max-steps", "2", "--eval-every", "0",
            "--save-every", "0", "--dtype", "float32"]
    # the reference in one process (2 micro-steps): the same global batches as 2 ranks (test_train_elastic.py), and
    # less than half the CPU of a second torchrun
    run([*args, "--out-dir", str(tmp_path / "plain")])
    ac = run([*args, "--out-dir", str(tmp_path / "ac"), "--compile", "--activation-checkpointing"], nproc=2)
    assert "compile True" in ac.stdout and "done: 2 steps" in ac.stdout
    assert json.loads((tmp_path / "ac" / "config.json").read_text())["train"]["activation_checkpointing"] is True
    la, lb = ([r for r in train_lines(tmp_path / d) if r[1] != "val"] for d in ("plain", "ac"))
    assert [r[0] for r in la] == [r[0] for r in lb] == [1, 2]
    for ra, rb in zip(la, lb, strict=True):
        assert ra[1] == pytest.approx(rb[1], abs=1e-4)  # compiled kernels round differently from eager ones
