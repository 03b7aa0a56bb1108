"""Phase 1 of training: split the documents with the regex and count the DISTINCT chunks.

Memory grows with the number of distinct chunks (89k on the 20 MB shared corpus), not with the amount of text: each
document is split and counted, then dropped. With ``workers > 1`` the splitting runs in worker processes, each keeping
its own counter; the counters are summed at the end, so the result is the same whatever the number of processes.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections import Counter
from collections.abc import Iterable, Iterator

import regex

from tokenizer.progress import Progress, human

BATCH_CHARS = 1 << 20  # text per task handed to a worker: big enough to amortize pickling, small enough to stream
SEGMENT_CHARS = 1 << 18  # long documents are split at safe points into pieces of about this size

# A newline with a non-space character on each side is a chunk boundary under both the GPT-2 and GPT-4 patterns,
# and cutting there leaves every chunk unchanged: no alternative matches a newline followed by a letter, digit or
# punctuation, and a lone newline ending a piece is the same chunk as one before a non-space character.
_SAFE_CUT = regex.compile(r"\S\n(?=\S)")


def segments(doc: str, size: int | None = None) -> Iterator[str]:
    r"""Cut a long document after safe newlines into pieces of at least ``size`` characters (where it can), so that
    splitting a huge file never builds one giant list of chunks. Splitting the pieces gives the same chunks as
    splitting the whole document (for the gpt2 / gpt4 patterns; see ``_SAFE_CUT``).

    >>> list(segments("ab\ncd\nef", size=2))
    ['ab\n', 'cd\n', 'ef']
    """
    size = SEGMENT_CHARS if size is None else size
    start = 0
    while len(doc) - start > size:
        m = _SAFE_CUT.search(doc, start + size - 1)
        if m is None:
            break
        yield doc[start : m.end()]
        start = m.end()
    yield doc[start:] if start else doc


def count_chunks_serial(docs: Iterable[str], pattern: str, progress: Progress | None = None) -> Counter[str]:
    """chunk -> number of occurrences over all documents.

    >>> count_chunks_serial(["hi hi", "hi!"], r" ?\\w+|\\S")
    Counter({'hi': 2, ' hi': 1, '!': 1})
    """
    pat = regex.compile(pattern)
    counts: Counter[str] = Counter()
    chars = 0
    for doc in docs:
        for piece in segments(doc):
            counts.update(pat.findall(piece))
        chars += len(doc)
        if progress is not None and progress.due():
            progress.update(_status(chars, None, len(counts), progress.elapsed()))
    return counts


def count_chunks(docs: Iterable[str], pattern: str, workers: int = 1, progress: Progress | None = None) -> Counter[str]:
    """Like ``count_chunks_serial`` but splits in ``workers`` processes (1 = in this process)."""
    if workers <= 1:
        return count_chunks_serial(docs, pattern, progress)
    # fork: no re-import of the caller's modules (train_tokenizer's data pipeline imports torch). The workers start
    # before the first document is read, so no reader thread exists yet at fork time.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    tasks = ctx.Queue(maxsize=2 * workers)  # bounded: reading never runs far ahead of splitting
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(pattern, tasks, results), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    pool = _Pool(procs, tasks, results)
    chars = 0
    total: Counter[str] = Counter()
    try:
        for batch in _batches(docs, BATCH_CHARS):
            pool.put(batch)
            chars += sum(map(len, batch))
            if progress is not None and progress.due():
                progress.update(_status(chars, pool.chunks, None, progress.elapsed()))
        for _ in procs:
            pool.put(None)
        for _ in procs:
            total.update(pool.counter())  # sum of per-worker counters: independent of how batches were dealt
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return total


class _Pool:
    """The parent's side of the worker protocol: every wait is bounded, so a dead worker raises instead of hanging.

    Workers send an int (chunks found) per batch, their counter (a dict) after the stop sentinel, or the exception
    that stopped them."""

    def __init__(self, procs, tasks, results) -> None:
        self.procs, self.tasks, self.results = procs, tasks, results
        self.chunks = 0
        self._counters: list[dict] = []

    def put(self, item) -> None:
        while True:
            try:
                self.tasks.put(item, timeout=0.5)
                break
            except queue.Full:
                self._check_alive()
            self._drain(block=False)
        self._drain(block=False)

    def counter(self) -> dict:
        while not self._counters:
            self._drain(block=True)
        return self._counters.pop()

    def _drain(self, block: bool) -> None:
        while True:
            try:
                msg = self.results.get(timeout=0.5) if block else self.results.get_nowait()
            except queue.Empty:
                if block:
                    self._check_alive()
                    continue
                return
            if isinstance(msg, BaseException):
                raise msg
            if isinstance(msg, int):
                self.chunks += msg
            else:
                self._counters.append(msg)
                return
            if block:
                return

    def _check_alive(self) -> None:
        dead = [p for p in self.procs if not p.is_alive() and p.exitcode not in (0, None)]
        if dead:
            raise RuntimeError(f"a chunk-counting worker died (exit code {dead[0].exitcode}); out of memory?")


def _status(chars: int, chunks: int | None, distinct: int | None, elapsed: float) -> str:
    parts = [f"split: {human(chars)} chars read"]
    if chunks is not None:
        parts.append(f"{human(chunks)} chunks")
    if distinct is not None:
        parts.append(f"{human(distinct)} distinct")
    parts.append(f"{human(chars / max(elapsed, 1e-9))} chars/s")
    return ", ".join(parts)


def _batches(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for doc in docs:
        for piece in segments(doc):
            batch.append(piece)
            size += len(piece)
            if size >= max_chars:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _worker(pattern: str, tasks, results) -> None:
    try:
        pat = regex.compile(pattern)
        counts: Counter[str] = Counter()
        while (batch := tasks.get()) is not None:
            n = 0
            for doc in batch:
                found = pat.findall(doc)
                counts.update(found)
                n += len(found)
            results.put(n)
        results.put(dict(counts))
    except BaseException as e:  # surface the failure in the parent instead of hanging it
        results.put(e)
