"""Checkpoint writes off the training path: the state is copied to CPU memory at once (training may then change the
live tensors), and a background thread writes the copy with ``save_checkpoint`` (tmp + fsync + rename, keep-last-K).

One write at a time: the next save, and the end of the run, wait for the previous one and hear whether it failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpt2stream.checkpoint import save_checkpoint


def to_cpu(obj: Any, memo: dict | None = None) -> Any:
    """A copy of ``obj`` with every tensor copied into CPU memory (containers rebuilt, other values shared).

    Tensors that share a storage (the tied embedding / LM head) share one copy, so ``torch.save`` writes that
    storage once, and a model loaded from the file is still tied. A storage is copied whole, as torch.save would
    write it whole anyway."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        return _cpu_view(obj.detach(), memo)
    if isinstance(obj, dict):
        return {k: to_cpu(v, memo) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v, memo) for v in obj)
    return obj


def _cpu_view(t: torch.Tensor, memo: dict) -> torch.Tensor:
    """``t`` as a view of a CPU copy of its storage, the copy made once per (storage, dtype)."""
    storage = t.untyped_storage()
    if storage.nbytes() == 0 or storage.nbytes() % t.element_size() or t.is_quantized or t.layout != torch.strided:
        return t.to("cpu", copy=True)
    key = (storage.data_ptr(), t.device, t.dtype)
    base = memo.get(key)
    if base is None:
        whole = torch.empty(0, dtype=t.dtype, device=t.device)
        whole.set_(storage, 0, (storage.nbytes() // t.element_size(),), (1,))
        base = memo[key] = whole.to("cpu", copy=True)
    return base.as_strided(t.size(), t.stride(), t.storage_offset())


class BackgroundSaver:
    """Rank 0's checkpoint writer. ``submit`` returns once the snapshot is taken; ``wait`` returns the error message
    of the last write (None if it succeeded or nothing was written)."""

    def __init__(self, run_dir: Path, keep_last: int, log: Callable[[str], None]) -> None:
        self.run_dir, self.keep_last, self.log = run_dir, keep_last, log
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self.last: tuple[int, Path] | None = None  # (step, file) of the newest checkpoint written

    def submit(self, state: dict[str, Any], step: int) -> None:
        if self.wait() is not None:
            raise RuntimeError("submit after a failed write: check wait() first")
        snapshot = to_cpu(state)
        self._thread = threading.Thread(target=self._write, args=(snapshot, step), name="checkpoint-writer",
                                        daemon=True)
        self._thread.start()

    def _write(self, state: dict[str, Any], step: int) -> None:
        try:
            path = save_checkpoint(state, self.run_dir, self.keep_last)
        except Exception as e:  # noqa: BLE001 - reported by wait(): a thread's exception would otherwise be lost
            why = str(e) if isinstance(e, OSError) else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self._error = (f"could not write the checkpoint for step {step} ({why}); nothing earlier was touched: "
                           "the previous checkpoint is intact. Free space, then continue with --resume")
            return
        self.last = (step, path)
        self.log(f"saved checkpoint {path}")

    def wait(self) -> str | None:
        """Wait for the write in progress; its error message, once (a later call returns None)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        return err
