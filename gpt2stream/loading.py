"""The one way to load a trained model with its tokenizer: from a run directory, a checkpoint file or Hugging Face
weights (``load_source``), checked once for the tokenizer's identity. Sampling, HellaSwag and export use it; the
trainer builds its fresh model with ``gpt_from_config``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt2stream.config import ModelConfig, RunConfig, TrainConfig
from gpt2stream.errors import UserError
from gpt2stream.model import GPT
from tokenizer import Tokenizer


def gpt_from_config(m: ModelConfig) -> GPT:
    """The GPT network of a ModelConfig (weights freshly initialised from the current torch seed)."""
    if m.vocab_size is None:
        raise UserError("the model config has no vocab_size (a checkpoint written by an incompatible version)")
    return GPT(m)


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> tuple[GPT, RunConfig]:
    """(GPT in eval mode, RunConfig) from a loaded checkpoint dict."""
    cfg = RunConfig.from_dict(state["config"])
    model = gpt_from_config(cfg.model)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def check_vocab(model, tokenizer, tokenizer_spec: str) -> None:
    """The tokenizer must produce exactly the ids the model was trained on (same vocabulary size)."""
    model_vocab = model.config.vocab_size
    if tokenizer.n_vocab != model_vocab:
        raise UserError(
            f"tokenizer {tokenizer_spec!r} has {tokenizer.n_vocab} tokens but the model's vocabulary is {model_vocab}: "
            "pass the tokenizer the model was trained with (--tokenizer PATH/tokenizer.json)"
        )


@dataclass
class Loaded:
    model: GPT
    tokenizer: Tokenizer
    tokenizer_spec: str
    label: str  # what was loaded, for messages
    run_dir: Path | None  # where generated.txt goes by default
    config: RunConfig | None = None  # the training run's config (None for --init weights)


def _find_run_dir(path: Path) -> Path | None:
    """The run directory holding a checkpoint path: the nearest ancestor (or itself) with a config.json."""
    for p in [path, *path.parents][:4]:
        if p.is_dir() and (p / "config.json").is_file() and (p / "checkpoints").exists():
            return p
    return None


def _saved_tokenizer(spec: str, run_dir: Path | None) -> str:
    """The training tokenizer: its recorded path, or the copy in the run directory if the run was moved."""
    if spec != "gpt2" and not Path(spec).exists() and run_dir is not None and (run_dir / "tokenizer.json").exists():
        return str(run_dir / "tokenizer.json")
    return spec


def load_source(out_dir: str, ckpt: str, init: str, tokenizer: str, device: torch.device) -> Loaded:
    """Load the model named by exactly one of out_dir / ckpt / init, and its tokenizer; check they fit."""
    from tokenizer import load_tokenizer

    given = [n for n, v in (("--out-dir", out_dir), ("--ckpt", ckpt), ("--init", init)) if v]
    if len(given) > 1:
        raise UserError(f"give only one of --out-dir, --ckpt, --init (got {' and '.join(given)})")
    if init:
        from gpt2stream.hf_interop import load_hf_gpt2

        model = load_hf_gpt2(init)
        spec = tokenizer or _init_tokenizer(init)
        label, run_dir, identity, cfg = f"--init {init}", None, None, None
    else:
        if not out_dir and not ckpt:
            out_dir = TrainConfig().out_dir
        path = Path(ckpt or out_dir).expanduser()
        if not path.exists():
            what = "checkpoint" if ckpt else "run directory"
            raise UserError(f"{what} {str(path)!r} does not exist: train first (python run_train.py), or pass "
                            "--out-dir RUN_DIR, --ckpt PATH or --init gpt2")
        from gpt2stream.checkpoint import resolve_checkpoint

        ckpt_file, state = resolve_checkpoint(path, mmap=True)  # a run dir -> its newest valid checkpoint
        model, cfg = model_from_state(state, "cpu")
        run_dir = _find_run_dir(ckpt_file) or (path if out_dir else None)
        spec = tokenizer or _saved_tokenizer(state.get("tokenizer_spec", cfg.data.tokenizer), run_dir)
        if not tokenizer and spec != "gpt2" and not Path(spec).exists():
            raise UserError(f"the model was trained with the tokenizer {spec}, which is gone (and no tokenizer.json "
                            "is in its run directory); pass that tokenizer.json with --tokenizer PATH")
        identity = state.get("tokenizer_identity")
        label = f"{ckpt_file} (step {state['step']})"
    tok = load_tokenizer(spec)
    check_vocab(model, tok, spec)
    if identity and tok.identity != identity:
        raise UserError(f"tokenizer {spec!r} ({tok.identity}) is not the one the model was trained with ({identity}): "
                        "leave out --tokenizer, or pass the training tokenizer.json")
    model = model.to(device).eval()
    return Loaded(model, tok, spec, label, run_dir, cfg)


def _init_tokenizer(init: str) -> str:
    """A local HF directory's own tokenizer.json (python -m gpt2stream.export always writes one),
    else GPT-2's."""
    own = Path(init).expanduser() / "tokenizer.json"
    return str(own.resolve()) if own.is_file() else "gpt2"
