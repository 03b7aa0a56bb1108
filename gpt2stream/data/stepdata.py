"""The IterableDataset of one physical reader (a rank in-process, or one of its DataLoader workers): it runs the
canonical streams it was given and yields, per optimizer step, their blocks of that step.

Item per step: ``(blocks (n, seq_len+1) int64 tensor, [(i, c)] of each row, [docs of each row], {c: state},
counters)``: a worker's pipeline and network totals since it started (counters.py; None in-process).
DataLoader hands items out worker 0, 1, ..., W-1, 0, ...; since every worker yields exactly one item per step,
the rank's loader takes W consecutive items as one step.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gpt2stream.data import counters
from gpt2stream.data.blockbuffer import BufferedStream
from gpt2stream.data.dataset import Background, ReaderStream, WorkerError, tokenizer_threads
from gpt2stream.data.sources.base import HandleCache, Source, Unit
from gpt2stream.data.spec import StreamSpec
from gpt2stream.data.unitspill import UnitSpill
from gpt2stream.errors import UserError
from tokenizer import Tokenizer


class StepDataset(IterableDataset):
    """The canonical streams of ``spec`` that this rank's readers run: ``readers`` holds each reader's streams,
    ``states`` each canonical stream's state (None = fresh)."""

    def __init__(self, source: Source, units: tuple[Unit, ...], tokenizer: Tokenizer, spec: StreamSpec, *,
                 readers: list[list[int]], states: list[dict | None], threads_per_reader: int | None = None,
                 spill: bool = False) -> None:
        super().__init__()
        self.source = source
        self.units = units
        self.tokenizer = tokenizer
        self.spec = spec
        self.readers = readers
        self.states = states
        self.threads = threads_per_reader or tokenizer_threads(len(readers))
        self.spill = spill  # keep partly read units on disk (the rank runs many streams: unitspill.py)

    def _stream(self, c: int, shared: tuple[Background, ThreadPoolExecutor], handles: HandleCache,
                spill: UnitSpill | None) -> BufferedStream:
        spec = self.spec

        def make_reader(doc_state: dict | None) -> ReaderStream:
            return ReaderStream(self.source, self.units, self.tokenizer, spec, rows=1, reader=c,
                                num_readers=spec.streams, state=doc_state, threads=self.threads, shared=shared,
                                window=spec.window, handles=handles, spill=spill)

        return BufferedStream(make_reader, c, seed=spec.seed, buffer_blocks=spec.buffer_blocks, state=self.states[c])

    def __iter__(self):
        info = get_worker_info()
        mine = self.readers[info.id if info is not None else 0]
        counters.set_reader_threads(self.threads)
        baseline = counters.snapshot() if info is not None else None  # a forked worker starts with our totals
        background = Background()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gpt2stream-tokenize")
        # one read thread, one set of open files and one tokenizer pool for all of this reader's streams
        handles, spill = HandleCache(), UnitSpill() if self.spill else None
        gens = [self._stream(c, (background, pool), handles, spill).blocks() for c in mine]
        try:
            while True:
                rows, keys, docs, states = [], [], [], {}
                for c, gen in zip(mine, gens, strict=True):
                    for i in range(self.spec.k):
                        block, d, st = next(gen)
                        rows.append(block)
                        keys.append((i, c))
                        docs.append(d)
                        states[c] = st
                added = counters.since(baseline) if baseline is not None else None
                yield torch.from_numpy(np.stack(rows)).long(), keys, docs, states, added
        except UserError as e:
            if info is None:
                raise
            yield WorkerError(type(e).__name__, str(e))
        finally:
            for gen in gens:
                gen.close()
            def release() -> None:  # after the reads still queued on the read thread
                handles.close()
                if spill:
                    spill.close()

            background.stop(last=release)
            pool.shutdown(wait=False, cancel_futures=True)
