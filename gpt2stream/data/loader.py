"""What the trainer calls: TrainLoader (endless training steps with exact resume on any layout) and val_batches."""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from gpt2stream.config import DataConfig
from gpt2stream.data import counters
from gpt2stream.data import streams as S
from gpt2stream.data.blockbuffer import Docs
from gpt2stream.data.dataset import WorkerError, stop_iterator
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.mixstream import dropped_sources, source_epochs
from gpt2stream.data.open import open_mixture, open_source
from gpt2stream.data.packing import Packer, doc_tokens
from gpt2stream.data.sources import Plan, Source, usable
from gpt2stream.data.spec import StreamSpec, source_spec
from gpt2stream.data.stepdata import StepDataset
from gpt2stream.data.unitspill import SPILL_ABOVE
from gpt2stream.data.validate import check_int, check_layout, stall_timeout
from gpt2stream.errors import DataStreamError, UserError
from tokenizer import Tokenizer

__all__ = ["TrainLoader", "StepBatch", "stall_timeout", "val_batches", "val_documents", "check_resumable"]

STATE_FORMAT = "gpt2stream.data.TrainLoader/2"
# A saved state resumes when its fingerprint equals the loader's StreamSpec's (spec.FINGERPRINT). The world size,
# the DataLoader workers and the micro-batch are not in it: they only decide who computes which block.
BEFORE_STREAMS = "gpt2stream.data.TrainLoader/1"  # the round-robin loader's state, before canonical streams


def check_resumable(path: Any, rank_states: list[Any]) -> None:
    """UserError (one line) when a checkpoint's data state is one this version cannot continue: written before
    canonical streams, or by no loader of ours. Checked before anything large is built."""
    formats = {s.get("format") if isinstance(s, dict) else None for s in rank_states}
    if BEFORE_STREAMS in formats:
        raise UserError(f"cannot resume from {path}: it was written before canonical streams (data state "
                        f"{BEFORE_STREAMS}), which this version no longer continues; resume it with the gpt2stream "
                        f"version that wrote it, or start a new run with another --out-dir")
    if formats != {STATE_FORMAT}:
        raise UserError(f"cannot resume from {path}: its data-loader state is not from this version of gpt2stream; "
                        f"start a new run with another --out-dir, or resume with the version that wrote it")


class StepBatch(NamedTuple):
    """One rank's share of an optimizer step: its micro-batches (x, y) in step order, and (epoch, id) of the
    documents whose first token is in its blocks."""

    micro: list[tuple[torch.Tensor, torch.Tensor]]
    docs: Docs


