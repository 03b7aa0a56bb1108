"""The presets: named sets of overrides on the run config's defaults. This is the file to read and edit.

A run is configured by a preset (``--preset gpt2-124m``, the default; ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``
or ``tiny``) plus overrides of any field (``--max-steps 100``). Edit ``PRESETS`` below to change or add a preset: a
preset is ``{field: value}`` for any field of the dataclasses in gpt2stream/config.py, which define every field,
its default and its meaning, and parse the command line (``parse_argv``, ``load_config``). ``python run_train.py
--help`` lists the fields with a preset's values; ``--print-config`` prints the resolved config, which is also saved
as ``config.json`` in the run directory and inside every checkpoint.

Example:
    >>> from gpt2stream.config import load_config
    >>> cfg = load_config(["--preset", "tiny", "--max-steps", "10"], PRESETS)
    >>> cfg.train.max_steps, cfg.model.n_layer
    (10, 4)
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

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
        "muon_lr": 8e-3,  # --optimizer muon: the best of 3e-3, 8e-3, 2e-2 in docs/training.md's sweep
        "eval_every": 50, "eval_tokens": 16384, "save_every": 100, "sample_every": 100, "sample_tokens": 32,
        "log_every": 10,
    },
}

