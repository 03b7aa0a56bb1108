"""Phase 1 of training: split the documents with the regex and count the DISTINCT chunks.

Memory grows with the number of distinct chunks (89k on the 20 MB shared corpus), not with the amount of text: each
document is split and counted, then dropped. With ``workers > 1`` the splitting runs in worker processes, each keeping
its own counter; the counters are summed at the end, so the result is the same whatever the number of processes.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from collections.abc import Iterable, Iterator

import regex

from tokenizer.progress import Progress, human

BATCH_CHARS = 1 << 20  # text per task handed to a worker: big enough to amortize pickling, small enough to stream


def count_chunks_serial(docs: Iterable[str], pattern: str, progress: Progress | None = None) -> Counter[str]:
    """chunk -> number of occurrences over all documents.

    >>> count_chunks_serial(["hi hi", "hi!"], r" ?\\w+|\\S")
    Counter({'hi': 2, ' hi': 1, '!': 1})
    """
    pat = regex.compile(pattern)
    counts: Counter[str] = Counter()
    chars = 0
    for doc in docs:
        counts.update(pat.findall(doc))
        chars += len(doc)
        if progress is not None and progress.due():
            progress.update(_status(chars, None, len(counts), progress.elapsed()))
    return counts


def count_chunks(docs: Iterable[str], pattern: str, workers: int = 1, progress: Progress | None = None) -> Counter[str]:
    """Like ``count_chunks_serial`` but splits in ``workers`` processes (1 = in this process)."""
    if workers <= 1:
        return count_chunks_serial(docs, pattern, progress)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    tasks = ctx.Queue(maxsize=2 * workers)  # bounded: reading never runs far ahead of splitting
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(pattern, tasks, results), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    chars = chunks = 0
    total: Counter[str] = Counter()
    try:
        for batch in _batches(docs, BATCH_CHARS):
            tasks.put(batch)
            chars += sum(map(len, batch))
            while not results.empty():
                chunks += _done_batch(results.get())
            if progress is not None and progress.due():
                progress.update(_status(chars, chunks, None, progress.elapsed()))
        for _ in procs:
            tasks.put(None)
        finished = 0
        while finished < workers:
            msg = results.get()
            if isinstance(msg, int):
                chunks += msg
            elif isinstance(msg, BaseException):
                raise msg
            else:
                total.update(msg)  # sum of per-worker counters: independent of how the batches were dealt
                finished += 1
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return total


def _done_batch(msg: object) -> int:
    if isinstance(msg, BaseException):
        raise msg
    assert isinstance(msg, int), "a worker sent its counter before being told to stop"
    return msg


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
        batch.append(doc)
        size += len(doc)
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
