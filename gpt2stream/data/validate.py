"""Small checks and settings shared by the loaders.

The user's settings are validated by DataConfig; ``check_layout`` checks what only a programmatic caller of a loader
can get wrong.
"""

from __future__ import annotations

from typing import Any

from gpt2stream.config import DataConfig
from gpt2stream.errors import UserError
from tokenizer import Tokenizer


def tokenizer_identity(tok: Tokenizer) -> str:
    return str(getattr(tok, "identity", type(tok).__name__))


def check_int(name: str, value: Any, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")


def check_layout(batch_size: int, rank: int, world_size: int) -> None:
    """A loader's arguments beside its DataConfig: batch_size >= 1, world_size >= 1, 0 <= rank < world_size."""
    check_int("batch_size", batch_size, 1)
    check_int("world_size", world_size, 1)
    if not 0 <= rank < world_size:
        raise UserError(f"rank must be in [0, {world_size}), got {rank}")


def stall_timeout(data_cfg: DataConfig) -> float:
    """DataLoader timeout: far above what the retry layer may legitimately spend, so only a true hang trips it.
    The trainer's collective timeout is set above this, so the other ranks wait for a stalled one to give up."""
    per_request, retries = float(data_cfg.request_timeout), int(data_cfg.max_retries)
    return max(900.0, 4 * per_request * (retries + 1)) + float(data_cfg.rate_limit_wait)
