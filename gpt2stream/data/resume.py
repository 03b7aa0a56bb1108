"""Which loader continues a checkpoint, and whether it can on this layout: pure functions of the saved states."""

from __future__ import annotations

from typing import Any

from gpt2stream.data.loader_legacy import STATE_FORMAT as LEGACY_FORMAT
from gpt2stream.errors import UserError


def resume_kind(rank_states: list[dict[str, Any]], world_size: int, num_workers: int, batch_size: int) -> str:
    """"legacy" for a checkpoint written before canonical streams (it continues only on the layout that wrote
    it: UserError naming both layouts otherwise), else "elastic" (any world size, workers and micro-batch)."""
    first = rank_states[0] if rank_states else {}
    if first.get("format") != LEGACY_FORMAT:
        return "elastic"
    fp = first.get("fingerprint", {})
    saved = (len(rank_states), fp.get("num_workers"), fp.get("batch_size"))
    now = (world_size, num_workers, batch_size)
    if saved != now:
        raise UserError(
            f"this checkpoint was written before elastic resume: it continues only on its own layout "
            f"({saved[0]} process(es) x --num-workers {saved[1]} x --batch-size {saved[2]}), this run has "
            f"{now[0]} x {now[1]} x {now[2]}; resume with torchrun --nproc_per_node={saved[0]} --num-workers "
            f"{saved[1]} --batch-size {saved[2]}")
    return "legacy"
