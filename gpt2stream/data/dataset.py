"""One reader's stream (units -> shuffled documents -> tokens -> packed batches); stepdata.StepDataset runs it.

A reader's state after each batch is a handful of ints (see ``fresh_state``): the epoch, where the current shuffle
window starts (index into the reader's unit list for the epoch + row offset in that unit), the window's index, the
position in the window's emission order of the document being packed, and how many of that document's tokens
(+ <|endoftext|>) were already handed out. Rebuilding the stream from such a state re-reads only that window (and,
as always, reads the next one ahead) and yields exactly the batches the uninterrupted stream would have yielded.

Threads of a reader: the consumer (packing, yielding), a tokenizer pool (one batch of documents ahead) and one
background thread reading the next window (whose first tokenizer batch then goes to the pool: tokpool.Ahead); none
of them changes which rows are used or in what order.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from gpt2stream.data import counters
from gpt2stream.data.packing import Packer, doc_tokens
from gpt2stream.data.sharding import epoch_order, reader_units, readers_per_rank
from gpt2stream.data.shuffle import window_order, window_size
from gpt2stream.data.sources.base import HandleCache, Row, Source, Unit, usable
from gpt2stream.data.spec import StreamSpec
from gpt2stream.data.tokpool import Ahead, TokenizerPool, encoder
from gpt2stream.errors import DataStreamError, UserError
from tokenizer import Tokenizer

EMPTY_EPOCHS_LIMIT = 5
STOP_WAIT = 30.0  # seconds close() waits for a read in progress (one unit; longer only if the network is dead)
TOKENIZE_BATCH = 512  # documents tokenized together (spread over the pool): keeps it busy, stays lazy enough
FIRST_BATCH = 64  # documents in a window's first tokenizer batch, tokenized as soon as the window is read


def batch_spans(start: int, n: int) -> list[tuple[int, int]]:
    """The emission ranges [a, b) of a window's tokenizer batches, from position ``start`` of its ``n`` documents:
    FIRST_BATCH, then doubling up to TOKENIZE_BATCH. The first batch is tokenized with the window's read (ahead), so
    it stays small in memory; each next one, twice the one before, is tokenized while that one is packed.

    >>> batch_spans(0, 1000)
    [(0, 64), (64, 192), (192, 448), (448, 960), (960, 1000)]
    """
    out, a, size = [], start, FIRST_BATCH
    while a < n:
        out.append((a, min(n, a + size)))
        a, size = a + size, min(TOKENIZE_BATCH, 2 * size)
    return out


def tokenizer_threads(workers_per_rank: int) -> int:
    """Threads per reader for tokenizing: this machine's cores shared by all its readers (ranks on this node, from
    torchrun's LOCAL_WORLD_SIZE, x workers per rank), 1..8. More threads than cores only adds switching
    (measured: 2 threads beat tiktoken's default 8 on 2 cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, min(8, cores // (local_ranks * readers_per_rank(workers_per_rank))))


def stop_iterator(it: Any) -> None:
    """Stop what a loader is iterating: a DataLoader iterator's worker processes, or an in-process generator's
    threads (None: nothing to stop)."""
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    elif it is not None and hasattr(it, "close"):
        it.close()


def dead_workers(loader: Any, wait_s: float = 0.0) -> list[tuple[int, int, int | None]]:
    """A loader's DataLoader workers that died: [(worker index, pid, exit code; negative = killed by that signal)].
    Empty for an in-process loader. ``wait_s``: how long to wait for a dying worker (its sockets close, and the main
    process sees the error, before its exit status is there)."""
    import time

    workers = getattr(getattr(loader, "_it", None), "_workers", None) or []
    deadline = time.monotonic() + wait_s
    while True:
        dead = [(i, w.pid, w.exitcode) for i, w in enumerate(workers) if w.exitcode not in (None, 0)]
        if dead or not workers or time.monotonic() >= deadline:
            return dead
        time.sleep(0.05)


class Background:
    """One daemon thread running submitted calls in order (the reads of one reader).

    A daemon thread, not a ThreadPoolExecutor: a read still retrying against a dead network when the stream is
    closed must not hold up the process's exit (executor threads are joined at exit).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="gpt2stream-read")
            self._thread.start()
        fut: Future = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as e:  # handed to whoever waits on the future
                    fut.set_exception(e)

    def stop(self, last: Callable[[], Any] | None = None, wait: float = STOP_WAIT) -> None:
        """Run ``last`` (cleanup) after the queued calls, end the thread, and wait up to ``wait`` seconds for it.

        Waiting matters: a thread still inside pyarrow when the interpreter finalizes can abort the process
        ("Fatal Python error: PyGILState_Release"). Callers cancel long work first (WindowReader.cancel), so the
        wait is one unit read; only against a dead network is the thread left behind.
        """
        if self._thread is not None:
            if last is not None:
                self._jobs.put((Future(), last, ()))
            self._jobs.put(None)
            self._thread.join(wait)


class Cancelled(Exception):
    """The stream was closed while a window was being read."""


class WindowReader:
    """Reads shuffle windows: ``size`` rows from a position (unit index, row offset) of a reader's unit list.

    Used from the reader's Background thread only, so its unit cache and open files (HandleCache: HTTP
    connections reused between row groups) need no locks. ``handles``: open files shared with the reader's other
    streams (their owner closes them); ``spill``: keep the rest of a partly read unit on disk (unitspill.py).
    """

    def __init__(self, source: Source, size: int, handles: HandleCache | None = None, spill: Any = None,
                 key: Any = 0) -> None:
        self.source = source
        self.size = size
        self._own_handles = handles is None
        self.handles = handles if handles is not None else HandleCache()
        self.spill, self.key = spill, key
        self._cached: tuple[Unit, Any] | None = None  # (unit, its rows): a window often ends inside a unit
        self.cancelled = False  # set from the consumer's thread: stop between units

    def read(self, mine: list[Unit], cursor: int, row: int) -> tuple[list[Row], int, int]:
        """Up to ``size`` rows starting at (cursor, row); returns them and the position after them."""
        out: list[Row] = []
        while len(out) < self.size and cursor < len(mine):
            if self.cancelled:
                raise Cancelled
            unit = mine[cursor]
            if self._cached is None or self._cached[0] != unit or row < getattr(self._cached[1], "first", 0):
                self._drop()  # drop the old rows before holding the new ones (peak memory)
                self._cached = (unit, self.source.read_unit(unit, self.handles))
            rows = self._cached[1]
            take = rows[row : row + self.size - len(out)]
            out += take
            row += len(take)
            if row >= len(rows):
                cursor, row = cursor + 1, 0
        if self.spill is not None and self._cached is not None and isinstance(self._cached[1], list):
            unit, rows = self._cached
            if cursor < len(mine) and mine[cursor] == unit and row < len(rows):  # the next window starts in it
                self._cached = (unit, self.spill.spill(self.key, rows, row))
        return out, cursor, row

    def _drop(self) -> None:
        if self._cached is not None and hasattr(self._cached[1], "drop"):
            self._cached[1].drop()
        self._cached = None

    def close(self) -> None:
        self._drop()
        if self._own_handles:
            self.handles.close()


def fresh_state() -> dict[str, int]:
    return {"epoch": 0, "cursor": 0, "row": 0, "window": 0, "pos": 0, "tok": 0, "docs": 0, "skipped": 0}


class ReaderStream:
    """The batches of one reader (one rank x worker), resumable from any state it attached to a batch.

    ``spec`` gives seq_len, seed and shuffle_buffer; the reader is number ``reader`` of ``num_readers``, yields
    blocks of ``rows`` rows and shuffles in windows of ``window`` documents (default: window_size(shuffle_buffer)).
    """

    def __init__(
        self,
        source: Source,
        units: tuple[Unit, ...],
        tokenizer: Tokenizer,
        spec: StreamSpec,
        *,
        rows: int,
        reader: int,
        num_readers: int,
        state: dict | None = None,
        shuffle_units: bool = True,
        threads: int = 1,
        shared: tuple[Background, TokenizerPool] | None = None,
        window: int | None = None,
        handles: HandleCache | None = None,
        spill: Any = None,
    ) -> None:
        self.source = source
        self.units = units
        self.tok = tokenizer
        self._one = encoder(tokenizer)  # one document's ids (a uint32 array from tiktoken)
        self.eot = int(tokenizer.eot_id)
        self.rows = rows
        self.block_len = spec.seq_len + 1
        self.seed = spec.seed
        self.shuffle_buffer = spec.shuffle_buffer
        self.window = window if window is not None else window_size(spec.shuffle_buffer)
        self.reader = reader
        self.num_readers = num_readers
        self.shuffle_units = shuffle_units
        self.threads = threads
        self.state = dict(state) if state else fresh_state()
        # shared: the reader's read thread and tokenizer pool, when it runs several streams (their owner stops them)
        self._shared = shared is not None
        self._tok_pool: TokenizerPool | None
        self._background, self._tok_pool = shared if shared is not None else (Background(), None)
        self._windows = WindowReader(source, self.window, handles, spill, key=reader)

    def _mine(self, epoch: int) -> list[Unit]:
        """This reader's units for the epoch, in reading order."""
        order = epoch_order(len(self.units), self.seed, epoch, self.shuffle_units)
        return [self.units[k] for k in reader_units(order, self.reader, self.num_readers)]

    def read_window(self, mine: list[Unit], cursor: int, row: int, epoch: int, window: int, start: int) -> Future:
        """Window number ``window`` of ``epoch``, at (cursor, row) of ``mine``, read in the background thread, which
        then hands its first tokenizer batch (from emission position ``start``) to the pool's look-ahead: a stream
        reaching the window finds those tokens ready instead of waiting for them (the stall of every window's
        start before). The future's result: ([(picked, usable texts)] per batch, the first batch (Ahead or None),
        rows, next cursor, next row)."""
        return self._background.submit(self._read_window, mine, cursor, row, epoch, window, start)

    def _read_window(self, mine: list[Unit], cursor: int, row: int, epoch: int, window: int, start: int) -> tuple:
        rows, cursor, row = self._windows.read(mine, cursor, row)
        emit = window_order(len(rows), self.shuffle_buffer, self.seed, epoch, self.reader, window)
        batches = []
        for a, b in batch_spans(start, len(emit)):
            picked = [(a + k, rows[i].text, rows[i].doc_id) for k, i in enumerate(emit[a:b])]
            batches.append((picked, [t for _, t, _ in picked if usable(t)]))
        first = Ahead(self._submit, batches[0][1]) if batches else None
        if first is not None:
            assert self._tok_pool is not None  # made before the first read (_batches)
            self._tok_pool.ahead(first.futures)
        return batches, first, len(rows), cursor, row

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token arrays (+ eot) of ``texts``; runs in a tokenizer thread, so the copy into int32 arrays of one
        slice overlaps the encoding of the others. This pool is the batch encoder: encode_ordinary per document
        is what encode_ordinary_batch runs in its threads, minus a new pool and a future per document each call
        (~10% of the CPU time); tokenizers without encode_ordinary get encode_ordinary_batch."""
        t0 = time.perf_counter()
        one = self._one
        encoded = [one(t) for t in texts] if one is not None else self.tok.encode_ordinary_batch(texts, num_threads=1)
        out = [doc_tokens(ids, self.eot) for ids in encoded]
        counters.add_tokenized(len(out), sum(len(a) for a in out), time.perf_counter() - t0)
        return out

    def _submit(self, texts: list[str]) -> list[Future]:
        assert self._tok_pool is not None  # made before the first read (_batches): reads submit from their thread
        step = max(1, -(-len(texts) // (4 * self.threads)))
        return [self._tok_pool.submit(self._encode, texts[i : i + step]) for i in range(0, len(texts), step)]

    def _encoded(self, batches: list[tuple[list, list[str]]], first: Ahead | None):
        """(picked, iterator of token arrays of the usable ones) per tokenizer batch of a window; the first batch's
        tokens were submitted ahead (or are now), and the next batch is being tokenized while one is packed."""
        ahead = first.futures() if first is not None else []
        for k, (picked, _good) in enumerate(batches):
            current = ahead
            ahead = self._submit(batches[k + 1][1]) if k + 1 < len(batches) else []
            yield picked, (arr for f in current for arr in f.result())

    def batches(self) -> Iterator[tuple[np.ndarray, dict, tuple[tuple[int, str], ...]]]:
        """(block of rows x (seq_len+1) tokens, the state after it, [(epoch, id)] of the documents whose first
        token is in it), endlessly."""
        try:
            yield from self._batches()
        finally:  # closing the generator (loader.close(), end of a worker) stops the helper threads
            self._windows.cancelled = True
            if self._shared:
                self._background.submit(self._windows.close)
            else:
                self._background.stop(last=self._windows.close)
                if self._tok_pool is not None:
                    self._tok_pool.shutdown(wait=False, cancel_futures=True)

    def _batches(self) -> Iterator[tuple[np.ndarray, dict, tuple[tuple[int, str], ...]]]:
        st = self.state
        packer = Packer(self.rows, self.block_len)
        # (offset in the whole packed stream, (epoch, id)) of documents not yet in a block; absolute offsets, so a
        # cut only pops from the front instead of rebuilding the list
        starts: deque[tuple[int, tuple[int, str]]] = deque()
        cut = 0  # tokens of the stream handed out in blocks so far
        resume_pos, resume_tok = st["pos"], st["tok"]
        whole_epoch = st["cursor"] == 0 and st["row"] == 0 and resume_pos == 0 and resume_tok == 0
        used = empty_epochs = 0
        mine = self._mine(st["epoch"])
        if self._tok_pool is None:
            self._tok_pool = TokenizerPool(self.threads)
        pending = self.read_window(mine, st["cursor"], st["row"], st["epoch"], st["window"], resume_pos)
        while True:  # windows
            batches, first, n_rows, next_cursor, next_row = pending.result()
            # Read the next window (and tokenize its first batch) while this one is tokenized; after the last window
            # of the epoch, that is the first window of the next epoch. Reading ahead changes nothing in which rows
            # are used, or how.
            epoch_ends = next_cursor >= len(mine) or not n_rows
            next_mine = self._mine(st["epoch"] + 1) if epoch_ends else mine
            pending = (self.read_window(next_mine, 0, 0, st["epoch"] + 1, 0, 0) if epoch_ends else
                       self.read_window(mine, next_cursor, next_row, st["epoch"], st["window"] + 1, 0))
            for picked, encoded in self._encoded(batches, first):
                for pos, text, doc_id in picked:  # in order, so the counters in each state are exact
                    if not usable(text):
                        st["skipped"] += 1
                        continue
                    used += 1
                    arr = next(encoded)
                    if resume_tok:
                        arr, skip = arr[resume_tok:], resume_tok  # this document was counted before the save
                        resume_tok = 0
                    else:
                        st["docs"] += 1
                        skip = 0
                        starts.append((cut + packer.pending, (st["epoch"], doc_id)))
                    for block in packer.push(arr):
                        st["pos"], st["tok"] = pos, skip + len(arr) - packer.pending
                        cut += packer.need
                        here = []
                        while starts and starts[0][0] < cut:
                            here.append(starts.popleft()[1])
                        # a tuple of tuples of ints and strings: the garbage collector stops tracking it, so the
                        # blocks held in a block buffer do not trigger full collections (~0.2 s each)
                        yield block, dict(st), tuple(here)
            if not epoch_ends:
                st.update(cursor=next_cursor, row=next_row, window=st["window"] + 1, pos=0, tok=0)
                continue
            # Without usable text the loop would spin forever. One empty share can be bad luck (the units are
            # dealt anew each epoch); several in a row mean the data has (almost) no text.
            empty_epochs = empty_epochs + 1 if whole_epoch and used == 0 else 0
            if empty_epochs == EMPTY_EPOCHS_LIMIT:
                raise UserError(self._no_text_message())
            st.update(epoch=st["epoch"] + 1, cursor=0, row=0, window=0, pos=0, tok=0)
            mine, whole_epoch, used = next_mine, True, 0


    def _no_text_message(self) -> str:
        """Why a stream found no usable text for EMPTY_EPOCHS_LIMIT epochs in a row: the texts, or too few pieces."""
        head = f"stream {self.reader} of {self.num_readers} found no usable text in {EMPTY_EPOCHS_LIMIT} whole epochs"
        if self.state["skipped"]:
            return (f"{head}: the {self.state['skipped']} documents it read were all empty or not a string; check "
                    f"--text-column and the data")
        return (f"{head}: its share of the {len(self.units)} pieces of the data never held a document; the data has "
                f"too few pieces with documents for {self.num_readers} streams: use --streams "
                f"{max(1, self.num_readers // 4)} or less")


class WorkerError:
    """A UserError raised in a DataLoader worker, carried to the main process with its message intact.

    (DataLoader would re-raise it wrapped in a traceback dump.)
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message

    def reraise(self):
        cls = DataStreamError if self.kind == "DataStreamError" else UserError
        raise cls(self.message)
