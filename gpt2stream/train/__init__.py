"""Training: DDP, gradient accumulation, bf16 autocast, schedules, evaluation, checkpoints, exact resume.

``train(cfg)`` is what ``run_train.py`` calls, in one process or under torchrun; it returns the exit code
(``settings.Exit``):

    0    finished (or nothing to do)
    2    bad input (config, data, incompatible checkpoint...): ``error: ...`` on stderr
    3    the data stream failed for good: a checkpoint was saved, the message says how to resume
    4    the loss or the gradient norm became NaN/inf: stopped without saving; the last checkpoint is good
    5    a checkpoint could not be written (disk full?): the previous checkpoint is intact
    130  / 143  stopped by SIGINT / SIGTERM after saving a checkpoint

The parts, one concern each:

    settings.py  pure helpers: accumulation, timeouts, exit codes
    state.py     progress, RNG and loader-position saved state
    build.py     model, optimizer, schedule, loader, compile, DDP; the restore from a checkpoint
    step.py      train_step(parts, batches, lr) -> StepStats
    evaluate.py  validation loss, the eval tasks of gpt2stream/evals, the logged sample
    output.py    the log, the header and the step line
    loop.py      the Trainer's run() loop, saving and stopping
    main.py      train(cfg): setup, the loop, and the exit status
"""

from __future__ import annotations

from gpt2stream.checkpoint import incompatible_fields
from gpt2stream.train.main import train
from gpt2stream.train.settings import Exit, collective_timeout, grad_accum_steps

__all__ = ["Exit", "collective_timeout", "grad_accum_steps", "incompatible_fields", "train"]
