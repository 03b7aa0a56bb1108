"""--activation-checkpointing: the same losses and gradients as without it, and less peak memory. That it trains
under torch.compile with DDP, with the losses of a plain run, is shown by test_train_ddp_compile.py."""

from __future__ import annotations

import pytest
import torch

from gpt2stream.config import ModelConfig
from gpt2stream.model import GPT
from gpt2stream.peakmem import peak_bytes


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
