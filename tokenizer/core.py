"""``Tokenizer``: one interface over GPT-2's own encoding and the byte-level BPE tokenizers we train.

Encoding always runs through ``tiktoken`` (Rust): a trained tokenizer becomes a ``tiktoken.Encoding`` built from its
ranks, so it encodes at tiktoken's speed. Token ids are ranks: ids 0..255 of a trained tokenizer are the single bytes,
then one id per learned merge in merge order, then the special tokens.

Round trip: ``decode(encode(s)) == s`` for every valid ``str``. Python strings can also hold lone surrogates (e.g.
``"\\ud800"``), which have no UTF-8 form; like tiktoken, ``encode`` replaces each one with U+FFFD (a surrogate pair
written as two code units becomes the character it stands for), so those strings come back with U+FFFD in place.
``decode`` of ids that cut a multi-byte character replaces the incomplete bytes with U+FFFD (``decode_bytes`` gives
the raw bytes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import tiktoken

from tokenizer.gpt2_ranks import EOT, gpt2_encoding
from tokenizer.patterns import GPT2_HF, fast_pattern

GPT2_SPEC = "gpt2"
_GPT2_TIKTOKEN_NAME = "r50k_base"  # tiktoken's name for GPT-2's ranks (identical to "gpt2"); part of the identity
# vocabulary_digest of GPT-2 (classic pattern, r50k ranks, <|endoftext|>=50256): a tokenizer.json holding exactly
# GPT-2's vocabulary gets GPT-2's identity, so checkpoints see it as the same tokenizer (checked by a test)
GPT2_DIGEST = "39e5f3c06ea4d845edafe4815d4faf699e387d13d9582f93cef5be9c238912cd"


class Tokenizer:
    """Byte-level BPE tokenizer backed by ``tiktoken``.

    Build one with ``load_tokenizer("gpt2")``, ``Tokenizer.from_file("tokenizer.json")`` or ``Tokenizer.gpt2()``;
    trainers build one from ranks with ``Tokenizer(name, pattern, ranks, special_tokens)``.
    """

    def __init__(
        self,
        name: str,
        pattern: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        *,
        tiktoken_name: str | None = None,
    ) -> None:
        if EOT not in special_tokens:
            raise ValueError(f"special_tokens must contain {EOT!r}, got {sorted(special_tokens)}")
        self.name = name
        self.pattern = pattern  # the pattern as stored in tokenizer.json
        self.mergeable_ranks = mergeable_ranks
        self.special_tokens = dict(special_tokens)
        self._tiktoken_name = tiktoken_name  # set only for tiktoken's own registered encodings
        self._enc: tiktoken.Encoding | None = None

    # ---- construction -------------------------------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's own encoding (tiktoken ``r50k_base``; identical to ``gpt2``), from the shipped ranks."""
        enc = gpt2_encoding()
        # the pattern kept (and written by save) is the classic form of r50k_base's, which HF can read
        tok = cls("gpt2", GPT2_HF, enc._mergeable_ranks, enc._special_tokens, tiktoken_name=_GPT2_TIKTOKEN_NAME)
        tok._enc = enc
        return tok

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a byte-level BPE tokenizer.json (ours, or an HF one of the same kind); TokenizerError if not."""
        from tokenizer.hf_json import read_tokenizer_json

        name, pattern, ranks, specials = read_tokenizer_json(Path(path))
        return cls(name, pattern, ranks, specials)

    def save(self, path: str | Path) -> None:
        """Write an HF ``tokenizers``-compatible tokenizer.json (atomically: a crash never leaves half a file)."""
        from tokenizer.hf_json import write_tokenizer_json

        write_tokenizer_json(Path(path), self.pattern, self.mergeable_ranks, self.special_tokens)

    # ---- the tiktoken engine ------------------------------------------------------------------------------------

    @property
    def encoding(self) -> tiktoken.Encoding:
        if self._enc is None:
            if self._tiktoken_name is not None:
                self._enc = gpt2_encoding()
            else:
                self._enc = tiktoken.Encoding(
                    name=f"gpt2stream-{self.identity[4:16]}",
                    pat_str=fast_pattern(self.pattern),
                    mergeable_ranks=self.mergeable_ranks,
                    special_tokens=self.special_tokens,
                )
        return self._enc

    def __getstate__(self) -> dict:
        # The tiktoken object is rebuilt lazily in the worker; GPT-2 is pickled by name only (no 50k ranks).
        state = self.__dict__.copy()
        state["_enc"] = None
        if self._tiktoken_name is not None:
            state["mergeable_ranks"] = None
            state["special_tokens"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._tiktoken_name is not None:
            enc = gpt2_encoding()
            self.mergeable_ranks = enc._mergeable_ranks
            self.special_tokens = dict(enc._special_tokens)
            self._enc = enc

    # ---- properties -------------------------------------------------------------------------------------------

    @property
    def eot_id(self) -> int:
        return self.special_tokens[EOT]

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    @property
    def identity(self) -> str:
        """Stable string naming the exact vocabulary; checkpoints store it to catch a mismatched tokenizer."""
        if self._tiktoken_name is not None:
            return f"tiktoken:{self._tiktoken_name}"
        cached = self.__dict__.get("_identity")
        if cached is None:
            digest = vocabulary_digest(self.pattern, self.mergeable_ranks, self.special_tokens)
            cached = f"tiktoken:{_GPT2_TIKTOKEN_NAME}" if digest == GPT2_DIGEST else "bpe:" + digest
            self.__dict__["_identity"] = cached
        return cached

    # ---- encode / decode ----------------------------------------------------------------------------------------

    def encode(self, text: str, allowed_special: Collection[str] | str = ()) -> list[int]:
        """Text -> ids. Special tokens in ``text`` are encoded as ordinary text unless listed in ``allowed_special``
        (or ``"all"``), as tiktoken does with ``disallowed_special=()``."""
        allowed: Literal["all"] | set[str]
        if isinstance(allowed_special, str):  # "all", or one token given bare (not its characters as a set)
            allowed = "all" if allowed_special == "all" else {allowed_special}
        else:
            allowed = set(allowed_special)
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, special tokens always treated as text."""
        return self.encoding.encode_ordinary(text)

    def encode_ordinary_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.encoding.decode_bytes(ids)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        return self.encoding.decode(ids, errors=errors)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, identity={self.identity!r})"


def vocabulary_digest(pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> str:
    """sha256 over the split pattern, the ranks (in rank order) and the special tokens."""
    h = hashlib.sha256()
    h.update(pattern.encode("utf-8") + b"\0")
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
    for text, rank in sorted(special_tokens.items(), key=lambda kv: kv[1]):
        h.update(b"\1" + rank.to_bytes(4, "little") + text.encode("utf-8"))
    return h.hexdigest()


def load_tokenizer(spec: str) -> Tokenizer:
    """``"gpt2"`` -> GPT-2's encoding; anything else is a path to a tokenizer.json."""
    if spec == GPT2_SPEC:
        return Tokenizer.gpt2()
    return Tokenizer.from_file(spec)
