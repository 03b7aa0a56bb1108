"""Run configuration: the presets, and the command line that turns a preset into the run's config.

A run is configured by a preset (``--preset gpt2-124m``, the default; ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``
or ``tiny``) plus overrides of any field (``--max-steps 100``). Edit ``PRESETS`` below to change or add a preset.
The fields themselves, their defaults and what each means, are the dataclasses of gpt2stream/config.py,
re-exported here; ``python run_train.py --help`` lists them with a preset's values. The resolved config is printed
by ``--print-config`` and saved as ``config.json`` in the run directory and inside every checkpoint.

The command line is parsed once (``parse_argv``); ``assemble_config`` then applies the flags on the preset, or,
with ``--resume``, on the checkpoint's own saved config.

Example:
    >>> cfg = load_config(["--preset", "tiny", "--max-steps", "10"])
    >>> cfg.train.max_steps, cfg.model.n_layer
    (10, 4)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2stream.cli import apply_flags, flag_table, parse_flags, take_option
from gpt2stream.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    resolve_vocab,
)
from gpt2stream.errors import UserError

__all__ = ["PRESETS", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig",
           "assemble_config", "load_config", "parse_argv", "preset_config", "preset_shapes", "resolve_vocab",
           "split_preset"]

# Presets are overrides on top of the defaults, which are GPT-2 124M on FineWeb-Edu sample-10BT.
#
# The larger GPT-2 shapes are OpenAI's (gpt2-medium/-large/-xl: 354,823,168 / 774,030,080 / 1,557,611,200 parameters
# at vocab 50257). Their optimisation follows the GPT-3 paper (Brown et al. 2020, "Language Models are Few-Shot
# Learners", Table 2.1 and Appendix B) for the nearest size: peak lr and batch in tokens from Table 2.1, warmup over
# the first 375M tokens, cosine decay to 10% of the peak lr. A run is one pass over sample-10BT (10B tokens), as
# for gpt2-124m.
#   gpt2-medium 355M ~ GPT-3 Medium 350M (the same 24 x 1024 shape): lr 3.0e-4, batch 0.5M tokens
#   gpt2-large  774M ~ GPT-3 Large  760M:                            lr 2.5e-4, batch 0.5M tokens
#   gpt2-xl     1.56B ~ GPT-3 XL   1.3B:                             lr 2.0e-4, batch 1M tokens
# The micro-batch (per GPU) fits an 80 GB GPU by gpt2stream/memory.py's estimate with room to spare, in bf16 and
# without activation checkpointing; the start-up log prints the largest one that fits the GPU actually present.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": {},
    # warmup 715 = 375M / 2**19 tokens, max_steps 19073 = 10B / 2**19; min_lr = lr / 10
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "out_dir": "runs/gpt2-medium", "batch_size": 32,
                    "total_batch_size": 2**19, "lr": 3.0e-4, "min_lr": 3.0e-5, "warmup_steps": 715,
                    "max_steps": 19073},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "out_dir": "runs/gpt2-large", "batch_size": 16,
                   "total_batch_size": 2**19, "lr": 2.5e-4, "min_lr": 2.5e-5, "warmup_steps": 715,
                   "max_steps": 19073},
    # warmup 358 = 375M / 2**20 tokens, max_steps 9536 = 10B / 2**20
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "out_dir": "runs/gpt2-xl", "batch_size": 8,
                "total_batch_size": 2**20, "lr": 2.0e-4, "min_lr": 2.0e-5, "warmup_steps": 358, "max_steps": 9536},
    # Trains in minutes on a 2-core CPU: for demos, smoke tests and the test suite.
    "tiny": {
        "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128,
        "seq_len": 128, "shuffle_buffer": 1000, "block_buffer": 1024, "num_workers": 1, "val_docs": 200,
        "out_dir": "runs/tiny", "max_steps": 200, "batch_size": 8, "total_batch_size": 2048,
        "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 20, "compile": False,
        "eval_every": 50, "eval_tokens": 16384, "save_every": 100, "sample_every": 100, "sample_tokens": 32,
        "log_every": 10,
    },
}


def preset_config(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = RunConfig(preset=name)
    table = flag_table(cfg)
    apply_flags({k.replace("_", "-"): v for k, v in copy.deepcopy(PRESETS[name]).items()}, table)
    cfg.validate()
    return cfg


def preset_shapes() -> dict[str, tuple[ModelConfig, int]]:
    """{preset: (its model shape, its vocabulary size)}, for the memory table (gpt2stream/memory.py)."""
    out = {}
    for name in PRESETS:
        m = preset_config(name).model
        out[name] = (m, m.vocab_size or 50257)  # presets train GPT-2's tokenizer: 50257 tokens
    return out


def split_preset(argv: list[str]) -> tuple[str, list[str]]:
    """(preset name, the other flags): presets apply before any other override, wherever --preset stands."""
    preset, rest = take_option(argv, "preset", ": " + ", ".join(PRESETS))
    return preset or "gpt2-124m", rest


def parse_argv(argv: list[str], options: Any = None) -> tuple[RunConfig, dict[str, Any]]:
    """The command line, parsed once: (the preset's config, {flag: typed value} for every other flag given).

    ``options``, a dataclass of an entry point's own switches (``--print-config``), gets its flags set and they are
    left out of the dict. A bad flag raises UserError before anything is read.
    """
    preset, rest = split_preset(argv)
    base = preset_config(preset)
    table = flag_table(base, *([options] if options is not None else []))
    del table["preset"]
    flags = parse_flags(rest, table, optional_value={"resume": "latest"})
    own = {k: v for k, v in flags.items() if table[k][0] is options}
    apply_flags(own, table)
    return base, {k: v for k, v in flags.items() if k not in own}


def with_flags(cfg: RunConfig, flags: dict[str, Any]) -> RunConfig:
    """``cfg`` with the parsed ``flags`` applied, validated."""
    apply_flags(flags, flag_table(cfg))
    cfg.validate()
    return cfg


def load_config(argv: list[str]) -> RunConfig:
    """The preset named by --preset (default gpt2-124m) with every other flag applied on top, validated.
    ``--resume`` is only recorded here; ``assemble_config`` continues from the checkpoint's config."""
    return with_flags(*parse_argv(argv))


def torchrun_restart() -> int:
    """How many times torchrun has restarted this worker group (TORCHELASTIC_RESTART_COUNT; 0 outside torchrun)."""
    raw = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(raw) if raw.isdigit() else 0


def resume_target(base: RunConfig, flags: dict[str, Any]) -> str:
    """``--resume`` as given, except in a worker group torchrun restarted (``--max-restarts``): the same command
    line must continue the job, so the newest checkpoint of its run directory wins when there is one ("auto")."""
    target = flags.get("resume", "")
    if not torchrun_restart() or target in ("latest", "auto"):
        return target
    from gpt2stream.checkpoint import has_checkpoints

    out_dir = flags.get("out-dir") or (str(Path(target).parent.parent) if target else base.train.out_dir)
    return "auto" if has_checkpoints(out_dir) or not target else target


def assemble_config(base: RunConfig, flags: dict[str, Any], warn: Callable[[str], None] | None = None,
                    say: Callable[[str], None] | None = None) -> RunConfig:
    """The config a run starts with: ``flags`` (from ``parse_argv``) on the preset ``base``; with ``--resume``, on
    the checkpoint's own config instead (so ``--resume --max-steps 5000`` extends a run and nothing else needs
    repeating).

    The checkpoint is the newest valid one in --out-dir (default: the preset's out_dir) for ``--resume`` (or
    ``--resume auto``, which starts a new run where there is none, ``say``ing which), or the one named by
    ``--resume PATH``; then the run directory is --out-dir if given, else the checkpoint's. The returned config
    names that exact checkpoint in ``train.resume``. Only the config is read (mmap: no tensor data).
    """
    target = resume_target(base, flags)
    if not target:  # --resume "" means a fresh run
        return with_flags(base, flags)
    from gpt2stream.checkpoint import find_latest, resolve_checkpoint

    if target in ("latest", "auto"):
        out_dir = flags.get("out-dir", base.train.out_dir)
        got = find_latest(out_dir, warn=warn, mmap=True)
        if got is None and target == "auto":
            (say or print)(f"--resume auto: no checkpoint in {Path(out_dir) / 'checkpoints'}: starting a new run")
            return with_flags(base, {**flags, "resume": ""})
        if got is None:
            raise UserError(f"--resume: no checkpoint in {Path(out_dir) / 'checkpoints'}; check --out-dir "
                            f"(default for --preset {base.preset}: {base.train.out_dir}), use --resume auto to start "
                            "anew when there is none, or drop --resume")
        path, state = got
        if target == "auto":
            why = f"torchrun restart {torchrun_restart()}" if torchrun_restart() else "--resume auto"
            (say or print)(f"{why}: continuing from {path} (step {state['step']})")
    else:
        path, state = resolve_checkpoint(target, warn=warn, mmap=True)
        out_dir = flags.get("out-dir", str(path.parent.parent))
    # shape flags are applied too, so that a conflicting one is reported by name (the compatibility check), not ignored
    return with_flags(RunConfig.from_dict(state["config"]), {**flags, "out-dir": out_dir, "resume": str(path)})
