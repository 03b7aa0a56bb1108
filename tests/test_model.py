"""The GPT-2 model: exact shape, padding never predicted, KV cache equals recomputation, optimizer groups."""

from __future__ import annotations

import pytest
import torch

from gpt2stream.config import ModelConfig
from gpt2stream.generate import KVCache, generate, sample_next
from gpt2stream.model import GPT


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, vocab_multiple=64)
    base.update(kw)
    return ModelConfig(**base)


def test_gpt2_small_has_exactly_124_439_808_parameters():
    with torch.device("meta"):  # no memory, no init cost
        model = GPT(ModelConfig(vocab_size=50257, vocab_multiple=1))
    assert model.num_params() == 124_439_808
    with torch.device("meta"):
        padded = GPT(ModelConfig(vocab_size=50257))
    assert padded.config.padded_vocab_size == 50304
    assert padded.num_params() == 124_439_808 + (50304 - 50257) * 768


def test_lm_head_is_tied_and_residual_projections_scaled():
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=8, n_embd=64, n_head=4))
    assert model.lm_head.weight is model.transformer.wte.weight
    std_proj = model.transformer.h[0].attn.c_proj.weight.std().item()
    std_fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert abs(std_fc - 0.02) < 0.003
    assert abs(std_proj - 0.02 / 4.0) < 0.002  # 1/sqrt(2 * 8)


def test_padded_vocab_is_never_scored_or_sampled():
    torch.manual_seed(0)
    model = GPT(tiny())
    with torch.no_grad():  # make the padding rows irresistible: they must still not appear
        model.transformer.wte.weight[101:] = 100.0
    idx = torch.randint(0, 101, (2, 8))
    logits, loss = model(idx, idx, return_logits=True)
    assert logits.shape == (2, 8, 101)
    assert torch.isfinite(loss)
    out = generate(model, idx, 6, temperature=1.0)
    assert int(out.max()) < 101


def test_loss_ignores_minus_one_targets():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 101, (1, 8))
    tgt = idx.clone()
    _, full = model(idx, tgt)
    tgt[0, 4:] = -1
    logits, part = model(idx, tgt, return_logits=True)
    ref = torch.nn.functional.cross_entropy(logits[0, :4], tgt[0, :4])
    assert torch.allclose(part, ref, atol=1e-6) and not torch.allclose(part, full)


def test_kv_cache_logits_and_greedy_equal_recomputation():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 101, (2, 5))
    # 30 new tokens: past the 16-token context, so the window slides too
    cached = generate(model, idx, 30, temperature=0.0, use_cache=True)
    plain = generate(model, idx, 30, temperature=0.0, use_cache=False)
    assert torch.equal(cached, plain)
    # logits of every step agree within 1e-4
    seq = cached[:, :16]
    cache = KVCache(model.config, 2, torch.device("cpu"))
    with torch.no_grad():
        full, _ = model(seq)
        model(seq[:, :7], cache=cache)
        for t in range(7, 16):
            step, _ = model(seq[:, t : t + 1], cache=cache)
            assert (step[:, 0] - full[:, t]).abs().max().item() < 1e-4


def test_sampling_is_reproducible_with_a_seed_and_respects_top_k_top_p():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    b = generate(model, idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert picks == {1, 2}
    probs_top = torch.tensor([[0.0, 10.0, 0.0, 0.0]])
    assert {int(sample_next(probs_top, 1.0, top_p=0.5, generator=g)) for _ in range(50)} == {1}


def test_stop_token_ends_generation():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.zeros(1, 3, dtype=torch.long)
    greedy_first = int(generate(model, idx, 1, temperature=0.0)[0, -1])
    out = generate(model, idx, 10, temperature=0.0, stop_token=greedy_first)
    assert out.shape[1] == 4


def test_mfu_estimate_matches_hand_computation():
    model = GPT(tiny())
    n = model.num_params() - 16 * 32
    fpt = 6 * n + 12 * 2 * 32 * 16
    assert model.flops_per_token(16) == fpt
    assert model.estimate_mfu(1000.0, 1e9) == pytest.approx(fpt * 1000.0 / 1e9)


@pytest.mark.parametrize("kw", [dict(n_layer=0), dict(n_embd=30, n_head=4), dict(dropout=1.5)])
def test_config_validation(kw):
    with pytest.raises(ValueError):
        tiny(**kw)


def _cut_loss(model: GPT, idx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The loss as a cut of the logits to the real vocabulary computes it (the reference for the masked loss)."""
    logits = model.lm_head(model.transformer.ln_f(_trunk(model, idx)))[..., : model.config.vocab_size]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-1)


def _trunk(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(idx.size(1))
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    for block in model.transformer.h:
        x = block(x)
    return x


def test_masked_loss_and_gradients_equal_the_cut_logits_in_fp32():
    torch.manual_seed(0)
    model = GPT(tiny())
    with torch.no_grad():  # padding rows that would dominate a softmax they took part in
        model.transformer.wte.weight[101:] = 3.0
    idx = torch.randint(0, 101, (3, 16))
    tgt = torch.randint(0, 101, (3, 16))
    tgt[0, :5] = -1
    logits, loss = model(idx, tgt)
    assert logits is None  # no (B, T, V) tensor outlives the training forward
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = _cut_loss(model, idx, tgt)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-6 and loss.item() > 1.0
    for n, p in model.named_parameters():
        assert (ours[n] - p.grad).abs().max().item() < 1e-6, n
    assert ours["transformer.wte.weight"][101:].abs().max().item() < 1e-6  # padding rows get no pull from the loss


def test_logits_without_targets_are_a_view_of_the_real_vocabulary():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 101, (2, 8))
    with torch.no_grad():
        logits, loss = model(idx)
        both, loss2 = model(idx, idx, return_logits=True)
    assert loss is None and logits.shape == (2, 8, 101) and logits.stride(-2) == 128  # padded row stride: no copy
    assert torch.isfinite(both).all() and torch.allclose(both, logits, atol=1e-6) and loss2 is not None


def test_no_padding_needs_no_mask():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=128))  # already a multiple of 64
    idx = torch.randint(0, 128, (2, 8))
    _, loss = model(idx, idx)
    assert abs(loss.item() - _cut_loss(model, idx, idx).item()) < 1e-6


@pytest.mark.parametrize("autocast", [False, True])
def test_kv_cache_is_kept_in_the_autocast_dtype(autocast):
    model = GPT(tiny()).eval()
    cache = KVCache(model.config, 1, torch.device("cpu"))
    idx = torch.randint(0, 101, (1, 4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(idx, cache=cache)
        logits, _ = model(idx[:, :1], cache=cache, last_only=True)
    assert cache.kv.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert cache.pos == 5 and logits.shape == (1, 1, 101)
