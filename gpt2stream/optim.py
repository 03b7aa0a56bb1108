"""The optimizer, built from the config: its parameter groups, each group's learning rate and weight decay, the
restore of those hyperparameters on resume, and the size of its state (for the memory estimate).

A new optimizer is one entry in ``BUILDERS``: a function ``(model, train config, device type) -> Optimizer`` whose
groups each carry a ``name`` and a ``base_lr``. The rest of the package only ever

- scales every group by the schedule (``set_lr``: each group at ``lr_at(step) / train.lr`` x its base lr),
- loads a checkpoint's state, the flags' hyperparameters winning over the saved ones (``load_state``),
- and asks ``state_bytes`` how much memory the state takes.

``adamw``: GPT-2's recipe (nanoGPT's ``configure_optimizers``): AdamW on everything; 2-D weights (matmuls and the
embeddings) decay, biases and LayerNorm gains don't.

``muon``: ``torch.optim.Muon`` for the 2-D weight matrices inside the blocks (attention and MLP), AdamW for the
embeddings (the token embedding is the tied LM head), LayerNorms and biases: the split of Keller Jordan's Muon,
modded-nanogpt and nanochat. Muon's learning rate is scaled per matrix by Moonshot's ``match_rms_adamw``
(Liu et al. 2025, "Muon is Scalable for LLM Training": 0.2 * sqrt(max(A, B))), so the update has AdamW's RMS and
``--muon-lr`` lives on AdamW's scale. ``--muon-qkv three`` orthogonalises the fused c_attn weight as its q, k and v
matrices (as modded-nanogpt does), ``one`` as one (3C x C) matrix; docs/training.md has the measurement.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from gpt2stream.config import TrainConfig

Groups = list[dict[str, Any]]


class SplitMuon(torch.optim.Muon):
    """``torch.optim.Muon`` where a group with ``split = k`` orthogonalises each of its weights as k equal blocks of
    rows (c_attn's q, k and v). The blocks are views of the weight, its gradient and its momentum buffer, handed to
    the update: the state is the full-size buffer, as for an unsplit weight.

    ``fp32_ns``: torch runs the Newton-Schulz iteration in bf16, which a CPU without bf16 matmul kernels (AVX2 only)
    emulates ~50x slower than fp32; there the same update runs in fp32 (``muon_update_fp32``). GPUs use torch's."""

    def __init__(self, *args: Any, fp32_ns: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fp32_ns = fp32_ns

    def _init_group(self, group, params_with_grad, grads, muon_momentum_bufs):  # type: ignore[override,unused-ignore]
        start = len(params_with_grad)
        has_complex = super()._init_group(group, params_with_grad, grads, muon_momentum_bufs)
        k = int(group.get("split", 1))
        if k > 1:
            for lst in (params_with_grad, grads, muon_momentum_bufs):
                lst[start:] = [block for t in lst[start:] for block in t.chunk(k, dim=0)]
        return has_complex

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if not self.fp32_ns:
            return super().step(closure)
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            bufs: list[torch.Tensor] = []
            self._init_group(group, params, grads, bufs)
            for p, g, buf in zip(params, grads, bufs, strict=True):
                muon_update_fp32(p, g, buf, group)
        return None


def newton_schulz_fp32(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
                       ) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iteration (Keller Jordan's coefficients), in fp32."""
    a, b, c = coefficients
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_update_fp32(p: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, group: dict[str, Any]) -> None:
    """One Muon update of ``p`` as torch.optim.Muon makes it (Nesterov momentum, orthogonalise, decoupled decay,
    match_rms_adamw scaling), the orthogonalisation in fp32."""
    m, lr = group["momentum"], group["lr"]
    buf.lerp_(grad, 1 - m)
    update = grad.lerp(buf, m) if group["nesterov"] else buf
    ortho = newton_schulz_fp32(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
    scale = 0.2 * math.sqrt(max(p.shape)) if group["adjust_lr_fn"] == "match_rms_adamw" else \
        math.sqrt(max(1.0, p.size(0) / p.size(1)))
    p.mul_(1 - lr * group["weight_decay"])
    p.add_(ortho.to(p.dtype), alpha=-lr * scale)


class Chained:
    """Several optimizers stepped as one: ``param_groups`` is every optimizer's groups (the same dicts), in order;
    the state dict keeps each one's under its position."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> Groups:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"chained": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for o, s in zip(self.optimizers, sd["chained"], strict=True):
            o.load_state_dict(s)


def _adamw(groups: Groups, t: TrainConfig, device_type: str) -> torch.optim.AdamW:
    # the fused kernel updates every tensor in one pass; torch has it for CUDA and CPU (faster on both)
    fused = device_type in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=1e-8,
                             **({"fused": True} if fused else {}))


def adamw_groups(model: torch.nn.Module, t: TrainConfig) -> Groups:
    """2-D weights decay, biases and LayerNorm gains don't (the order is the one checkpoints were written with)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"name": "decay", "params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay,
         "base_lr": t.lr},
        {"name": "no_decay", "params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "base_lr": t.lr},
    ]


def build_adamw(model: torch.nn.Module, t: TrainConfig, device_type: str) -> torch.optim.Optimizer:
    return _adamw(adamw_groups(model, t), t, device_type)


def is_block_matrix(name: str, p: torch.Tensor) -> bool:
    """A weight matrix inside a transformer block (attention or MLP): what Muon optimises."""
    return p.dim() == 2 and name.startswith("transformer.h.")


def muon_groups(model: torch.nn.Module, t: TrainConfig) -> tuple[Groups, Groups]:
    """(Muon's groups, AdamW's groups). c_attn's weights form their own group when they are split into q, k, v."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mats = [(n, p) for n, p in named if is_block_matrix(n, p)]
    split = t.muon_qkv == "three"
    qkv = [p for n, p in mats if split and n.endswith("attn.c_attn.weight")]
    rest = [p for n, p in mats if not (split and n.endswith("attn.c_attn.weight"))]
    hp = {"weight_decay": t.muon_weight_decay, "base_lr": t.muon_lr}
    muon = [{"name": "muon", "params": rest, "split": 1, **hp}]
    if qkv:
        muon.append({"name": "muon_qkv", "params": qkv, "split": 3, **hp})
    others = [(n, p) for n, p in named if not is_block_matrix(n, p)]
    adamw = [
        {"name": "embeddings", "params": [p for _, p in others if p.dim() >= 2], "weight_decay": t.weight_decay,
         "base_lr": t.lr},
        {"name": "no_decay", "params": [p for _, p in others if p.dim() < 2], "weight_decay": 0.0, "base_lr": t.lr},
    ]
    return muon, adamw


def build_muon(model: torch.nn.Module, t: TrainConfig, device_type: str) -> Chained:
    muon, adamw = muon_groups(model, t)
    opt = SplitMuon(muon, lr=t.muon_lr, momentum=t.muon_momentum, nesterov=True, adjust_lr_fn="match_rms_adamw",
                    fp32_ns=device_type != "cuda")
    return Chained(opt, _adamw(adamw, t, device_type))


BUILDERS: dict[str, Callable[[torch.nn.Module, TrainConfig, str], Any]] = {"adamw": build_adamw, "muon": build_muon}


def build_optimizer(model: torch.nn.Module, t: TrainConfig, device_type: str) -> Any:
    """The optimizer ``t.optimizer`` names, over ``model``'s parameters, its groups' lr at their ``base_lr``."""
    opt = BUILDERS[t.optimizer](model, t, device_type)
    set_lr(opt, t.lr, t.lr)
    return opt


def set_lr(optimizer: Any, lr: float, base_lr: float) -> None:
    """The schedule's ``lr`` for a run whose peak is ``base_lr`` (``--lr``): every group at its own base lr times
    the same ratio (a group whose base is ``--lr`` gets exactly ``lr``)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * (g["base_lr"] / base_lr)


def group_lrs(optimizer: Any) -> dict[str, float]:
    """{group name: its current lr} when the groups' lrs differ (a metrics record's ``lr_<group>`` fields)."""
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    return lrs if len(set(lrs.values())) > 1 else {}


def hparams(group: dict[str, Any]) -> dict[str, Any]:
    """A group's hyperparameters: everything but its parameters."""
    return {k: v for k, v in group.items() if k not in ("params", "param_names")}


def load_state(optimizer: Any, sd: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state; the hyperparameters this run was built with (its flags) win over the
    saved ones, group by group (by position: checkpoints written before groups had names have the same order)."""
    fresh = [hparams(g) for g in optimizer.param_groups]
    optimizer.load_state_dict(sd)
    for g, f in zip(optimizer.param_groups, fresh, strict=True):
        g.update(f)


def block_matrix_params(n_layer: int, n_embd: int) -> int:
    """Parameters in the blocks' weight matrices: c_attn 3C^2, attn c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2."""
    return n_layer * 12 * n_embd * n_embd


def state_bytes(optimizer: str, n_params: int, n_layer: int, n_embd: int) -> int:
    """Bytes of optimizer state for a model of ``n_params`` parameters: AdamW keeps exp_avg and exp_avg_sq (8 B per
    parameter); Muon one fp32 momentum buffer per matrix (4 B per parameter), AdamW's 8 B for the rest."""
    if optimizer == "adamw":
        return 8 * n_params
    if optimizer == "muon":
        mats = block_matrix_params(n_layer, n_embd)
        return 4 * mats + 8 * (n_params - mats)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def describe(optimizer: Any) -> list[str]:
    """One line per parameter group: its name, tensors, parameters, optimizer, base lr and weight decay."""
    lines = []
    for g in optimizer.param_groups:
        kind = "Muon" if "momentum" in g and "betas" not in g else "AdamW"
        n = sum(p.numel() for p in g["params"])
        extra = f", orthogonalised as {g['split']} blocks" if g.get("split", 1) > 1 else ""
        lines.append(f"param group {g['name']}: {kind}, {len(g['params'])} tensors, {n:,} params, lr "
                     f"{g['base_lr']:.3g}, weight decay {g['weight_decay']:g}{extra}")
    return lines
