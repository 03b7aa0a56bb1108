"""Checkpoints: the file format and key names, atomic save, keep-last-K, the choice of the file to resume (newest
valid one, with fallback), the one compatibility check, and the config a resumed run starts with (``assemble_config``:
the checkpoint's saved config with the command line's flags on top). gpt2stream/loading.py turns one into a model.

Layout (inside the run directory)::

    checkpoints/step_00000100.pt     one file per checkpoint, written by rank 0
    checkpoints/.tmp-step_...pt.PID   a save in progress (never read; removed by the next save)

A checkpoint is a ``torch.save`` dict (built by ``assemble``, keys below) holding the model, optimizer and schedule
state, the step and tokens seen, every rank's data-loader and RNG state, the resolved config, the tokenizer identity
and the metrics history the plots need. It is written to a temporary file in the same directory, fsynced, and renamed
over its final name (then the directory is fsynced), so a crash or a full disk at any moment leaves either the
complete new file or no new file -- earlier checkpoints are never touched until a newer one is complete.
Loading uses ``torch.load(weights_only=True)``: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from gpt2stream.config import RunConfig, with_flags
from gpt2stream.errors import UserError

FORMAT = "gpt2stream-checkpoint"
VERSION = 1
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8})\.pt$")
REQUIRED_KEYS = ("format", "version", "step", "tokens_seen", "model", "optimizer", "config", "ranks")
# one copy in the file: rank 0's (equal on all ranks; "trackers" holds rank 0's W&B run id)
SHARED_PARTS = ("model", "optimizer", "schedule", "metrics", "trackers")
RANK_PARTS = ("loader", "rng")  # one per rank, in rank order: state["ranks"][rank][part]
# Fields that must match the checkpoint: they change the shapes of the saved tensors or what the token ids mean.
_OPTIONAL_DEFAULTS: dict[str, Any] = {"schedule": {}, "metrics": [], "trackers": {}}
_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "vocab_multiple")


class Stateful(Protocol):
    """Everything a checkpoint holds: the model, the optimizer, the schedule, the metrics history, the progress, each
    rank's loader and RNG states."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, sd: Any) -> Any: ...


