"""The config a ``--resume`` run continues with: the checkpoint's own, with this command line's flags on top."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2stream.checkpoint import find_latest, resolve_checkpoint
from gpt2stream.errors import UserError


def wants_resume(argv: list[str]) -> bool:
    return any(a == "--resume" or (a.startswith("--resume=") and a != "--resume=") for a in argv)


def config_for_resume(argv: list[str], warn: Callable[[str], None] | None = None) -> Any:
    """The config to continue a run with: the checkpoint's own config, with the flags given explicitly on this command
    line applied on top (so ``--resume --max-steps 5000`` extends a run and nothing else needs repeating).

    The checkpoint is the newest valid one in --out-dir (default: the preset's out_dir) for ``--resume``, or the
    one named by ``--resume PATH``; then the run directory is --out-dir if given, else the checkpoint's. The returned
    config names that exact checkpoint in ``train.resume``. Only the config is read here (mmap: no tensor data).
    """
    from config import RunConfig, load_config, preset_config, split_preset
    from gpt2stream.cli import apply_flags, flag_table, parse_flags

    preset, rest = split_preset(argv)
    base = preset_config(preset)
    flags = parse_flags(rest, flag_table(base), optional_value={"resume": "latest"})
    target = flags.get("resume", "")
    if not target:  # --resume "" means a fresh run
        return load_config(argv)
    if target == "latest":
        out_dir = flags.get("out-dir", base.train.out_dir)
        got = find_latest(out_dir, warn=warn, mmap=True)
        if got is None:
            raise UserError(f"--resume: no checkpoint in {Path(out_dir) / 'checkpoints'}; check --out-dir "
                            f"(default for --preset {preset}: {base.train.out_dir}), or drop --resume to start anew")
        path, state = got
    else:
        path, state = resolve_checkpoint(target, warn=warn, mmap=True)
        out_dir = flags.get("out-dir", str(path.parent.parent))
    cfg = RunConfig.from_dict(state["config"])
    # shape flags are applied too, so that a conflicting one is reported by name (the compatibility check), not ignored
    apply_flags({**flags, "out-dir": out_dir, "resume": str(path)}, flag_table(cfg))
    cfg.validate()
    return cfg
