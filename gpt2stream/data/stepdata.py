"""The IterableDataset of one physical reader (a rank in-process, or one of its DataLoader workers): it runs the
canonical streams it was given and yields, per optimizer step, their blocks of that step.

Item per step: ``(blocks (n, seq_len+1) int32 tensor, [(i, c)] of each row, [docs of each row], {c: state},
counters)``: a worker's pipeline and network totals since it started (counters.py; None in-process). For a mixture
each row's key is ``(i, c, x)`` (x: the index of the row's source) and each document ``(epoch, id, source name)``.
DataLoader hands items out worker 0, 1, ..., W-1, 0, ...; since every worker yields exactly one item per step,
the rank's loader takes W consecutive items as one step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gpt2stream.data import counters
from gpt2stream.data.blockbuffer import BufferedStream
from gpt2stream.data.dataset import Background, ReaderStream, WorkerError, tokenizer_threads
from gpt2stream.data.mixstream import MixStream, source_seed, sub_buffer, sub_window
from gpt2stream.data.sources.base import HandleCache, Row
from gpt2stream.data.spec import StreamSpec
from gpt2stream.data.tokpool import TokenizerPool
from gpt2stream.data.unitspill import UnitSpill
from gpt2stream.errors import UserError
from tokenizer import Tokenizer


class StepDataset(IterableDataset):
    """The canonical streams of ``spec`` that this rank's readers run: ``readers`` holds each reader's streams,
    ``states`` each canonical stream's state (None = fresh)."""

    def __init__(self, source: Any, units: Any, tokenizer: Tokenizer, spec: StreamSpec, *,
                 readers: list[list[int]], states: list[dict | None], threads_per_reader: int | None = None,
                 spill: bool = False) -> None:
        """``source``/``units``: the Source and its training units, or for a mixture (``spec.mixture``) the
        MixtureSource and a tuple of each source's units."""
        super().__init__()
        self.source = source
        self.units = units
        self.tokenizer = tokenizer
        self.spec = spec
        self.readers = readers
        self.states = states
        self.threads = threads_per_reader or tokenizer_threads(len(readers))
        self.spill = spill  # keep partly read units on disk (the rank runs many streams: unitspill.py)

    def _stream(self, c: int, shared: tuple[Background, TokenizerPool], handles: list[HandleCache],
                spill: UnitSpill | None) -> BufferedStream | MixStream:
        if self.spec.mixture:
            return self._mix_stream(c, shared, handles, spill)
        spec, handles0 = self.spec, handles[0]

        def make_reader(doc_state: dict | None) -> ReaderStream:
            return ReaderStream(self.source, self.units, self.tokenizer, spec, rows=1, reader=c,
                                num_readers=spec.streams, state=doc_state, threads=self.threads, shared=shared,
                                window=spec.window, handles=handles0, spill=spill)

        return BufferedStream(make_reader, c, seed=spec.seed, buffer_blocks=spec.buffer_blocks, state=self.states[c])

    def _mix_stream(self, c: int, shared: tuple[Background, TokenizerPool], handles: list[HandleCache],
                    spill: UnitSpill | None) -> MixStream:
        """Canonical stream c of a mixture: a sub-stream per source (mixstream.py), each with the source's own
        seed, open files, spilled units and a window and block buffer scaled by its weight."""
        spec, mix = self.spec, self.spec.mixture

        def make_sub(x: int, state: dict | None) -> BufferedStream:
            sub = dataclasses.replace(spec, seed=source_seed(spec.seed, x))
            window, keyed = sub_window(spec.window, mix[x].weight), SourceSpill(spill, x) if spill else None

            def make_reader(doc_state: dict | None) -> ReaderStream:
                return ReaderStream(self.source.sources[x], self.units[x], self.tokenizer, sub, rows=1, reader=c,
                                    num_readers=spec.streams, state=doc_state, threads=self.threads, shared=shared,
                                    window=window, handles=handles[x], spill=keyed)

            return BufferedStream(make_reader, c, seed=sub.seed, buffer_blocks=sub_buffer(spec.buffer_blocks,
                                                                                          mix[x].weight), state=state)

        return MixStream(make_sub, c, streams=spec.streams, seed=spec.seed, names=[s.name for s in mix],
                         weights=[s.weight for s in mix], max_epochs=[s.max_epochs for s in mix],
                         state=self.states[c])

    def __iter__(self):
        info = get_worker_info()
        mine = self.readers[info.id if info is not None else 0]
        counters.set_reader_threads(self.threads)
        baseline = counters.snapshot() if info is not None else None  # a forked worker starts with our totals
        background = Background()
        pool = TokenizerPool(self.threads, held=True)  # the look-ahead waits for the first step (tokpool.py)
        # one read thread, one set of open files and one tokenizer pool for all of this reader's streams
        handles = [HandleCache() for _ in range(max(1, len(self.spec.mixture)))]  # a file index is per source
        spill = UnitSpill() if self.spill else None
        gens = [self._stream(c, (background, pool), handles, spill).blocks() for c in mine]
        try:
            while True:
                rows: list[Any] = []
                keys, docs, states = [], [], {}
                for c, gen in zip(mine, gens, strict=True):
                    for i in range(self.spec.k):
                        block, d, st, *x = next(gen)  # x: a mixture's source of the block
                        rows.append(block)
                        keys.append((i, c, *x))
                        docs.append(d)
                        states[c] = st
                added = counters.since(baseline) if baseline is not None else None
                pool.release()
                # one concatenate: np.stack costs more in Python than its copy
                yield torch.from_numpy(np.concatenate(rows).reshape(len(rows), -1)), keys, docs, states, added
        except UserError as e:
            if info is None:
                raise
            yield WorkerError(type(e).__name__, str(e))
        finally:
            for gen in gens:
                gen.close()
            def release() -> None:  # after the reads still queued on the read thread
                for h in handles:
                    h.close()
                if spill:
                    spill.close()

            background.stop(last=release)
            pool.shutdown(wait=False, cancel_futures=True)


class SourceSpill:
    """A reader's UnitSpill seen by one source of a mixture: the file of a stream's partly read unit is named by the
    stream and the source, since every stream of a mixture reads every source."""

    def __init__(self, spill: UnitSpill, source: int) -> None:
        self.base, self.source = spill, source

    def spill(self, key: Any, rows: list[Row], first: int) -> Any:
        return self.base.spill(f"{key}-{self.source}", rows, first)
