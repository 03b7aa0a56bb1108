"""Pure helpers the trainer derives its settings with: accumulation, timeouts, the exit codes (precision:
gpt2stream/precision.py)."""

from __future__ import annotations

from enum import IntEnum

from gpt2stream.config import DataConfig
from gpt2stream.errors import UserError


class Exit(IntEnum):
    """The process exit status of a training run."""

    OK = 0  # finished (or nothing to do)
    USER = 2  # bad input (config, data, incompatible checkpoint...): ``error: ...`` on stderr
    DATA = 3  # the data stream failed for good: a checkpoint was saved, the message says how to resume
    NAN = 4  # the loss or the gradient norm became NaN/inf: stopped without saving; the last checkpoint is good
    SAVE = 5  # a checkpoint could not be written (disk full?): the previous checkpoint is intact
    SIGINT = 130  # stopped by SIGINT after saving a checkpoint
    SIGTERM = 143  # stopped by SIGTERM after saving a checkpoint


def grad_accum_steps(total_batch_size: int, batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that one step sees total_batch_size tokens."""
    per = batch_size * seq_len * world_size
    if total_batch_size % per:
        raise UserError(
            f"--total-batch-size {total_batch_size} is not divisible by batch_size x seq_len x processes = "
            f"{batch_size} x {seq_len} x {world_size} = {per}; use a multiple of {per} or change --batch-size")
    return total_batch_size // per






def collective_timeout(data_cfg: DataConfig) -> float:
    """Seconds a collective may wait for the slowest rank: above what a data stream may legitimately spend retrying
    (and than the DataLoader's stall watchdog), so the waiting ranks outlast a stalled one until it reports, plus
    time for rank 0 to write a large checkpoint while the others wait."""
    from gpt2stream.data.loader import stall_timeout

    return stall_timeout(data_cfg) + 900.0
