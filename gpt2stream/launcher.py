"""A failed entry point's one ``error:`` line under torchrun: said once for the job, and handed to torchrun.

A bad flag or a missing file fails on every rank before the process group exists, so no collective can decide who
speaks. Each failing rank instead leaves its line in torchrun's agent store: rank 0 prints its own; another rank
stays silent when rank 0 failed with the same line, and prints it, with its rank, when rank 0 failed otherwise or
got past these checks (``rank0_started``, once its process groups have started), or said nothing within
``RANK0_WAIT_S``: an error on one rank only is never lost. Every failing rank also writes the line to torchrun's
error file (``TORCHELASTIC_ERROR_FILE``), so that torchrun's closing "Root Cause" shows it
instead of a link to its documentation. torchrun's own ChildFailedError traceback is printed by torchrun itself,
after ours: no child can prevent it.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Mapping

RANK0_WAIT_S = 30.0  # how long another rank waits for word from rank 0 (a loaded machine skews start-ups)
_CONNECT_S = 5.0


def launched_rank(env: Mapping[str, str]) -> int | None:
    """This process's rank when it is one of several torchrun started, else None."""
    try:
        if int(env.get("WORLD_SIZE", "1")) > 1:
            return int(env.get("RANK", "0"))
    except ValueError:
        pass
    return None


def write_error_file(line: str, env: Mapping[str, str] = os.environ) -> None:
    """Leave ``line`` in torchrun's error file for this rank (the first line only: it is the cause); no-op outside
    torchrun. The format is what torchrun's ErrorHandler writes, without a Python traceback."""
    path = env.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    data = {"message": {"message": line, "extraInfo": {"timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # torchrun then shows its generic line: nothing worth failing for


def _agent_store(env: Mapping[str, str]) -> object | None:
    """torchrun's agent store (it outlives the workers), under this restart's prefix; None when there is none."""
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in env:
        return None
    try:
        import torch.distributed as dist

        store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(seconds=_CONNECT_S))
        attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
        return dist.PrefixStore(f"/gpt2stream/user_error/attempt_{attempt}", store)
    except Exception:  # noqa: BLE001 - no store: every rank speaks, as without torchrun
        return None


def rank0_started(env: Mapping[str, str] = os.environ) -> None:
    """Rank 0 got past the checks that fail on every rank and started its process groups: a rank that failed them
    need not wait for rank 0's line. No-op elsewhere."""
    if launched_rank(env) != 0:
        return
    store = _agent_store(env)
    if store is not None:
        try:
            store.set("rank0", "")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the others then wait RANK0_WAIT_S
            pass


def _rank0_said(store: object, line: str, wait_s: float) -> bool:
    """Whether rank 0 published exactly ``line`` within ``wait_s`` seconds (not: it failed otherwise, or started)."""
    try:
        store.wait(["rank0"], datetime.timedelta(seconds=wait_s))  # type: ignore[attr-defined]
        return store.get("rank0").decode() == line  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a timeout: rank 0 did not fail (or not yet): speak
        return False


def report_error(message: str, env: Mapping[str, str] = os.environ, wait_s: float = RANK0_WAIT_S) -> None:
    """Print ``error: message`` once per job: on its own, on rank 0, or on a rank whose error rank 0 did not have."""
    line = f"error: {message}"
    rank = launched_rank(env)
    if rank is None:
        print(line, file=sys.stderr, flush=True)
        return
    store = _agent_store(env)
    if rank == 0:
        if store is not None:
            try:
                store.set("rank0", line)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the others then speak for themselves
                pass
        write_error_file(line, env)
        print(line, file=sys.stderr, flush=True)
        return
    if store is not None and _rank0_said(store, line, wait_s):
        write_error_file(line, env)
        return
    line = f"error: [rank {rank}] {message}"
    write_error_file(line, env)
    print(line, file=sys.stderr, flush=True)
