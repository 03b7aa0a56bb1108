"""Train GPT-2 on a streamed dataset.

    python run_train.py                                  # GPT-2 124M on FineWeb-Edu sample-10BT
    python run_train.py --preset tiny --max-steps 100    # minutes on a laptop CPU
    python run_train.py --preset gpt2-medium --wandb P   # GPT-2 355M, mirrored to the W&B project P
    torchrun --nproc_per_node=8 run_train.py             # DDP on 8 GPUs
    python run_train.py --resume                         # continue from the newest valid checkpoint in --out-dir
    python run_train.py --resume auto                    # the same, or a new run if there is none (requeued jobs)
    python run_train.py --print-config                   # show the resolved config and exit
    python run_train.py --memory-table                   # largest micro-batch per preset and GPU size
    python run_train.py --plan --nproc 8 --nnodes 4      # data, Hub requests, disk, memory for that job; no training

Every config field is a flag (fields and the argv parse: gpt2stream/config.py; presets: config.py); --help lists
them.
"""

from __future__ import annotations

import sys

from config import PRESETS
from gpt2stream.cli import run_main
from gpt2stream.config import Actions, RunConfig, parse_argv, preset_shapes, resolve_vocab


def main(argv: list[str]) -> int:
    from gpt2stream import setup_signals
    from gpt2stream.console import protect_std_streams

    protect_std_streams()  # a closed terminal, tee or `| head` must never stop (or fake the end of) a run
    setup_signals.install()  # before the heavy imports: until the first step a stop signal exits at once
    actions = Actions()
    base, flags = parse_argv(["--help" if a == "-h" else a for a in argv], PRESETS, actions)
    if actions.help:
        from gpt2stream.cli import describe_flags

        print(__doc__)
        print(f"Flags, with their values in --preset {base.preset} (gpt2stream/config.py documents each field):")
        print(describe_flags(base, Actions()))
        return 0
    if actions.memory_table:
        from gpt2stream.memory import table_report

        print(table_report(preset_shapes(PRESETS)))
        return 0
    # --resume continues with the checkpoint's config; flags given here override it
    from gpt2stream.checkpoint import assemble_config
    from gpt2stream.data.mixture import for_run

    cfg = assemble_config(base, flags, warn=_warn0, say=_say0)
    cfg = for_run(cfg, "data" in flags)  # --data naming a mixture: its sources, resolved (a resume keeps its own)
    if actions.plan:
        return _plan(cfg, actions)
    if actions.print_config:
        from tokenizer import load_tokenizer

        cfg = resolve_vocab(cfg, load_tokenizer(cfg.data.tokenizer).n_vocab)  # as training resolves it
        sys.stdout.write(cfg.to_json())
        _print_mixture(cfg)
        _print_memory(cfg)
        return 0
    from gpt2stream.distributed import exit_process
    from gpt2stream.train import train

    # leave through os._exit: gloo can abort during interpreter finalization (see gpt2stream/distributed.py)
    exit_process(train(cfg))


def _plan(cfg: RunConfig, actions: Actions) -> int:
    from gpt2stream.config import ConfigError
    from gpt2stream.plan import plan_report
    from tokenizer import load_tokenizer

    if actions.nproc < 1 or actions.nnodes < 1:
        raise ConfigError(f"--nproc {actions.nproc} --nnodes {actions.nnodes}: both must be >= 1")
    cfg = resolve_vocab(cfg, load_tokenizer(cfg.data.tokenizer).n_vocab)
    text, problems, _ = plan_report(cfg, actions.nproc, actions.nnodes)
    sys.stdout.write(text)
    return 2 if problems else 0


def _print_mixture(cfg: RunConfig) -> None:
    """The resolved mixture for a person, on stderr (stdout stays the config's JSON)."""
    from gpt2stream.data.mixture import describe, entries

    if cfg.data.mixture:
        print(describe(entries(cfg.data)), file=sys.stderr)


def _print_memory(cfg: RunConfig) -> None:
    """The start-up memory estimate, on stderr so that stdout stays the config's JSON."""
    import torch

    from gpt2stream.distributed import env_world, pick_device
    from gpt2stream.memory import startup_lines, visible_gpu
    from gpt2stream.precision import autocast_dtype

    dev = pick_device(cfg.train.device)
    bf16 = autocast_dtype(cfg.train.dtype, dev) == torch.bfloat16
    for line in startup_lines(cfg, env_world()[2], bf16, visible_gpu(dev)):
        print(line, file=sys.stderr)
    for line in _param_groups(cfg):
        print(line, file=sys.stderr)


def _param_groups(cfg: RunConfig) -> list[str]:
    """The optimizer's parameter groups, from the model built on the meta device (no memory, no compute)."""
    import torch

    from gpt2stream.loading import gpt_from_config
    from gpt2stream.optim import build_optimizer, describe

    with torch.device("meta"):
        model = gpt_from_config(cfg.model)
    return describe(build_optimizer(model, cfg.train, "meta"))


def _say0(msg: str) -> None:
    from gpt2stream.distributed import env_world

    if env_world()[0] == 0:
        print(msg, flush=True)


def _warn0(msg: str) -> None:
    from gpt2stream.distributed import env_world

    if env_world()[0] == 0:
        print(f"warning: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    run_main(main, broken_pipe_ok=False)
