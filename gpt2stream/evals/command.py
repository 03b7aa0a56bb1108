"""The standalone evaluation command: one registered task on a run directory, a checkpoint or Hugging Face weights.

    python -m gpt2stream.evals hellaswag runs/gpt2-124m            # latest checkpoint of a run directory
    python -m gpt2stream.evals hellaswag runs/x/checkpoints/step_00001000.pt
    python -m gpt2stream.evals hellaswag --init gpt2               # OpenAI's weights via the Hugging Face Hub
    torchrun --nproc_per_node=8 -m gpt2stream.evals hellaswag --init gpt2

It scores with ``task.evaluate``, the call training makes every ``--evals-every`` steps.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2stream.errors import UserError


@dataclass
class EvalArgs:
    init: str = ""  # Hugging Face GPT-2 weights ("gpt2", ...) or a local HF directory, instead of a run/checkpoint
    data: str = ""  # the task's local data file; "" = its own source (HellaSwag: the cached download)
    tokenizer: str = ""  # override the checkpoint's tokenizer (gpt2 for --init)
    device: str = "auto"
    dtype: str = "auto"  # "auto" (bfloat16 on CUDA GPUs that have it, float32 elsewhere), "float32", "bfloat16"
    compile: bool = False  # torch.compile the model first
    limit: int = 0  # score only the first N examples (0 = all)
    json: bool = False  # print the result as one JSON line


USAGE = """usage: python -m gpt2stream.evals TASK RUN_DIR | CHECKPOINT | --init gpt2 [options]
  TASK               one of: {tasks}
  --data PATH        the task's local data file (default: its own source, downloaded once into the cache)
  --tokenizer SPEC   override the checkpoint's tokenizer     --device DEV  auto, cpu, cuda, cuda:N, mps
  --dtype D          auto, float32, bfloat16                 --compile     torch.compile the model
  --limit N          only the first N examples               --json        print the result as JSON
Runs under torchrun too: examples are split across the processes and the counts summed."""


def split_positional(argv: list[str], table: dict) -> tuple[list[str], list[str]]:
    """(positional arguments, flags with their values): a value follows its option even if it looks like a path."""
    positional, flags, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("--"):
            positional.append(a)
            continue
        flags.append(a)
        name = a[2:].replace("_", "-")
        if "=" not in a and name in table and table[name][1].type not in ("bool", bool) and i < len(argv):
            flags.append(argv[i])
            i += 1
    return positional, flags


def parse_args(argv: list[str]) -> tuple[str, str, EvalArgs]:
    """-> (task name, run directory or checkpoint path or "" with --init, options)."""
    from gpt2stream.cli import apply_flags, flag_table, parse_flags

    args = EvalArgs()
    table = flag_table(args)
    positional, flags = split_positional(argv, table)
    apply_flags(parse_flags(flags, table), table)
    if not positional:
        raise UserError("give a task (python -m gpt2stream.evals TASK RUN); --help lists the tasks")
    task, *sources = positional
    if len(sources) > 1:
        raise UserError(f"unexpected argument {sources[1]!r}: give one run directory or checkpoint")
    source = sources[0] if sources else ""
    if bool(source) == bool(args.init):
        raise UserError("give a run directory or checkpoint, or --init NAME (exactly one); --help for usage")
    if args.dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {args.dtype!r}: use auto, float32 or bfloat16")
    if args.limit < 0:
        raise UserError(f"--limit {args.limit}: must be >= 0 (0 = all examples)")
    return task, source, args


def report(name: str, label: str, result: dict, seconds: float, as_json: bool) -> str:
    if as_json:
        return json.dumps({**result, "model": label})
    return (f"{name} {label}: acc_norm {result['acc_norm']:.4f} (mean loss per ending token) | "
            f"acc {result['acc']:.4f} (summed loss) | {result['n']} examples | {seconds:.1f} s")


def main(argv: list[str]) -> int:
    from gpt2stream.evals import TASKS, get_task

    if "-h" in argv or "--help" in argv:
        print(USAGE.format(tasks=", ".join(sorted(TASKS))))
        return 0
    name, source, args = parse_args(argv)
    task = get_task(name)
    if source and not Path(source).expanduser().exists():
        raise UserError(f"{source!r} does not exist: give a run directory (run_train.py --out-dir) or a checkpoint "
                        "file, or --init gpt2")
    import torch

    from gpt2stream import distributed as D
    from gpt2stream.loading import load_source
    from gpt2stream.precision import autocast_dtype

    info = D.init_distributed(args.device)
    try:
        is_dir = Path(source).is_dir()
        loaded = load_source(source if is_dir else "", "" if is_dir else source, args.init, args.tokenizer,
                             info.device)
        examples = task.load(args.data, args.limit or None)
        model: Any = torch.compile(loaded.model) if args.compile else loaded.model

        def progress(done: int, correct_norm: int, correct: int) -> None:
            if info.master:
                print(f"{name} rank 0: {done} examples, acc_norm so far {correct_norm / done:.4f}",
                      file=sys.stderr, flush=True)

        t0 = time.time()
        result = task.evaluate(model, loaded.tokenizer, examples, info, autocast_dtype(args.dtype, info.device),
                               progress)
        if info.master:
            print(report(name, loaded.label, result, time.time() - t0, args.json), flush=True)
    except BaseException:
        D.shutdown(info, sync=False)  # the other ranks may have failed too: don't wait for them
        raise
    D.shutdown(info)
    return 0


def entry(argv: list[str] | None = None) -> None:
    from gpt2stream.cli import run_main
    from gpt2stream.distributed import env_world, exit_process

    if env_world()[2] > 1:  # under torchrun: leave through os._exit (gloo may abort at interpreter exit)
        try:
            run_main(main, argv)
        except SystemExit as e:
            exit_process(e.code if isinstance(e.code, int) else 1)
    run_main(main, argv)
