"""Phase 2 of training: learn byte-pair merges from the counted chunks, with incremental pair-count updates.

Algorithm (the same as ``tokenizers``' BpeTrainer, in Python):

- every distinct chunk becomes a *word*: a list of token ids (initially its UTF-8 bytes, ids 0..255) with a weight
  (how often the chunk occurred);
- ``counts[pair]`` = weighted number of occurrences of the adjacent pair over all words, computed once;
- ``where[pair]`` = ids of the words that contain (or once contained) the pair;
- a max-heap of (count, pair) with lazy invalidation picks the next merge.

Merging a pair touches only the words listed in ``where[pair]``; for each occurrence it adjusts the counts of the
neighbouring pairs (prev, a) -> (prev, new) and (b, next) -> (new, next). Nothing ever rescans the corpus.

**Tie-breaking rule**: the pair with the highest count wins; among equal counts, the pair ``(left id, right id)``
that is smallest as a tuple of token ids wins (ids 0..255 are byte values, id 256 + k is the k-th merge).

**Duplicates**: a pair whose joined bytes are already a token is never merged (dropped from the candidates), so every
token's bytes are unique, as tiktoken's ranks require. (Not seen in practice with left-to-right merging; a guard.)

Pairs are stored as one int ``left << 21 | right`` (cheaper than tuples as dict keys; ordering is the same as tuples).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

SHIFT = 21  # pair key = left << SHIFT | right; ids < 2**21 (2M tokens) is far beyond any vocabulary we train
MASK = (1 << SHIFT) - 1
MAX_VOCAB = 1 << SHIFT


def learn_merges(
    chunks: Iterable[tuple[bytes, int]],
    num_merges: int,
    on_merge: Callable[[int], None] | None = None,
) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from (chunk bytes, count) pairs; returns [(left id, right id), ...] where
    the i-th merge creates token id 256 + i. Stops early when no pair is left.

    Wikipedia's example: aaabdaaabac -> ZabdZabac (Z=aa) -> ZYdZYac (Y=ab; ties with Za, and (97, 98) < (256, 97))
    -> XdXac (X=ZY):

    >>> learn_merges([(b"aaabdaaabac", 1)], 3)
    [(97, 97), (97, 98), (256, 257)]
    """
    if 256 + num_merges > MAX_VOCAB:
        raise ValueError(f"at most {MAX_VOCAB - 256} merges are supported, asked for {num_merges}")
    words, weights, counts, where = _pair_index(chunks)
    heap = [(-c, k) for k, c in counts.items()]
    heapq.heapify(heap)
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    known: set[bytes] = set(vocab)
    merges: list[tuple[int, int]] = []

    while len(merges) < num_merges and heap:
        negc, k = heapq.heappop(heap)
        cur = counts.get(k, 0)
        if cur <= 0:
            continue
        if cur != -negc:  # stale entry: the pair's count dropped since it was pushed
            heapq.heappush(heap, (-cur, k))
            continue
        a, b = k >> SHIFT, k & MASK
        joined = vocab[a] + vocab[b]
        if joined in known:  # duplicate string: never merge (see module doc)
            del counts[k]
            del where[k]
            continue
        new = len(vocab)
        vocab.append(joined)
        known.add(joined)
        merges.append((a, b))
        pushed = _merge_pair(words, weights, where.pop(k), a, b, new, counts, where)
        counts.pop(k, None)
        where.pop(k, None)
        for p in pushed:
            c = counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
        if on_merge is not None:
            on_merge(len(merges))
    return merges


def _pair_index(
    chunks: Iterable[tuple[bytes, int]],
) -> tuple[list[list[int]], list[int], dict[int, int], dict[int, list[int]]]:
    """(words as byte lists, their counts, {pair: weighted count}, {pair: indices of the words holding it}); a pair
    is ``left << SHIFT | right``."""
    words: list[list[int]] = []
    weights: list[int] = []
    for chunk, count in chunks:
        if len(chunk) >= 2:  # single-byte chunks hold no pairs
            words.append(list(chunk))
            weights.append(count)
    counts: dict[int, int] = {}
    where: dict[int, list[int]] = {}
    for wi, w in enumerate(words):
        c = weights[wi]
        for i in range(len(w) - 1):
            k = w[i] << SHIFT | w[i + 1]
            counts[k] = counts.get(k, 0) + c
            lst = where.get(k)
            if lst is None:
                where[k] = [wi]
            elif lst[-1] != wi:
                lst.append(wi)
    return words, weights, counts, where


def _merge_pair(
    words: list[list[int]],
    weights: list[int],
    word_ids: list[int],
    a: int,
    b: int,
    new: int,
    counts: dict[int, int],
    where: dict[int, list[int]],
) -> set[int]:
    """Replace (a, b) by ``new`` in the listed words, left to right, updating neighbour pair counts in place.
    Returns the pairs whose count went up (they need a fresh heap entry)."""
    up: set[int] = set()
    for wi in word_ids:
        w = words[wi]
        c = weights[wi]
        i = 0
        while True:
            try:
                i = w.index(a, i)
            except ValueError:
                break
            if i + 1 < len(w) and w[i + 1] == b:
                if i > 0:
                    p = w[i - 1]
                    _dec(counts, where, p << SHIFT | a, c)
                    k = p << SHIFT | new
                    counts[k] = counts.get(k, 0) + c
                    _add_where(where, k, wi)
                    up.add(k)
                if i + 2 < len(w):
                    q = w[i + 2]
                    _dec(counts, where, b << SHIFT | q, c)
                    k = new << SHIFT | q
                    counts[k] = counts.get(k, 0) + c
                    _add_where(where, k, wi)
                    up.add(k)
                w[i : i + 2] = (new,)
            i += 1
    return up


def _dec(counts: dict[int, int], where: dict[int, list[int]], k: int, c: int) -> None:
    left = counts.get(k, 0) - c
    if left > 0:
        counts[k] = left
    else:  # gone everywhere: drop it so memory tracks the live pairs only
        counts.pop(k, None)
        where.pop(k, None)


def _add_where(where: dict[int, list[int]], k: int, wi: int) -> None:
    lst = where.get(k)
    if lst is None:
        where[k] = [wi]
    elif lst[-1] != wi:
        lst.append(wi)
