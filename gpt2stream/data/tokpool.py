"""A reader's tokenizer threads, the encoder they run, and the look-ahead that tokenizes each stream's next window
before it is reached.

A stream reads its next shuffle window while it hands out the current one; ``Ahead`` then tokenizes that window's
first batch too, so the stream does not wait for it at the window's start (the stall that remained once the block
buffer refilled incrementally). The look-ahead is held back until the reader's first step is out: before it, every
stream's first buffer is needed at once and the look-ahead would compete with it (C = 512's first step took 1.9 s
without it, 4.1 s with it unheld). Which documents are tokenized, and their order, never change: only when.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class TokenizerPool(ThreadPoolExecutor):
    """The tokenizer threads of a reader, shared by its streams. Look-ahead work (``ahead``) runs at once, or, while
    ``held``, when ``release()`` is called."""

    def __init__(self, threads: int, held: bool = False) -> None:
        super().__init__(threads, thread_name_prefix="gpt2stream-tokenize")
        self._held: list[Callable[[], Any]] | None = [] if held else None
        self._held_lock = threading.Lock()

    def ahead(self, fn: Callable[[], Any]) -> None:
        with self._held_lock:
            if self._held is not None:
                self._held.append(fn)
                return
        fn()

    def release(self) -> None:
        """Run the look-ahead held so far, and from now on at once."""
        with self._held_lock:
            held, self._held = self._held or [], None
        for fn in held:
            fn()


class Ahead:
    """A window's first tokenizer batch, submitted once, by whoever asks first: the look-ahead, or the stream
    reaching the window."""

    def __init__(self, submit: Callable[[list[str]], list[Future]], texts: list[str]) -> None:
        self._submit = submit
        self._texts: list[str] | None = texts
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    def futures(self) -> list[Future]:
        with self._lock:
            if self._texts is not None:
                self._futures, self._texts = self._submit(self._texts), None
            return self._futures


def encoder(tok: Any) -> Callable[[str], Any] | None:
    """One document's ids, special tokens encoded as text (encode_ordinary), for a tokenizer thread. A tokenizer on
    tiktoken gives them as one uint32 array (``encode_to_numpy``, the same ids): no list of Python ints to build
    and then convert to an array, which took ~7% of the pipeline's CPU (bench/bench_data.py). None when the
    tokenizer has no encode_ordinary (its encode_ordinary_batch is used)."""
    one = getattr(tok, "encode_ordinary", None)
    to_numpy = getattr(getattr(tok, "encoding", None), "encode_to_numpy", None)
    if one is None or to_numpy is None:
        return one
    nothing: frozenset[str] = frozenset()

    def encode(text: str) -> Any:
        try:
            return to_numpy(text, allowed_special=nothing, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary replaces them first, as tiktoken does
            return one(text)

    return encode
