"""The memory estimate: exact arithmetic per term, checked against what PyTorch really allocates (MemTracker on fake
tensors, CPU), the largest micro-batch, and where it is printed (start-up is covered in tests/test_tracking.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from config import PRESETS
from gpt2stream.config import ModelConfig, TrainConfig, preset_config
from gpt2stream.memory import (
    GiB,
    estimate_memory,
    largest_dividing,
    largest_micro_batch,
    matmul_param_count,
    param_count,
    table_markdown,
    usable_bytes,
)
from gpt2stream.model import GPT
from gpt2stream.optim import build_optimizer
from tests.conftest import ROOT


def small(**kw) -> ModelConfig:
    base = dict(n_layer=3, n_head=4, n_embd=128, block_size=128, vocab_size=512, vocab_multiple=64)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_param_count_equals_the_model_for_every_preset(preset):
    m = preset_config(preset, PRESETS).model
    cfg = ModelConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size, vocab_size=50257)
    with torch.device("meta"):
        model = GPT(cfg)
    assert param_count(m.n_layer, m.n_embd, m.block_size, cfg.padded_vocab_size) == model.num_params()
    linear = sum(p.numel() for mod in model.modules() if isinstance(mod, torch.nn.Linear) for p in mod.parameters())
    assert matmul_param_count(m.n_layer, m.n_embd, cfg.padded_vocab_size) == linear


def test_each_term_by_hand_for_gpt2_124m():
    m = preset_config("gpt2-124m", PRESETS).model
    n = 124_439_808 + 47 * 768  # padded to 50304 rows
    e = estimate_memory(m, 50257, 16, 1024, bf16=True, ddp=True, gradient_as_bucket_view=False)
    assert (e.weights, e.gradients, e.optimizer, e.ddp_buckets) == (4 * n, 4 * n, 8 * n, 4 * n)
    assert e.weight_copies == 2 * (12 * (12 * 768**2 + 9 * 768) + 50304 * 768)
    tokens = 16 * 1024
    assert e.activations == tokens * (12 * (36 * 768 + 16 + 4 * 12) + 6 * 768 + 8)
    assert e.logits == tokens * (2 + 4 + 4) * 50304  # bf16 output, fp32 log-softmax, the gradient cast to bf16
    assert e.total == sum(b for _, b in e.rows())
    one = estimate_memory(m, 50257, 16, 1024, bf16=True, ddp=False)
    assert e.total - one.total == 4 * n  # DDP's buckets, nothing else
    # as the trainer wraps it: the gradients are views into the buckets, which cost nothing extra
    assert estimate_memory(m, 50257, 16, 1024, bf16=True, ddp=True) == one
    fp32 = estimate_memory(m, 50257, 16, 1024, bf16=False)
    assert fp32.weight_copies == 0 and fp32.activations == tokens * (12 * (64 * 768 + 16 + 48) + 8 * 768 + 8)


def test_activation_checkpointing_keeps_block_inputs_only():
    m = preset_config("gpt2-xl", PRESETS).model
    plain = estimate_memory(m, 50257, 8, 1024)
    ac = estimate_memory(m, 50257, 8, 1024, activation_checkpointing=True)
    tokens, C = 8 * 1024, 1600
    assert ac.activations == tokens * (48 * 4 * C + (36 * C + 16 + 4 * 25) + 6 * C + 8)
    assert ac.weight_copies == 2 * 50304 * C  # the LM head's; the blocks recast when recomputed
    assert ac.total < plain.total / 1.5 and ac.logits == plain.logits


def test_largest_micro_batch_is_the_boundary():
    m = preset_config("gpt2-medium", PRESETS).model
    for gpu in (24, 40, 80):
        b = largest_micro_batch(m, 50257, 1024, gpu * GiB)
        assert estimate_memory(m, 50257, b, 1024).total <= usable_bytes(gpu * GiB)
        assert estimate_memory(m, 50257, b + 1, 1024).total > usable_bytes(gpu * GiB)
    xl = preset_config("gpt2-xl", PRESETS).model
    assert largest_micro_batch(xl, 50257, 1024, 24 * GiB) == 0  # weights + gradients + AdamW state do not fit
    assert largest_micro_batch(xl, 50257, 1024, 40 * GiB, activation_checkpointing=True) > 2 * max(
        1, largest_micro_batch(xl, 50257, 1024, 40 * GiB))
    assert largest_dividing(23, 2**19, 1024, 1) == 16 and largest_dividing(23, 2**19, 1024, 3) == 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size=0"):
        estimate_memory(small(), 512, 0, 128)


def _measured_peak(cfg: ModelConfig, batch: int, bf16: bool, ac: bool) -> int:
    """Peak bytes PyTorch allocates over two optimizer steps of two micro-steps each, as the trainer runs them (the
    second step has AdamW's state; fake tensors: nothing is computed, every allocation is counted)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.checkpoint import checkpoint

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = GPT(cfg)
        if ac:  # per block, non-reentrant (what --activation-checkpointing does)
            for blk in model.transformer.h:
                blk.forward = (lambda f: lambda x, cache=None: checkpoint(f, x, cache, use_reentrant=False))(
                    blk.forward)
        opt = build_optimizer(model, TrainConfig(lr=1e-3), "cpu")
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))
        tracker = MemTracker()
        tracker.track_external(model, opt, x)
        with tracker:
            for _step in range(2):
                for _micro in range(2):
                    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                        _, loss = model(x, x)
                    (loss / 2).backward()
                    tracker.reset_mod_stats()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


