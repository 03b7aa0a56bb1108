"""What the trainer calls: TrainLoader (endless training batches with exact resume) and val_batches."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gpt2stream.data.dataset import PackedDataset, WorkerError
from gpt2stream.data.packing import Packer, doc_tokens
from gpt2stream.data.sharding import check_enough_units, num_readers
from gpt2stream.data.sources import Plan, Source, open_source, usable
from gpt2stream.errors import DataStreamError, UserError

STATE_FORMAT = "gpt2stream.data.TrainLoader/1"
# The fields that must match for a saved state to mean the same stream.
_MUST_MATCH = ("data", "data_config", "split", "text_column", "txt_docs", "seq_len", "batch_size", "shuffle_buffer",
               "val_docs", "seed", "tokenizer", "world_size", "num_workers", "rank", "num_units")


def _tokenizer_identity(tok: Any) -> str:
    return str(getattr(tok, "identity", type(tok).__name__))


def _check_int(name: str, value: Any, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")


def stall_timeout(data_cfg: Any) -> float:
    """DataLoader timeout: far above what the retry layer may legitimately spend, so only a true hang trips it.
    The trainer's collective timeout is set above this, so the other ranks wait for a stalled one to give up."""
    per_request = float(getattr(data_cfg, "request_timeout", 60) or 60)
    retries = int(getattr(data_cfg, "max_retries", 10) or 10)
    return max(900.0, 4 * per_request * (retries + 1)) + float(getattr(data_cfg, "rate_limit_wait", 900.0))


class TrainLoader:
    """Endless (x, y) training batches for one rank; ``state_dict()`` resumes them exactly.

    Each reader (this rank x DataLoader worker) yields whole batches with its own state attached; batch i comes from
    worker i % W, so the loader remembers the last state of every worker and which one is next.
    Resuming with another world size, worker count, batch size, sequence length, seed, shuffle buffer, tokenizer or
    data is refused with a UserError: those change which documents each reader owns.
    """

    def __init__(self, data_cfg: Any, batch_size: int, tokenizer: Any, rank: int = 0, world_size: int = 1,
                 seed: int = 0, pin_memory: bool = False, source: Source | None = None) -> None:
        _check_int("batch_size", batch_size, 1)
        _check_int("world_size", world_size, 1)
        _check_int("seq_len", data_cfg.seq_len, 1)
        _check_int("num_workers", data_cfg.num_workers, 0)
        _check_int("shuffle_buffer", data_cfg.shuffle_buffer, 0)
        _check_int("val_docs", data_cfg.val_docs, 0)
        if not 0 <= rank < world_size:
            raise UserError(f"rank must be in [0, {world_size}), got {rank}")
        self.cfg = data_cfg
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.pin_memory = pin_memory  # page-locked batches: host-to-GPU copies with non_blocking=True overlap
        self.num_workers = data_cfg.num_workers
        self.slots = max(1, self.num_workers)
        readers = num_readers(world_size, self.num_workers)
        self.source: Source = source if source is not None else open_source(data_cfg)
        self.plan: Plan = self.source.plan(data_cfg.val_docs, readers)
        what = "row groups" if self.source.kind == "parquet" else "pieces"
        check_enough_units(len(self.plan.units), readers, what)
        self._states: list[dict | None] = [None] * self.slots
        self._next = 0
        self._it = None
        self._dl = None

    # -- identity of the stream -----------------------------------------------------------------------------------
    def _fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "data": str(c.data), "data_config": str(getattr(c, "data_config", "")), "split": str(c.split),
            "text_column": c.text_column, "txt_docs": str(getattr(c, "txt_docs", "")), "seq_len": c.seq_len,
            "batch_size": self.batch_size, "shuffle_buffer": c.shuffle_buffer, "val_docs": c.val_docs,
            "seed": self.seed, "tokenizer": _tokenizer_identity(self.tokenizer), "world_size": self.world_size,
            "num_workers": self.num_workers, "rank": self.rank, "num_units": len(self.plan.units),
        }

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
        saved, now = sd["fingerprint"], self._fingerprint()
        diff = [f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in _MUST_MATCH if saved.get(k) != now[k]]
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
        return PackedDataset(
            self.source, self.plan.units, self.tokenizer, self.batch_size, self.cfg.seq_len, self.seed,
            self.cfg.shuffle_buffer, self.rank, self.world_size, self.num_workers,
            states=list(self._states), offset=self._next,
        )

    def __iter__(self) -> TrainLoader:
        self.close()
        ds = self._dataset()
        if self.num_workers == 0:
            self._it = iter(ds)
        else:
            self._dl = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_workers, timeout=stall_timeout(self.cfg),
                prefetch_factor=2, persistent_workers=False, pin_memory=self.pin_memory,
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
        if self.pin_memory and self.num_workers == 0:  # with workers the DataLoader's pin thread did it
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def close(self) -> None:
        """Stop the worker processes (the state is kept: iterating again continues from it)."""
        it, self._it, self._dl = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):  # DataLoader iterator: stop its processes
            it._shutdown_workers()
        elif it is not None and hasattr(it, "close"):  # in-process generator: stop its threads
            it.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def val_documents(data_cfg: Any, source: Source | None = None) -> list[str]:
    """The held-out validation texts (usable ones, in order): the first val_docs rows of the last file."""
    source = source if source is not None else open_source(data_cfg)
    plan = source.plan(data_cfg.val_docs, 1)
    return [r.text for r in source.read_val(plan) if usable(r.text)]


def val_batches(data_cfg: Any, batch_size: int, tokenizer: Any, rank: int = 0, world_size: int = 1,
                num_tokens: int = 0, source: Source | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the fixed validation set, as (x, y) batches.

    The validation documents are packed in order into blocks of seq_len+1 tokens and the first
    ceil(num_tokens / seq_len) blocks are kept (fewer if the held-out documents are short of them). Block j goes to
    rank j % world_size, so the union over ranks is the same set in the same order whatever the world size. Ranks
    may get one block (so possibly one batch) less than others: reduce sums of losses and counts once at the end.
    Returns [] when val_docs is 0. ``source``: the rank's already opened source (else it is opened here).
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_tokens", num_tokens, 0)
    if not 0 <= rank < world_size:
        raise UserError(f"rank must be in [0, {world_size}), got {rank}")
    if data_cfg.val_docs == 0 or num_tokens == 0:
        return []
    T = data_cfg.seq_len
    want = math.ceil(num_tokens / T)
    texts = val_documents(data_cfg, source)
    packer = Packer(1, T + 1)
    blocks: list[np.ndarray] = []
    eot = int(tokenizer.eot_id)
    for i in range(0, len(texts), 64):
        for ids in tokenizer.encode_ordinary_batch(texts[i : i + 64]):
            blocks += [b[0] for b in packer.push(doc_tokens(ids, eot))]
        if len(blocks) >= want:
            break
    mine = blocks[:want][rank::world_size]
    out = []
    for i in range(0, len(mine), batch_size):
        t = torch.from_numpy(np.stack(mine[i : i + batch_size])).long()
        out.append((t[:, :-1].contiguous(), t[:, 1:].contiguous()))
    return out
