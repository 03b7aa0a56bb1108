"""cross_entropy: F.cross_entropy's loss and gradients, with one (N, V) tensor kept for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt2stream.cross_entropy import cross_entropy
from gpt2stream.peakmem import peak_bytes


def _loss_and_grad(fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    loss = fn(x * 1.0, targets)  # a non-leaf input, as the LM head's output is
    loss.backward()
    return loss.detach(), x.grad


def test_equals_torch_with_ignored_rows_and_minus_inf_columns():
    torch.manual_seed(0)
    logits = torch.randn(40, 97) * 3
    logits[:, 90:] = float("-inf")  # padding columns
    targets = torch.randint(0, 90, (40,))
    targets[::7] = -1
    ours, g_ours = _loss_and_grad(cross_entropy, logits, targets)
    ref, g_ref = _loss_and_grad(lambda x, t: F.cross_entropy(x, t, ignore_index=-1), logits, targets)
    assert abs(ours.item() - ref.item()) < 1e-6
    assert (g_ours - g_ref).abs().max().item() < 1e-7
    assert not g_ours[:, 90:].any() and not g_ours[::7].any()  # padding columns and ignored rows: no gradient


def test_bf16_logits_give_an_fp32_loss_and_a_bf16_gradient():
    torch.manual_seed(0)
    logits = torch.randn(16, 50).bfloat16()
    targets = torch.randint(0, 50, (16,))
    ours, g_ours = _loss_and_grad(cross_entropy, logits, targets)
    ref, g_ref = _loss_and_grad(lambda x, t: F.cross_entropy(x.float(), t), logits, targets)
    assert ours.dtype == torch.float32 and g_ours.dtype == torch.bfloat16
    assert abs(ours.item() - ref.item()) < 1e-6 and torch.equal(g_ours, g_ref)


def test_nothing_counted_is_nan_as_in_torch():
    loss = cross_entropy(torch.randn(3, 5), torch.full((3,), -1))
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(torch.randn(3, 5), torch.full((3,), -1), ignore_index=-1))


def test_a_second_backward_is_refused():
    x = torch.randn(4, 6, requires_grad=True)
    loss = cross_entropy(x * 1.0, torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_backward_keeps_one_logits_sized_tensor_instead_of_three():
    torch.manual_seed(0)
    N, V = 256, 4096
    targets = torch.randint(0, V, (N,))
    size = N * V * 4

    def peak(fn) -> int:
        x = torch.randn(N, V, requires_grad=True)
        return peak_bytes(lambda: fn(x * 1.0, targets).backward())[0]

    ours, ref = peak(cross_entropy), peak(F.cross_entropy)
    assert ref >= 2.9 * size and ours <= 2.1 * size, (ours / size, ref / size)