@pytest.mark.slow
@pytest.mark.parametrize("bf16,ac", [(False, False), (True, False), (True, True)], ids=["fp32", "bf16", "bf16-ac"])
def test_estimate_is_within_a_few_percent_of_what_pytorch_allocates(bf16, ac):
    cfg = small()
    measured = _measured_peak(cfg, 4, bf16, ac)
    est = estimate_memory(cfg, cfg.vocab_size, 4, cfg.block_size, bf16=bf16, activation_checkpointing=ac).total
    # with checkpointing the recomputed block is counted on top of the logits' backward peak, which it never meets:
    # an over-estimate by that block (here 9%, about 1% at GPT-2's vocabulary)
    assert 0.98 * measured <= est <= (1.10 if ac else 1.03) * measured, (est, measured, est / measured)


def test_table_cli_prints_every_preset_computed_by_the_function():
    r = subprocess.run([sys.executable, "run_train.py", "--memory-table"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {ln.split("|")[1].strip(): ln for ln in r.stdout.splitlines() if ln.startswith("| ")}
    assert set(PRESETS) <= set(rows)
    m = preset_config("gpt2-xl", PRESETS).model
    cell = [c.strip() for c in rows["gpt2-xl"].split("|")[5:8]]  # 24, 40, 80 GB
    want = [f"{largest_micro_batch(m, 50257, 1024, g * GiB) or '-'} / "
            f"{largest_micro_batch(m, 50257, 1024, g * GiB, activation_checkpointing=True) or '-'}"
            for g in (24, 40, 80)]
    assert cell == want
    assert table_markdown({"gpt2-xl": (m, 50257)}).splitlines()[2] == rows["gpt2-xl"]
    bad = subprocess.run([sys.executable, "run_train.py", "--memory-tabel"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "error: unknown option --memory-tabel; did you mean --memory-table?" in bad.stderr, \
        bad.stderr


def test_print_config_shows_the_estimate_on_stderr_and_keeps_stdout_json():
    r = subprocess.run([sys.executable, "run_train.py", "--preset", "gpt2-large", "--dtype", "bfloat16",
                        "--batch-size", "4", "--print-config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["n_layer"] == 36
    m = preset_config("gpt2-large", PRESETS).model
    total = estimate_memory(m, 50257, 4, 1024, bf16=True).total
    assert "memory estimate per process at micro-batch 4 x 1024" in r.stderr
    assert f"= {total / GiB:.2f} GiB (bf16" in r.stderr
