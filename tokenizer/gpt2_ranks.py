"""GPT-2's BPE ranks, shipped in ``tokenizer/assets`` (see its NOTICE): no network and no cache directory."""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

import tiktoken

from tokenizer.errors import TokenizerError
from tokenizer.patterns import GPT2_FAST

EOT = "<|endoftext|>"
RANKS_FILE = Path(__file__).resolve().parent / "assets" / "r50k_base.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
N_VOCAB = 50257


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """tiktoken's rank-file format: one ``base64(token) rank`` per line.

    >>> parse_tiktoken_ranks(b"IQ== 0\\nIg== 1\\n")
    {b'!': 0, b'"': 1}
    """
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def read_gpt2_ranks(path: Path = RANKS_FILE, sha256: str = RANKS_SHA256) -> dict[bytes, int]:
    """The ranks in ``path``, checked by sha256. TokenizerError if the file is missing or not the expected one."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerError(f"GPT-2's rank file {path} is missing ({e.strerror}); reinstall gpt2stream") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise TokenizerError(f"GPT-2's rank file {path} is damaged (sha256 {got[:12]}..., expected "
                             f"{sha256[:12]}...); reinstall gpt2stream")
    return parse_tiktoken_ranks(data)


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's ``r50k_base`` (= ``gpt2``) Encoding, built from the shipped ranks: same pattern, same ids."""
    return tiktoken.Encoding(
        name="r50k_base",
        pat_str=GPT2_FAST,
        mergeable_ranks=read_gpt2_ranks(),
        special_tokens={EOT: N_VOCAB - 1},
        explicit_n_vocab=N_VOCAB,
    )
