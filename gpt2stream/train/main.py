"""``train(cfg)``: set a run up (every rank agreeing on failures), run the loop, and pick the exit status: the one
place that turns what went wrong into a printed line and an ``Exit`` code."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from gpt2stream import distributed as D
from gpt2stream.checkpoint import has_checkpoints
from gpt2stream.config import RunConfig
from gpt2stream.errors import USER_ERRORS, UserError, without_resume_advice
from gpt2stream.optim import describe
from gpt2stream.precision import emulated_bf16_warning
from gpt2stream.runlock import RunLock
from gpt2stream.train.agree import agree_errors, choose_agreed
from gpt2stream.train.build import Parts, build_parts, open_run_dir, restore, wrap_ddp
from gpt2stream.train.loop import Stop, Trainer
from gpt2stream.train.output import RunLog, error, header
from gpt2stream.train.settings import Exit, collective_timeout
from gpt2stream.train.stops import StopSignals


def build_and_restore(cfg: RunConfig, info: D.DistInfo, resume: tuple[Path, dict] | None) -> tuple[Parts, Path | None]:
    """Collective first (rank 0 opens the data for the job, every rank receives it), then each rank by itself:
    build everything, checked against the checkpoint, then restore it."""
    from gpt2stream.data.job import open_data_for_job, pin_data

    source = open_data_for_job(cfg.data, info, cfg.train.out_dir, resume is not None)
    cfg = dataclasses.replace(cfg, data=pin_data(cfg.data, source))  # a mixture's shas, in config.json too
    parts = build_parts(cfg, info, resume, source)
    if resume is None:
        return parts, None
    restore(parts, resume[1])
    return parts, resume[0]


def load_evals(parts: Parts) -> None:
    """The examples of every eval task asked for. One process per node reads them first (downloading them into this
    machine's cache if need be), then the others read the cached copy; a failure is agreed on, so no rank is left
    waiting for the first one."""
    from gpt2stream.evals import get_task, requested

    info, ev = parts.info, parts.cfg.eval
    for turn in (True, False):
        err = None
        if (info.local_rank == 0) == turn:
            try:
                parts.evals = {name: get_task(name).load(path, None)
                               for name, path in requested(ev.evals, ev.evals_data).items()}
            except UserError as e:
                err = e
        agree_errors(err, info)


def open_trackers(parts: Parts, out: Path) -> None:
    """Collective: rank 0 starts the W&B / TensorBoard mirrors; a missing package or a failed login stops every
    rank. Last in the setup, so that no tracker run is started for a run that fails to start."""
    err = None
    if parts.info.master:
        try:
            parts.trackers.open(parts.cfg, out, parts.progress.step + 1)
        except UserError as e:
            err = e
    agree_errors(err, parts.info)


def take_run_dir(cfg: RunConfig, info: D.DistInfo, log: RunLog) -> RunLock | None:
    """Collective: rank 0 locks the run directory for the run's life (one run per directory, gpt2stream.runlock);
    every rank stops if it is another run's. Before anything else touches the directory."""
    from gpt2stream import setup_signals

    err, lock = None, RunLock(cfg.train.out_dir) if info.master else None
    if lock is not None:
        try:
            note = lock.acquire()
            setup_signals.on_exit_now(lock.release)  # a stop during set-up leaves through os._exit
            if note:
                log(note)
        except UserError as e:
            err = e
    try:
        agree_errors(err, info)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def setup(cfg: RunConfig, info: D.DistInfo, log: RunLog, stops: StopSignals) -> Trainer:
    if cfg.eval.evals_every:  # an eval task that is not registered stops the run before anything is built
        from gpt2stream.evals import requested

        requested(cfg.eval.evals, cfg.eval.evals_data)
    resume = choose_agreed(cfg, info, log)
    err, parts, resumed_from = None, None, None
    try:
        parts, resumed_from = build_and_restore(cfg, info, resume)
    except USER_ERRORS as e:  # decided collectively: a bad setting usually fails on every rank, data on one
        err = e
    agree_errors(err, info)
    assert parts is not None  # agree_errors raised on every rank if any rank failed to build
    out = open_run_dir(parts)
    cfg = parts.cfg  # resolved by the build (vocab_size, streams)
    log.attach(out / "train.log")
    wrap_ddp(parts)
    if cfg.eval.evals_every:
        load_evals(parts)
    from gpt2stream.mfu import peak_flops

    dev = info.device
    # measuring the peak draws random matrices: keep the (restored) RNG states that dropout will use untouched
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type=dev.type):
        peak = peak_flops(dev, parts.amp or torch.float32)
    for line in header(parts, out, peak, cfg.train.total_batch_size) + describe(parts.optimizer):
        log(line)
    slow = emulated_bf16_warning(parts.amp, dev)
    if slow:
        log(f"warning: {slow}")
    from gpt2stream.memory import startup_lines, visible_gpu

    for line in startup_lines(cfg, info.world_size, parts.amp == torch.bfloat16, visible_gpu(dev)):
        log(line)
    open_trackers(parts, out)
    if resumed_from is not None:
        log(f"resumed from {resumed_from} at step {parts.progress.step}")
    for note in parts.notes:
        log(note)
    return Trainer(parts, out, log, stops, peak, resumed_from)


def train(cfg: RunConfig) -> int:
    """Run training as configured; return the process exit code (``Exit``).

    ``cfg.train.resume``: "" = new run, "latest" = newest valid checkpoint in out_dir, else a checkpoint path
    (``--resume auto`` has become one of those in ``checkpoint.assemble_config``); the config must be compatible
    with the checkpoint (``checkpoint.assemble_config`` builds one from the checkpoint's own).
    ``cfg`` is not changed: the build resolves a copy (vocab_size from the tokenizer, the loader's streams).
    Under torchrun the process group is set up here and torn down before returning.
    """
    info = D.init_distributed(cfg.train.device, timeout_s=collective_timeout(cfg.data))
    log, stops = RunLog(info.master), StopSignals(announce=info.master)
    stops.install()
    code, clean, trainer, lock = 1, True, None, None
    try:
        lock = take_run_dir(cfg, info, log)
        trainer = setup(cfg, info, log, stops)
        code = trainer.run()
    except Stop as s:
        code = s.code
    except USER_ERRORS as e:
        if info.master or not info.ddp:  # advice to resume only where there is a checkpoint to resume from
            error(str(e) if has_checkpoints(cfg.train.out_dir) else without_resume_advice(str(e)))
        code = Exit.USER
    except KeyboardInterrupt:
        print("interrupted (no checkpoint saved)", file=sys.stderr, flush=True)
        code, clean = Exit.SIGINT, False
    except BaseException:
        clean = False  # other ranks may be stuck in a collective: don't wait for them
        raise
    finally:
        if trainer is not None:
            trainer.parts.loader.close()
            trainer.close()
            late = trainer.saver.wait()  # never leave while a checkpoint is being written
            if late is not None:
                error(late)
                code = Exit.SAVE if code == Exit.OK else code
            trainer.parts.trackers.close(int(code))
        log.close()
        if lock is not None:
            lock.release()
        stops.restore()
        D.shutdown(info, sync=clean)
    return int(code)