def assemble(shared: Mapping[str, Stateful], ranks: list[dict[str, Any]], progress: dict[str, int],
             meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict: ``shared`` parts by name (SHARED_PARTS), every rank's RANK_PARTS states, the progress
    (step, tokens_seen) and the run's description (config, tokenizer identity/spec, world size)."""
    unknown = set(shared) - set(SHARED_PARTS)
    if unknown:
        raise ValueError(f"not checkpoint parts: {sorted(unknown)}")
    return {**progress, **{k: v.state_dict() for k, v in shared.items()}, "ranks": ranks, **meta}


def restore_parts(state: dict[str, Any], shared: Mapping[str, Stateful], mine: Mapping[str, Stateful],
                  rank: int) -> None:
    """Load every part from a checkpoint dict: ``shared`` from the single copy, ``mine`` from this rank's entry."""
    for k, part in shared.items():
        part.load_state_dict(state[k] if k in REQUIRED_KEYS else state.get(k, _OPTIONAL_DEFAULTS[k]))
    for k, part in mine.items():
        part.load_state_dict(state["ranks"][rank][k])


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def has_checkpoints(run_dir: str | Path) -> bool:
    return bool(list_checkpoints(Path(run_dir) / CKPT_DIR))


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete-looking checkpoint files, oldest first."""
    found = []
    try:
        if not ckpt_dir.is_dir():
            return []
        for p in ckpt_dir.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
    except OSError:  # a path that cannot even be looked up (name too long) holds no checkpoint
        return []
    return sorted(found)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # some filesystems / platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside ``path``, fsync, rename. On any error the temp file is removed and the error
    re-raised; ``path`` (if it existed) is untouched."""
    tmp = path.parent / f".tmp-{path.name}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as e:  # the zip writer reports a failed write (ENOSPC, EFBIG) as RuntimeError
                raise OSError(f"writing {tmp.name} failed: {str(e).splitlines()[0][:200]}") from e
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, keep_last: int) -> Path:
    """Write ``state`` as checkpoints/step_N.pt atomically, then delete all but the newest ``keep_last``."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".tmp-*"):  # left by a process that was killed mid-save
        try:
            stale.unlink()
        except OSError:
            pass
    state = {"format": FORMAT, "version": VERSION, **state}
    path = ckpt_dir / checkpoint_name(int(state["step"]))
    atomic_torch_save(state, path)
    for _, old in list_checkpoints(ckpt_dir)[:-keep_last]:
        try:
            old.unlink()
        except OSError:
            pass
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # every torch.save file since torch 1.6 is a zip archive


def _run_dir_of(path: Path) -> Path | None:
    """The run directory a file sits in (beside config.json or inside checkpoints/), if it looks like one."""
    for d in (path.parent, path.parent.parent):
        if (d / CKPT_DIR).is_dir():
            return d
    return None


def _where_to_look(path: Path) -> str:
    run = _run_dir_of(path)
    if run is not None:
        return f"give the run directory {run} (its newest valid checkpoint is used) or a file in {run / CKPT_DIR}"
    return "give a run directory (its newest valid checkpoint is used) or a checkpoints/step_*.pt file"


def _load(path: Path, mmap: bool) -> dict[str, Any]:
    """torch.load + format checks; UserError saying only what is wrong (callers add what to do)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if not head:
        raise UserError(f"checkpoint {path} is unreadable: the file is empty (truncated)")
    if head != _ZIP_MAGIC:  # checked first: torch's own message for this (with mmap) is about zipfile serialization
        kind = "a JSON file" if head[:1] in (b"{", b"[") else "not a torch.save archive"
        raise UserError(f"{path} is not a checkpoint ({kind})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:  # weights_only refused a global: code or foreign objects, never ours
        raise UserError(f"{path} is not a gpt2stream checkpoint (it holds objects other than tensors and plain data, "
                        "which are not loaded because they could run code)") from None
    except Exception:  # noqa: BLE001 - a zip without its central directory, a bad record: an interrupted write/copy
        raise UserError(f"checkpoint {path} is unreadable: the file is truncated or corrupt "
                        "(an interrupted save or copy)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a gpt2stream checkpoint (a torch.save file of something else)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    if state["version"] > VERSION:
        raise UserError(f"checkpoint {path} has format version {state['version']}; this gpt2stream reads <= {VERSION}"
                        ": update gpt2stream")
    return state


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load and check one checkpoint file; UserError (what is wrong and what to do) if it is unreadable, truncated
    or not ours."""
    path = Path(path)
    try:
        return _load(path, mmap)
    except UserError as e:
        msg = str(e)
        if "truncated" in msg or "incomplete" in msg:
            msg += ("; use an earlier checkpoint, or give the run directory: it and --resume fall back to the "
                    "newest valid checkpoint automatically")
        elif "is not a" in msg:
            msg += f"; {_where_to_look(path)}"
        raise UserError(msg) from None


def find_latest(run_dir: str | Path, warn=None, mmap: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in run_dir/checkpoints that loads; unreadable newer ones are reported via ``warn``
    and skipped. None when there is no checkpoint file at all; UserError when there are some but none loads."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
    found = list_checkpoints(Path(run_dir) / CKPT_DIR)
    problems = []
    for _, path in reversed(found):
        try:
            return path, _load(path, mmap=mmap)
        except UserError as e:
            problems.append(str(e))
            warn(f"{e}; trying the previous checkpoint")
    if problems:
        raise UserError(f"no valid checkpoint in {Path(run_dir) / CKPT_DIR} ({problems[0]}, and "
                        f"{len(problems) - 1} older ones unusable too): restore a checkpoint from a backup, or start "
                        "a new run in another --out-dir")
    return None


def resolve_checkpoint(path: str | Path, warn=None, mmap: bool = False) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, a run directory or its checkpoints/ directory -> (file, state)."""
    p = Path(path)
    if p.is_dir():
        run_dir = p.parent if p.name == CKPT_DIR and not (p / CKPT_DIR).is_dir() else p
        got = find_latest(run_dir, warn=warn, mmap=mmap)
        if got is None:
            raise UserError(f"no checkpoint in {run_dir / CKPT_DIR}; train first (run_train.py --out-dir {run_dir})")
        return got
    if not p.exists():
        raise UserError(f"{p} does not exist: give a run directory or a checkpoint file")
    return p, read_checkpoint(p, mmap=mmap)


def choose_checkpoint(resume: str, out_dir: str | Path, warn: Callable[[str], None] | None = None,
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run continues from, loaded (mmap: tensors are paged in as they are used), or None for a fresh
    run. ``resume``: "" = fresh (refused when out_dir already has checkpoints), "latest" = the newest valid one in
    out_dir, else a file or run directory."""
    if resume == "latest":
        got = find_latest(out_dir, warn=warn, mmap=True)
        if got is None:
            raise UserError(f"--resume: no checkpoint in {Path(out_dir) / CKPT_DIR}")
        return got
    if resume:
        return resolve_checkpoint(resume, warn=warn, mmap=True)
    if has_checkpoints(out_dir):
        raise UserError(f"{out_dir} already has checkpoints; continue it with --resume, or choose a new --out-dir")
    return None


def incompatible_fields(saved: RunConfig, now: RunConfig, saved_tok: str, now_tok: str) -> list[str]:
    """'field: checkpoint X, now Y' for every setting that makes a checkpoint unusable for this run."""
    diff = [f"{f}: checkpoint {getattr(saved.model, f)}, now {getattr(now.model, f)}" for f in _SHAPE_FIELDS
            if getattr(saved.model, f) != getattr(now.model, f)]
    if saved.train.optimizer != now.train.optimizer:  # the saved state is another optimizer's
        diff.append(f"optimizer: checkpoint {saved.train.optimizer}, now {now.train.optimizer}")
    if saved.data.seq_len != now.data.seq_len:
        diff.append(f"seq_len: checkpoint {saved.data.seq_len}, now {now.data.seq_len}")
    if saved_tok != now_tok:
        diff.append(f"tokenizer: checkpoint {saved_tok}, now {now_tok}")
    return diff


def check_compatible(path: Path, state: dict[str, Any], cfg: RunConfig, tok_identity: str) -> None:
    """The compatibility check of a checkpoint's settings against this run: one UserError naming what differs.
    The layout (world size, workers, micro-batch) is the data loader's to judge (data.resume.resume_kind)."""
    saved = RunConfig.from_dict(state["config"])
    diff = incompatible_fields(saved, cfg, state.get("tokenizer_identity", "?"), tok_identity)
    if diff:
        raise UserError(f"cannot resume from {path}: the run's settings differ ({'; '.join(diff)}); "
                        f"resume with the checkpoint's settings or start a new run with another --out-dir")


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
    out_dir = flags.get("out-dir") or (str(Path(target).parent.parent) if target else base.train.out_dir)
    return "auto" if has_checkpoints(out_dir) or not target else target


def assemble_config(base: RunConfig, flags: dict[str, Any], warn: Callable[[str], None] | None = None,
                    say: Callable[[str], None] | None = None) -> RunConfig:
    """The config a run starts with: ``flags`` (from ``config.parse_argv``) on the preset ``base``; with ``--resume``,
    on the checkpoint's own config instead (so ``--resume --max-steps 5000`` extends a run and nothing else needs
    repeating).

    The checkpoint is the newest valid one in --out-dir (default: the preset's out_dir) for ``--resume`` (or
    ``--resume auto``, which starts a new run where there is none, ``say``ing which), or the one named by
    ``--resume PATH``; then the run directory is --out-dir if given, else the checkpoint's. The returned config
    names that exact checkpoint in ``train.resume``. Only the config is read (mmap: no tensor data).
    """
    target = resume_target(base, flags)
    if not target:  # --resume "" means a fresh run
        return with_flags(base, flags)
    if target in ("latest", "auto"):
        out_dir = flags.get("out-dir", base.train.out_dir)
        got = find_latest(out_dir, warn=warn, mmap=True)
        if got is None and target == "auto":
            (say or print)(f"--resume auto: no checkpoint in {Path(out_dir) / CKPT_DIR}: starting a new run")
            return with_flags(base, {**flags, "resume": ""})
        if got is None:
            raise UserError(f"--resume: no checkpoint in {Path(out_dir) / CKPT_DIR}; check --out-dir "
                            f"(default for --preset {base.preset}: {base.train.out_dir}), use --resume auto to start "
                            "anew when there is none, or drop --resume")
        path, state = got
        if target == "auto":
            why = f"torchrun restart {torchrun_restart()}" if torchrun_restart() else "--resume auto"
            (say or print)(f"{why}: continuing from {path} (step {state['step']})")
    else:
        path, state = resolve_checkpoint(target, warn=warn, mmap=True)
        out_dir = flags.get("out-dir", str(path.parent.parent))
    # shape flags are applied too, so that a conflicting one is reported by name (the compatibility check), not ignored;
    # accepting changed data is a decision of this resume only, never inherited from the checkpoint's config
    once = {"accept-data-change": flags.get("accept-data-change", False)}
    return with_flags(RunConfig.from_dict(state["config"]), {**flags, **once, "out-dir": out_dir, "resume": str(path)})
