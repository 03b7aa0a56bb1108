"""Small checks and settings shared by the loaders."""

from __future__ import annotations

from typing import Any

from gpt2stream.errors import UserError
from gpt2stream.run_config import DataConfig
from tokenizer import Tokenizer


def tokenizer_identity(tok: Tokenizer) -> str:
    return str(getattr(tok, "identity", type(tok).__name__))


def check_int(name: str, value: Any, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")


def stall_timeout(data_cfg: DataConfig) -> float:
    """DataLoader timeout: far above what the retry layer may legitimately spend, so only a true hang trips it.
    The trainer's collective timeout is set above this, so the other ranks wait for a stalled one to give up."""
    per_request = float(getattr(data_cfg, "request_timeout", 60) or 60)
    retries = int(getattr(data_cfg, "max_retries", 10) or 10)
    return max(900.0, 4 * per_request * (retries + 1)) + float(getattr(data_cfg, "rate_limit_wait", 900.0))
