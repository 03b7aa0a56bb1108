"""The loader of runs started before canonical streams (state format /1): batches dealt round-robin from
world_size x num_workers readers, so a saved stream resumes only on the layout that wrote it. Kept so that such
checkpoints resume as before; new runs use loader.TrainLoader."""

from __future__ import annotations

from typing import Any

import torch

from gpt2stream.config import DataConfig
from gpt2stream.data.dataset import PackedDataset, WorkerError, stop_iterator
from gpt2stream.data.open import open_source
from gpt2stream.data.sharding import check_enough_units, num_readers, readers_per_rank
from gpt2stream.data.sources import Plan, Source
from gpt2stream.data.spec import StreamSpec, changed_fields, source_identity
from gpt2stream.data.validate import check_layout, stall_timeout
from gpt2stream.errors import DataStreamError, UserError
from tokenizer import Tokenizer

STATE_FORMAT = "gpt2stream.data.TrainLoader/1"
# The fields that must match for a saved state to mean the same stream.
_MUST_MATCH = ("data", "data_config", "split", "text_column", "txt_docs", "seq_len", "batch_size", "shuffle_buffer",
               "val_docs", "seed", "tokenizer", "world_size", "num_workers", "rank", "num_units")


def legacy_spec(data_cfg: DataConfig, *, seed: int, tokenizer: Tokenizer, source: Source, plan: Plan, readers: int,
                batch_size: int) -> StreamSpec:
    """The stream of a legacy loader as a StreamSpec: each of the job's readers is a stream of whole batches, with
    no block buffer; the loader has no steps of its own, so ``blocks_per_step`` counts one batch from every reader."""
    return StreamSpec(**source_identity(data_cfg, seed=seed, tokenizer=tokenizer, source=source, plan=plan),
                      block_buffer=1, streams=readers, blocks_per_step=readers * batch_size)


class LegacyTrainLoader:
    """Endless (x, y) training batches for one rank; ``state_dict()`` resumes them exactly.

    Each reader (this rank x DataLoader worker) yields whole batches with its own state attached; batch i comes from
    worker i % W, so the loader remembers the last state of every worker and which one is next.
    Resuming with another world size, worker count, batch size, sequence length, seed, shuffle buffer, tokenizer or
    data is refused with a UserError: those change which documents each reader owns.
    """

    def __init__(self, data_cfg: DataConfig, batch_size: int, tokenizer: Tokenizer, rank: int = 0,
                 world_size: int = 1, seed: int = 0, source: Source | None = None) -> None:
        check_layout(batch_size, rank, world_size)
        self.cfg = data_cfg
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.num_workers = data_cfg.num_workers
        self.slots = readers_per_rank(self.num_workers)
        readers = num_readers(world_size, self.num_workers)
        self.source: Source = source if source is not None else open_source(data_cfg)
        self.plan: Plan = self.source.plan(data_cfg.val_docs, readers)
        what = "row groups" if self.source.kind == "parquet" else "pieces"
        check_enough_units(len(self.plan.units), readers, what)
        self.spec = legacy_spec(data_cfg, seed=seed, tokenizer=tokenizer, source=self.source, plan=self.plan,
                                readers=readers, batch_size=batch_size)
        self._states: list[dict | None] = [None] * self.slots
        self._next = 0
        self._it = None
        self._dl = None

    # -- identity of the stream -----------------------------------------------------------------------------------
    def _fingerprint(self) -> dict[str, Any]:
        fp = {**self.spec.fingerprint(), "batch_size": self.batch_size, "world_size": self.world_size,
              "num_workers": self.num_workers, "rank": self.rank}
        return {k: fp[k] for k in _MUST_MATCH}

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact position after the last batch handed out: plain python, safe for torch.load(weights_only=True)."""
        return {
            "format": STATE_FORMAT,
            "fingerprint": self._fingerprint(),
            "next_worker": self._next,
            "workers": [dict(s) if s else None for s in self._states],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if self._it is not None:
            raise RuntimeError("load_state_dict must be called before iterating the TrainLoader")
        if not isinstance(sd, dict) or sd.get("format") != STATE_FORMAT:
            raise UserError("the checkpoint's data-loader state is not from this version of gpt2stream; "
                            "start a new run or resume with the version that wrote it")
        diff = changed_fields(sd["fingerprint"], self._fingerprint(), _MUST_MATCH)
        if diff:
            raise UserError("cannot resume the data stream exactly, the run changed (" + "; ".join(diff) +
                            "); resume with the same settings, or start a new run")
        workers = sd["workers"]
        if len(workers) != self.slots:
            raise UserError(f"the saved data state has {len(workers)} workers, this loader {self.slots}")
        self._states = [dict(s) if s else None for s in workers]
        self._next = int(sd["next_worker"]) % self.slots

    @property
    def epoch(self) -> int:
        """Epoch of the reader that produced the last batch (readers cross epoch boundaries independently)."""
        last = self._states[(self._next - 1) % self.slots]
        return int(last["epoch"]) if last else 0

    @property
    def docs_seen(self) -> int:
        return sum(int(s["docs"]) for s in self._states if s)

    @property
    def docs_skipped(self) -> int:
        return sum(int(s["skipped"]) for s in self._states if s)

    # -- iteration ------------------------------------------------------------------------------------------------
    def _dataset(self) -> PackedDataset:
        return PackedDataset(self.source, self.plan.units, self.tokenizer, self.spec, rows=self.batch_size,
                             rank=self.rank, world_size=self.world_size, num_workers=self.num_workers,
                             states=list(self._states), offset=self._next)

    def __iter__(self) -> LegacyTrainLoader:
        self.close()
        ds = self._dataset()
        if self.num_workers == 0:
            self._it = iter(ds)
        else:
            self._dl = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_workers, timeout=stall_timeout(self.cfg),
                prefetch_factor=2, persistent_workers=False,
            )
            self._it = iter(self._dl)
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            iter(self)
        try:
            item = next(self._it)
        except RuntimeError as e:
            if "timed out" in str(e):
                raise DataStreamError(f"the data loader produced nothing for {stall_timeout(self.cfg):.0f} s "
                                      f"(stalled); resume from the last checkpoint") from None
            raise
        if isinstance(item, WorkerError):
            self.close()
            item.reraise()
        x, y, (logical, st) = item
        self._states[logical] = st
        self._next = (logical + 1) % self.slots
        return x, y

    def close(self) -> None:
        """Stop the worker processes (the state is kept: iterating again continues from it)."""
        it, self._it, self._dl = self._it, None, None
        stop_iterator(it)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
