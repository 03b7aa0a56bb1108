"""Train a byte-level BPE tokenizer: split and count the chunks, learn the merges, build a ``Tokenizer``."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizer.bpe import MAX_VOCAB, learn_merges
from tokenizer.chunks import count_chunks
from tokenizer.core import EOT, Tokenizer
from tokenizer.errors import TokenizerError
from tokenizer.patterns import pattern_by_name, pattern_name
from tokenizer.progress import Progress, eta, human

SPECIAL_TOKENS = (EOT,)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def default_workers() -> int:
    """Split/count processes: one per CPU, at most 4 (the merge phase is serial anyway)."""
    return max(1, min(4, os.cpu_count() or 1))


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise TokenizerError(
            f"--vocab-size {vocab_size} is out of range: it counts the 256 byte tokens, the merges and "
            f"{len(SPECIAL_TOKENS)} special token(s), so it must be between {MIN_VOCAB} and {MAX_VOCAB}"
        )


def train_bpe(
    docs: Iterable[str],
    vocab_size: int,
    pattern: str = "gpt2",
    workers: int | None = None,
    progress: Progress | None = None,
) -> Tokenizer:
    """Learn a tokenizer with ``vocab_size`` tokens (256 bytes + merges + ``<|endoftext|>``) from ``docs``.

    ``pattern`` is ``"gpt2"``, ``"gpt4"`` or a regex. The result does not depend on ``workers``. If the corpus runs
    out of pairs first, the vocabulary is smaller (a note goes to the progress stream).
    """
    check_vocab_size(vocab_size)
    regex_str = pattern_by_name(pattern) if pattern in ("gpt2", "gpt4") else pattern
    workers = default_workers() if workers is None else workers
    progress = progress if progress is not None else Progress(enabled=False)

    read = [0]

    def counted(docs: Iterable[str]) -> Iterable[str]:
        for doc in docs:
            read[0] += len(doc)
            yield doc

    counts = count_chunks(counted(docs), regex_str, workers=workers, progress=progress)
    if not counts:
        raise TokenizerError("the corpus is empty: no text was read; check --data, --split, --text-column")
    progress.done(
        f"split: {human(read[0])} chars read, {human(sum(counts.values()))} chunks, {human(len(counts))} distinct, "
        f"{human(read[0] / max(progress.elapsed(), 1e-9))} chars/s, {progress.elapsed():.1f}s"
    )
    # sorted so the word order (and so every intermediate state) is the same however the counting was split up
    chunks = sorted((utf8(s), c) for s, c in counts.items())
    del counts

    num_merges = vocab_size - MIN_VOCAB
    merge_progress = Progress(progress.stream, progress.interval, progress.enabled)

    def on_merge(done: int) -> None:
        if merge_progress.due():
            el = merge_progress.elapsed()
            merge_progress.update(
                f"merges: {done}/{num_merges}, {done / max(el, 1e-9):.0f}/s, ETA {eta(done, num_merges, el)}"
            )

    merges = learn_merges(chunks, num_merges, on_merge=on_merge)
    del chunks
    note = "" if len(merges) == num_merges else f" (corpus ran out of pairs: vocab is {MIN_VOCAB + len(merges)})"
    merge_progress.done(f"merges: {len(merges)} in {merge_progress.elapsed():.1f}s{note}")
    return tokenizer_from_merges(merges, regex_str)


def utf8(text: str) -> bytes:
    """UTF-8 bytes; lone surrogates become U+FFFD first, exactly as tiktoken's encode treats them."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def tokenizer_from_merges(merges: list[tuple[int, int]], pattern: str) -> Tokenizer:
    """Ranks: bytes 0..255, merge k -> 256 + k; then the special tokens."""
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    ranks = {tok: i for i, tok in enumerate(vocab)}
    specials = {s: len(vocab) + i for i, s in enumerate(SPECIAL_TOKENS)}
    return Tokenizer(pattern_name(pattern) or "custom", pattern, ranks, specials)
