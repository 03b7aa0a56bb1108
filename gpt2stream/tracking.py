"""Mirrors of metrics.jsonl in the tools people already watch: Weights & Biases (``--wandb PROJECT``) and
TensorBoard (``--tensorboard``).

metrics.jsonl stays the source of truth: ``MetricsLog`` writes each record there first and then hands it to
``Trackers.log``. Both trackers are optional extras, imported only when asked for; they run on rank 0 only. A tracker
that fails while training warns once and is switched off: a dashboard never stops a run.

Resuming: the W&B run id is kept in every checkpoint (``Trackers.state_dict``), so ``--resume`` continues the same
W&B run. Records are keyed by the training step (``step``), so steps that the resumed run trains again replace
nothing on disk here and appear once more in W&B with the same values (resume is exact). TensorBoard is told to
purge events from the first step this process logs on (``purge_step``), so its curves show one history.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from gpt2stream.config import RunConfig
from gpt2stream.errors import UserError

_NON_FINITE = ("nan", "inf", "-inf")  # how metrics.jsonl writes non-finite floats (JSON has none)


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def close(self, exit_code: int) -> None: ...


def require(module: str, flag: str, extra: str) -> Any:
    """Import an optional dependency, or fail in one line naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{flag} needs the {extra} package, which is not installed: pip install -e \".[{extra}]\" "
                        f"(or pip install {extra}), or drop {flag}") from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics record, 'step' excluded; NaN/inf (written as strings in metrics.jsonl) are
    floats again.

    >>> scalars({"step": 3, "loss": 2.5, "sample": "hi", "grad_norm": "nan"})
    {'loss': 2.5, 'grad_norm': nan}
    """
    out = {}
    for k, v in record.items():
        if k in ("step", "time") or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif v in _NON_FINITE:
            out[k] = float(v)
    return out


class WandbTracker:
    """One W&B run per training run, continued on resume through the id saved in the checkpoint."""

    def __init__(self, project: str, name: str, run_dir: Path, config: dict[str, Any], run_id: str | None) -> None:
        wandb = require("wandb", "--wandb", "wandb")
        try:
            # its files go in the run directory unless WANDB_DIR says otherwise
            self.run = wandb.init(project=project, name=name, id=run_id, resume="allow" if run_id else None,
                                  dir=os.environ.get("WANDB_DIR") or str(run_dir))
            self.run.config.update(config, allow_val_change=True)  # a resumed run may change e.g. max_steps
            self.run.define_metric("step")
            self.run.define_metric("*", step_metric="step")  # charts use the training step, not W&B's counter
        except Exception as e:  # noqa: BLE001 - no API key, no network, bad project: one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"--wandb {project}: could not start the W&B run ({type(e).__name__}: {msg}); run "
                            f"`wandb login`, or set WANDB_MODE=offline to log to disk and `wandb sync` later") from None

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({k: float(v) if v in _NON_FINITE else v for k, v in record.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"wandb_run_id": self.run.id}

    def close(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


class TensorBoardTracker:
    """Scalars (and samples as text) as TensorBoard event files in the run directory."""

    def __init__(self, run_dir: Path, first_step: int) -> None:
        require("tensorboard", "--tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events of an interrupted run from this step on (trained again now) are hidden
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=first_step, flush_secs=10)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, step)
        if isinstance(record.get("sample"), str):
            self.writer.add_text("sample", record["sample"], step)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def close(self, exit_code: int) -> None:
        self.writer.close()


class Trackers:
    """Every enabled tracker behind one ``log(record)``, and a checkpoint part (``state_dict`` /
    ``load_state_dict``): what a resumed run needs to continue them (the W&B run id). Built empty on every rank;
    rank 0 ``open``s the trackers the config asks for once the run directory exists."""

    def __init__(self, trackers: list[Tracker] | None = None) -> None:
        self.trackers = list(trackers or [])
        self.saved: dict[str, Any] = {}  # from the checkpoint being resumed

    def open(self, cfg: RunConfig, run_dir: Path, first_step: int) -> None:
        """Start the trackers ``cfg.eval`` asks for; ``first_step``: the first step this process will log."""
        ev = cfg.eval
        try:
            if ev.tensorboard:
                self.trackers.append(TensorBoardTracker(run_dir, first_step))
            if ev.wandb:
                name = ev.wandb_run_name or run_dir.resolve().name
                run_id = self.saved.get("wandb_run_id")
                self.trackers.append(WandbTracker(ev.wandb, name, run_dir, cfg.to_dict(), run_id))
        except BaseException:
            self.close(1)
            raise

    def log(self, record: dict[str, Any]) -> None:
        for t in list(self.trackers):
            try:
                t.log(record)
            except Exception as e:  # noqa: BLE001 - a dashboard must never stop training
                self.trackers.remove(t)
                print(f"warning: {type(t).__name__} stopped logging ({type(e).__name__}: {e}); metrics.jsonl "
                      f"still has every record", file=sys.stderr, flush=True)

    def state_dict(self) -> dict[str, Any]:
        out = dict(self.saved)  # kept while a tracker is off, so that turning it on again continues its run
        for t in self.trackers:
            out.update(t.state_dict())
        return out

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.saved = dict(sd)

    def close(self, exit_code: int = 0) -> None:
        self.saved = self.state_dict()
        for t in self.trackers:
            try:
                t.close(exit_code)
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not close {type(t).__name__} ({type(e).__name__}: {e})", file=sys.stderr)
        self.trackers = []
