"""Straightforward reference BPE for the tokenizer tests (never used by the package), and its own sanity tests.

Training recounts every pair over every chunk occurrence after each merge (no dedup, no incremental updates);
encoding applies the lowest-ranked learned merge until none applies (the textbook algorithm, as HF's BPE model does).
The rules are the ones documented in tokenizer/bpe.py: highest count wins, ties go to the smallest (left id, right id);
a pair whose joined bytes already form a token is never merged.
"""

from __future__ import annotations

from collections import Counter

import regex


def merge_ids(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """[1, 2, 3, 1, 2], (1, 2), 9 -> [9, 3, 9] (left to right, non-overlapping)."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def reference_train(texts: list[str], pattern: str, num_merges: int) -> list[tuple[int, int]]:
    chunks = [list(c.encode("utf-8")) for t in texts for c in regex.findall(pattern, t)]
    vocab = {i: bytes([i]) for i in range(256)}
    known = set(vocab.values())
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges:
        counts: Counter = Counter()
        for ch in chunks:
            counts.update(zip(ch, ch[1:], strict=False))
        candidates = [(c, p) for p, c in counts.items() if vocab[p[0]] + vocab[p[1]] not in known]
        if not candidates:
            break
        _, best = min(candidates, key=lambda cp: (-cp[0], cp[1]))
        new = 256 + len(merges)
        vocab[new] = vocab[best[0]] + vocab[best[1]]
        known.add(vocab[new])
        merges.append(best)
        chunks = [merge_ids(ch, best, new) for ch in chunks]
    return merges


def reference_encode(text: str, pattern: str, merges: list[tuple[int, int]]) -> list[int]:
    rank = {pair: i for i, pair in enumerate(merges)}
    out: list[int] = []
    for chunk in regex.findall(pattern, text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:], strict=False), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            ids = merge_ids(ids, pair, 256 + rank[pair])
        out.extend(ids)
    return out


def test_reference_merge_ids():
    assert merge_ids([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_ids([5, 5, 5], (5, 5), 7) == [7, 5]


def test_reference_train_wikipedia_example():
    # aaabdaaabac -> ZabdZabac -> ZYdZYac -> XdXac (Z=aa, Y=ab, X=ZY)
    merges = reference_train(["aaabdaaabac"], r".+", 3)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    assert reference_encode("aaabdaaabac", r".+", merges) == [258, 100, 258, 97, 99]


def test_reference_encode_applies_lowest_rank_first():
    merges = [(98, 99), (97, 98)]  # bc before ab: "abc" -> a, bc
    assert reference_encode("abc", r".+", merges) == [97, 256]
