"""The optimizer seam (gpt2stream/optim.py): parameter groups, each group's lr under the schedule, Muon's q/k/v split,
the restore of hyperparameters, the state size the memory estimate counts, and the refusal of the other optimizer."""

from __future__ import annotations

import pytest
import torch

from config import PRESETS
from gpt2stream.checkpoint import incompatible_fields
from gpt2stream.config import ModelConfig, TrainConfig, load_config
from gpt2stream.memory import estimate_memory
from gpt2stream.model import GPT
from gpt2stream.optim import (
    Chained,
    SplitMuon,
    build_optimizer,
    describe,
    group_lrs,
    load_state,
    set_lr,
    state_bytes,
)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=64))


def step(model: GPT, opt) -> None:
    x = torch.randint(0, 64, (2, 8))
    model(x, x)[1].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_adamw_groups_decay_only_matrices_fused_on_cpu():
    model = tiny_model()
    opt = build_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.1), "cpu")
    decay, no_decay = opt.param_groups
    assert (decay["name"], decay["weight_decay"], no_decay["weight_decay"]) == ("decay", 0.1, 0.0)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    assert opt.defaults["fused"] is True and opt.defaults["betas"] == (0.9, 0.95) and decay["lr"] == 1e-3
    assert not build_optimizer(model, TrainConfig(), "mps").defaults.get("fused")


def test_muon_takes_the_block_matrices_adamw_the_rest():
    model = tiny_model()
    t = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=4e-3, weight_decay=0.1, muon_weight_decay=0.05)
    opt = build_optimizer(model, t, "cpu")
    assert isinstance(opt, Chained) and isinstance(opt.optimizers[0], torch.optim.Muon)
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["muon", "muon_qkv", "embeddings", "no_decay"]
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups["muon_qkv"]["params"]} == {f"transformer.h.{i}.attn.c_attn.weight"
                                                                    for i in range(2)}
    assert {names[id(p)] for p in groups["embeddings"]["params"]} == {"transformer.wte.weight",
                                                                      "transformer.wpe.weight"}  # wte is lm_head
    assert all(names[id(p)].startswith("transformer.h.") for p in groups["muon"]["params"])
    every = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each once
    assert (groups["muon"]["lr"], groups["muon"]["weight_decay"], groups["embeddings"]["lr"]) == (4e-3, 0.05, 1e-3)
    assert groups["no_decay"]["weight_decay"] == 0.0
    set_lr(opt, 5e-4, t.lr)  # the schedule at half the peak: every group at half its own
    assert group_lrs(opt) == {"muon": 2e-3, "muon_qkv": 2e-3, "embeddings": 5e-4, "no_decay": 5e-4}
    lines = describe(opt)
    assert lines[1].startswith("param group muon_qkv: Muon, 2 tensors, 1,536 params") and "3 blocks" in lines[1]
    step(model, opt)
    assert len(opt.state) == len(every)


def _muon_update(w: torch.Tensor, g: torch.Tensor, split: str, fp32: bool = False) -> torch.Tensor:
    """The change one Muon step makes to a (3C x C) weight whose gradient is ``g``."""
    w = torch.nn.Parameter(w.clone())
    muon = SplitMuon([{"params": [w], "split": 3 if split == "three" else 1}], lr=0.1, weight_decay=0.1,
                     adjust_lr_fn="match_rms_adamw", fp32_ns=fp32)
    w.grad = g
    before = w.detach().clone()
    muon.step()
    return w.detach() - before


def test_qkv_split_orthogonalises_each_third_as_its_own_matrix():
    torch.manual_seed(1)
    C = 16
    w, g = torch.randn(3 * C, C), torch.randn(3 * C, C)
    three = _muon_update(w, g, "three")
    for i in range(3):  # each block's update equals Muon on that block alone
        rows = slice(i * C, (i + 1) * C)
        assert torch.allclose(three[rows], _muon_update(w[rows], g[rows], "one"), atol=1e-6)
    assert not torch.allclose(three, _muon_update(w, g, "one"), atol=1e-3)


@pytest.mark.parametrize("split", ["one", "three"])
def test_fp32_newton_schulz_is_torchs_update_up_to_bf16_rounding(split):
    torch.manual_seed(2)
    w, g = torch.randn(48, 16), torch.randn(48, 16)
    ours, torchs = _muon_update(w, g, split, fp32=True), _muon_update(w, g, split)
    assert (ours - torchs).norm() <= 0.02 * torchs.norm()


def test_load_state_keeps_the_saved_moments_and_the_flags_hyperparameters():
    model = tiny_model()
    opt = build_optimizer(model, TrainConfig(optimizer="muon", muon_momentum=0.9, beta2=0.99), "cpu")
    step(model, opt)
    saved = opt.state_dict()
    again = build_optimizer(model, TrainConfig(optimizer="muon", muon_momentum=0.8, beta2=0.9), "cpu")
    load_state(again, saved)
    assert [g["momentum"] for g in again.optimizers[0].param_groups] == [0.8, 0.8]
    assert all(g["betas"] == (0.9, 0.9) for g in again.optimizers[1].param_groups)
    mats = again.optimizers[0].param_groups[0]["params"]
    assert torch.equal(again.state[mats[0]]["momentum_buffer"], opt.state[mats[0]]["momentum_buffer"])


def test_state_bytes_is_what_the_optimizers_hold():
    for name in ("adamw", "muon"):
        model = tiny_model()
        opt = build_optimizer(model, TrainConfig(optimizer=name), "cpu")
        step(model, opt)
        held = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                   if torch.is_tensor(v) and v.dim() > 0)
        assert held == state_bytes(name, model.num_params(), 2, 16), name
    m = ModelConfig(n_layer=12, n_head=12, n_embd=768)
    adamw, muon = (estimate_memory(m, 50257, 8, 1024, optimizer=o).optimizer for o in ("adamw", "muon"))
    assert adamw - muon == 4 * 12 * 12 * 768 * 768  # Muon keeps one buffer per matrix parameter, not two


def test_a_checkpoint_of_one_optimizer_refuses_the_other():
    a = load_config(["--preset", "tiny", "--vocab-size", "50257"], PRESETS)
    b = load_config(["--preset", "tiny", "--vocab-size", "50257", "--optimizer", "muon"], PRESETS)
    assert incompatible_fields(a, b, "t", "t") == ["optimizer: checkpoint adamw, now muon"]


def test_bad_optimizer_flags_are_refused_in_one_line():
    with pytest.raises(ValueError, match="train.optimizer='sgd' is invalid: adamw or muon"):
        load_config(["--preset", "tiny", "--optimizer", "sgd"], PRESETS)
    with pytest.raises(ValueError, match="muon_qkv"):
        load_config(["--preset", "tiny", "--muon-qkv", "two"], PRESETS)


def test_print_config_lists_the_parameter_groups():
    import subprocess
    import sys

    from tests.test_train_common import RUN_TRAIN, env

    p = subprocess.run([sys.executable, RUN_TRAIN, "--preset", "tiny", "--optimizer", "muon", "--print-config"],
                       capture_output=True, text=True, env=env(), timeout=240)
    assert p.returncode == 0, p.stderr
    groups = [line for line in p.stderr.splitlines() if line.startswith("param group ")]
    assert [g.split(":")[0] for g in groups] == ["param group muon", "param group muon_qkv", "param group embeddings",
                                                 "param group no_decay"]
    assert "lr 0.008" in groups[0] and "optimizer state" in p.stderr  # tiny's tuned --muon-lr; Muon's state counted