class TrainLoader:
    """Endless training batches for one rank; ``state_dict()`` resumes them exactly, on any layout.

    Optimizer step s trains the same ``total_batch_size / seq_len`` blocks whatever the world size, DataLoader
    workers or micro-batch (streams.py). This rank's blocks of a step come as micro-batches of ``batch_size`` rows
    (the last one may be smaller): iterate the loader for micro-batches, or call ``next_step()`` for a whole step.
    ``total_batch_size`` defaults to one micro-batch per rank per step. ``source``: the opened data (a Source, or a
    MixtureSource for a weighted mixture: data/mixstream.py); None opens ``data_cfg``'s.
    """

    def __init__(self, data_cfg: DataConfig, batch_size: int, tokenizer: Tokenizer, rank: int = 0, world_size: int = 1,
                 seed: int = 0, total_batch_size: int | None = None, pin_memory: bool = False,
                 source: Source | MixtureSource | None = None) -> None:
        check_layout(batch_size, rank, world_size)
        self.cfg = data_cfg
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory  # page-locked batches: host-to-GPU copies with non_blocking=True overlap
        total = total_batch_size if total_batch_size is not None else batch_size * data_cfg.seq_len * world_size
        blocks = S.blocks_per_step(total, data_cfg.seq_len)  # checked before the source is opened
        if source is None:
            source = open_mixture(data_cfg) if data_cfg.mixture else open_source(data_cfg)
        self.source: Any = source
        self.mixture: MixtureSource | None = self.source if isinstance(self.source, MixtureSource) else None
        self._plan(data_cfg, blocks, seed)
        S.check_streams(self.streams, self.blocks, world_size)
        self.mine = S.rank_streams(self.streams, world_size, rank)
        self.num_workers = S.effective_workers(data_cfg.num_workers, self.mine)
        self.readers = S.worker_streams(self.mine, data_cfg.num_workers)
        self.order = S.step_order(self.mine, self.streams, self.k)
        self.micro_sizes = S.micro_sizes(len(self.order), batch_size)
        self._states: list[dict | None] = [None] * self.streams  # after the last step fetched
        self._start: list[dict | None] = list(self._states)  # at the start of the step being handed out
        self._cur: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # micro-batches of that step
        self._cur_docs: list[Docs] = []
        self._micro = 0  # micro-batches of that step already handed out
        self._skip = 0  # micro-batches to skip on the next step fetched (a state saved mid-step)
        self.last_docs: Docs = []  # of the micro-batch (or step) handed out last
        self.last_blocks: list[tuple[int, int]] = []  # (i, stream) of the rows of the micro-batch handed out last
        self.last_sources: list[str] = []  # a mixture's source of each row handed out last (micro-batch or step)
        self._cur_sources: list[list[str]] = []
        self._it: Any = None  # the step iterator: the dataset's, or the DataLoader's over its workers
        self._dl: Any = None
        self._workers = counters.WorkerTotals()

    def _plan(self, data_cfg: DataConfig, blocks: int, seed: int) -> None:
        """The plan(s) and the StreamSpec. The cut of jsonl/txt files into pieces must not depend on the layout
        either; a mixture's sources are planned each with its own val_docs."""
        # what the run's first plan used (saved in its config): a resume's streams are fixed, a new run's may be auto
        readers = self.plan_readers = data_cfg.plan_readers or data_cfg.streams or S.PLAN_READERS
        if self.mixture is None:
            self.plan: Plan = self.source.plan(data_cfg.val_docs, readers)
            self.units: Any = self.plan.units
            self.spec = StreamSpec.build(data_cfg, blocks_per_step=blocks, seed=seed, tokenizer=self.tokenizer,
                                         source=self.source, plan=self.plan)
            return
        mix = self.mixture
        self.plans: list[Plan] = [s.plan(e.val_docs, readers) for e, s in zip(mix.entries, mix.sources, strict=True)]
        self.units = tuple(p.units for p in self.plans)
        self.spec = StreamSpec.build_mixture(
            data_cfg, blocks_per_step=blocks, seed=seed, tokenizer=self.tokenizer,
            sources=[source_spec(e, s, p) for e, s, p in zip(mix.entries, mix.sources, self.plans, strict=True)])

    # -- identity of the stream -----------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def streams(self) -> int:
        """The run's canonical streams."""
        return self.spec.streams

    @property
    def blocks(self) -> int:
        """Blocks of seq_len+1 tokens per optimizer step (all ranks together)."""
        return self.spec.blocks_per_step

    @property
    def k(self) -> int:
        """Blocks per canonical stream per step."""
        return self.spec.k

    def fingerprint(self) -> dict[str, Any]:
        return self.spec.fingerprint()

    def layout(self) -> dict[str, int]:
        return {"world_size": self.world_size, "rank": self.rank, "num_workers": self.cfg.num_workers,
                "batch_size": self.batch_size}

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact position after the last batch handed out: plain python, safe for torch.load(weights_only=True).
        ``streams`` holds the state of this rank's canonical streams (None for the others)."""
        states = self._start if self._micro else self._states
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint(),
            "layout": self.layout(),
            "streams": [copy.deepcopy(s) for s in states],
            "micro": self._micro,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Continue from a state: this loader's, or one merged from every rank's (merge_states), on any layout."""
        if self._it is not None:
            raise RuntimeError("load_state_dict must be called before iterating the TrainLoader")
        check_resumable("this checkpoint", [sd])
        diff = self.spec.changes(sd["fingerprint"])
        if self.cfg.accept_data_change:  # changed local files, accepted (local_pin.py): their pieces may differ
            diff = [d for d in diff if not d.startswith("num_units")]
        if diff:
            raise UserError("cannot resume the data stream exactly, the run changed (" + "; ".join(diff) +
                            "); resume with the same settings, or start a new run")
        saved_streams = sd["streams"]
        mine = [saved_streams[c] for c in self.mine]
        if any(s is None for s in mine) and any(s is not None for s in saved_streams):
            missing = [c for c in self.mine if saved_streams[c] is None]
            raise UserError(f"the saved data state lacks canonical streams {missing}; merge the states of all "
                            f"ranks of the checkpoint (merge_states) before loading")
        micro = int(sd.get("micro", 0))
        if micro and sd.get("layout") != self.layout():
            raise UserError(f"the data state was saved in the middle of a step ({micro} micro-batches in) on "
                            f"layout {sd.get('layout')}; it resumes only on that layout")
        self._states = [copy.deepcopy(s) if c in self.mine else None for c, s in enumerate(saved_streams)]
        self._start = list(self._states)
        self._skip = micro

    @property
    def epoch(self) -> int:
        """The highest epoch among this rank's blocks handed out last (streams cross epochs independently)."""
        return max((int(s["epoch"]) for s in self._current_states() if s), default=0)

    def stream_epoch(self, stream: int) -> int:
        """The epoch of the block canonical stream ``stream`` handed out last (one of this rank's)."""
        st = self._current_states()[stream]
        return int(st["epoch"]) if st else 0

    def _current_states(self) -> list[dict | None]:
        return self._start if self._micro else self._states

    def source_epochs(self) -> dict[str, int]:
        """A mixture's {source name: highest epoch of its sub-streams among this rank's streams} ({} for one
        source): each source counts its own epochs."""
        if self.mixture is None:
            return {}
        names, out = self.mixture.names, dict[str, int]()
        for st in self._current_states():
            if st:
                for n, e in source_epochs(st, names).items():
                    out[n] = max(out.get(n, 0), e)
        return {n: out.get(n, 0) for n in names}

    def dropped_sources(self) -> set[str]:
        """The mixture's sources that any of this rank's streams has dropped (their max_epochs reached)."""
        if self.mixture is None:
            return set()
        return set().union(*(dropped_sources(st, self.mixture.names) for st in self._current_states() if st))

    @property
    def docs_seen(self) -> int:
        return sum(int(s["docs"]) for s in self._current_states() if s)

    @property
    def docs_skipped(self) -> int:
        return sum(int(s["skipped"]) for s in self._current_states() if s)

    # -- iteration ------------------------------------------------------------------------------------------------
    def _dataset(self) -> StepDataset:
        return StepDataset(self.source, self.units, self.tokenizer, self.spec, readers=self.readers,
                           states=list(self._states), spill=self._spill())

    def _spill(self) -> bool:
        """Whether the rank keeps its streams' partly read units on disk: when it runs more than SPILL_ABOVE
        (stream, source) pairs, each holding one unit (a mixture's stream reads every source)."""
        return len(self.mine) * max(1, len(self.spec.mixture)) > SPILL_ABOVE

    def __iter__(self) -> TrainLoader:
        self.close()
        if self._micro:  # stopped in the middle of a step: fetch that step again and skip what was handed out
            self._states, self._skip, self._micro, self._cur = list(self._start), self._micro, 0, None
        ds = self._dataset()
        if self.num_workers == 0:
            self._it = iter(ds)
        else:
            self._dl = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_workers, timeout=stall_timeout(self.cfg),
                prefetch_factor=2, persistent_workers=False,  # _fetch pins the micro-batches it cuts
            )
            self._it = iter(self._dl)
        return self

    def _item(self):
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
        return item

    def _fetch(self) -> None:
        """The next step's blocks from every reader, in step order, cut into micro-batches."""
        if self._it is None:
            iter(self)
        where: dict[tuple[int, int], int] = {}  # (i, c) -> row of the readers' blocks, concatenated
        docs: dict[tuple[int, int], Docs] = {}
        srcs: dict[tuple[int, int], str] = {}
        names = self.mixture.names if self.mixture is not None else []
        states = list(self._states)
        parts = []
        for w in range(len(self.readers)):  # each reader yields one item per step, worker 0 first
            blocks, keys, block_docs, st, added = self._item()
            self._workers.update(w, added)
            for n, key in enumerate(keys):  # (i, c), or (i, c, source) for a mixture
                ic = (int(key[0]), int(key[1]))
                where[ic], docs[ic] = len(where), [tuple(d) for d in block_docs[n]]
                if len(key) > 2:
                    srcs[ic] = names[int(key[2])]
            for c, s in st.items():
                states[int(c)] = s
            parts.append(blocks.numpy())
        rows = [where[key] for key in self.order]
        # one reader whose blocks already come in step order (one stream per reader): its array is the step
        ordered = parts[0] if len(parts) == 1 and rows == list(range(len(rows))) else np.concatenate(parts)[rows]
        self._start, self._states = self._states, states
        self._cur, self._cur_docs, self._cur_sources, a = [], [], [], 0
        for size in self.micro_sizes:
            x, y = split_xy(ordered[a : a + size])
            # pinned after the copies: those are the tensors the step copies to the GPU
            self._cur.append((x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y))
            self._cur_docs.append([d for key in self.order[a : a + size] for d in docs[key]])
            self._cur_sources.append([srcs[key] for key in self.order[a : a + size] if key in srcs])
            a += size
        self._micro, self._skip = self._skip, 0

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cur is None or self._micro >= len(self._cur):
            self._fetch()
        assert self._cur is not None  # _fetch cut the step's micro-batches
        x, y = self._cur[self._micro]
        self.last_docs = self._cur_docs[self._micro]
        self.last_sources = self._cur_sources[self._micro]
        a = sum(self.micro_sizes[: self._micro])
        self.last_blocks = self.order[a : a + self.micro_sizes[self._micro]]
        self._micro += 1
        if self._micro == len(self._cur):
            self._micro, self._cur = 0, None
        return x, y

    def next_step(self) -> StepBatch:
        """This rank's whole next step (call at a step boundary)."""
        if self._cur is not None:
            raise RuntimeError("next_step() in the middle of a step handed out by next()")
        micro, sources = [], []
        docs: list[tuple[int, str]] = []
        while True:
            micro.append(next(self))
            docs += self.last_docs
            sources += self.last_sources
            if self._cur is None:
                break
        self.last_docs, self.last_sources = docs, sources
        return StepBatch(micro, docs)

    def close(self) -> None:
        """Stop the worker processes (the state is kept: iterating again continues from it)."""
        it, self._it, self._dl = self._it, None, None
        stop_iterator(it)
        self._workers.end()

    def pipeline_counts(self) -> counters.Counts:
        """This rank's pipeline and network totals: this process's and its DataLoader workers' (counters.py)."""
        return counters.plus(counters.snapshot(), self._workers.total())

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def split_xy(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of (rows, seq_len+1) int32 blocks: two contiguous int64 tensors, each cast while copied
    (no int64 copy of the blocks first)."""
    return torch.from_numpy(blocks[:, :-1].astype(np.int64)), torch.from_numpy(blocks[:, 1:].astype(np.int64))


def merge_states(rank_states: list[dict[str, Any]]) -> dict[str, Any]:
    """One loader state holding every canonical stream, from the states of all ranks of a checkpoint."""
    first = rank_states[0]
    merged = [None] * len(first["streams"])
    for sd in rank_states:
        if sd.get("fingerprint") != first.get("fingerprint"):
            raise UserError("the checkpoint's ranks disagree about the data stream; the checkpoint is corrupt")
        for c, s in enumerate(sd["streams"]):
            if s is not None:
                merged[c] = s
    micro = max(int(sd.get("micro", 0)) for sd in rank_states)
    return {**first, "streams": merged, "micro": micro}


def val_documents(data_cfg: DataConfig, source: Source | None = None) -> list[str]:
    """The held-out validation texts (usable ones, in order): the first val_docs rows of the last file."""
    source = source if source is not None else open_source(data_cfg)
    plan = source.plan(data_cfg.val_docs, 1)
    return [r.text for r in source.read_val(plan) if usable(r.text)]


def val_batches(data_cfg: DataConfig, batch_size: int, tokenizer: Tokenizer, rank: int = 0, world_size: int = 1,
                num_tokens: int = 0, source: Source | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the fixed validation set, as (x, y) batches.

    The validation documents are packed in order into blocks of seq_len+1 tokens and the first
    ceil(num_tokens / seq_len) blocks are kept (fewer if the held-out documents are short of them). Block j goes to
    rank j % world_size, so the union over ranks is the same set in the same order whatever the world size. Ranks
    may get one block (so possibly one batch) less than others: reduce sums of losses and counts once at the end.
    Returns [] when val_docs is 0. ``source``: the rank's already opened source (else it is opened here).
    """
    check_layout(batch_size, rank, world_size)
    check_int("num_tokens", num_tokens, 0)
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
