"""Read and write byte-level BPE tokenizers as Hugging Face ``tokenizers`` tokenizer.json files.

The file we write loads with ``tokenizers.Tokenizer.from_file`` and encodes identically to our tiktoken engine:
model BPE over GPT-2's byte-to-unicode alphabet, merges listed in rank order, pre-tokenizer
Sequence[Split(pattern, Isolated), ByteLevel(no prefix space, no regex)], decoder ByteLevel, and the special tokens
as special added tokens. Token id == tiktoken rank.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tokenizer.byte_unicode import str_to_token, token_to_str
from tokenizer.errors import TokenizerError
from tokenizer.patterns import GPT2_HF, pattern_name


def recover_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The pair that tiktoken's BPE joins last when it encodes ``token`` using only lower ranks.

    Example: with ranks {a:0, b:1, c:2, ab:3, abc:4}, recover_merge(ranks, b"abc") -> (b"ab", b"c").
    None if those merges do not end in exactly two parts (the token is not reachable by merging).
    """
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_i, best_rank = -1, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            return None
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        return None
    return parts[0], parts[1]


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every multi-byte token's merge pair, in rank order. ValueError if a token cannot be reached by merging."""
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        pair = recover_merge(ranks, token)
        if pair is None:
            raise ValueError(f"token {token!r} (rank {ranks[token]}) cannot be built by merging lower-ranked tokens")
        merges.append(pair)
    return merges


def tokenizer_json(pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> dict:
    """The tokenizer.json document (a dict ready for ``json.dump``)."""
    vocab = {token_to_str(tok): rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges = [[token_to_str(a), token_to_str(b)] for a, b in merges_from_ranks(ranks)]
    added = [
        {"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for text, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def write_tokenizer_json(path: Path, pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> None:
    """Write tokenizer.json atomically (temp file + rename), so a crash never leaves a truncated file."""
    doc = tokenizer_json(pattern, ranks, special_tokens)
    text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise TokenizerError(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir() or not path.name:
        raise TokenizerError(f"cannot write {path}: it is a directory; "
                             f"give a file name such as {path / 'tokenizer.json'}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise TokenizerError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        # mkstemp creates the file 0600; a tokenizer is meant to be shared, so give it the usual umask mode
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TokenizerError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tokenizer_json(path: Path) -> tuple[str, str, dict[bytes, int], dict[str, int]]:
    """tokenizer.json -> (name, pattern, ranks, special_tokens). TokenizerError if missing/corrupt/foreign."""
    if Path(path).is_dir():
        inside = Path(path) / "tokenizer.json"
        hint = f"give the file: {inside}" if inside.is_file() else "give the path of a tokenizer.json file"
        raise TokenizerError(f"tokenizer {path} is a directory; {hint}")
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenizerError(
            f"tokenizer file {path} does not exist; train one with train_tokenizer.py or use 'gpt2'"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"tokenizer file {path} is not valid JSON ({e}); it may be truncated, "
                             "re-create it") from None
    try:
        return parse_tokenizer_json(doc)
    except _Foreign as e:
        raise TokenizerError(
            f"{path} is not a byte-level BPE tokenizer.json of the kind train_tokenizer.py writes: {e}"
        ) from None


class _Foreign(Exception):
    pass


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise _Foreign(what)


def parse_tokenizer_json(doc: Any) -> tuple[str, str, dict[bytes, int], dict[str, int]]:
    _expect(isinstance(doc, dict), "top level is not an object")
    model = doc.get("model")
    _expect(isinstance(model, dict) and model.get("type") == "BPE", "model is not BPE")
    _expect(not model.get("ignore_merges"), "model.ignore_merges is set")
    pattern = _split_pattern(doc.get("pre_tokenizer"))
    vocab, merges = model.get("vocab"), model.get("merges")
    _expect(isinstance(vocab, dict) and isinstance(merges, list), "model.vocab / model.merges missing")

    special_tokens: dict[str, int] = {}
    for entry in doc.get("added_tokens") or []:
        _expect(isinstance(entry, dict) and isinstance(entry.get("id"), int), "malformed added_tokens entry")
        if entry.get("special"):
            special_tokens[str(entry.get("content"))] = entry["id"]
    _expect("<|endoftext|>" in special_tokens, "no special token <|endoftext|>")

    ranks: dict[bytes, int] = {}
    for text, rank in vocab.items():
        if text in special_tokens:
            continue
        try:
            token = str_to_token(text)
        except KeyError:
            raise _Foreign(f"vocab entry {text!r} is not in the byte-level alphabet") from None
        _expect(isinstance(rank, int) and rank >= 0, f"vocab id of {text!r} is not a non-negative integer")
        _expect(token not in ranks, f"token {text!r} appears twice")
        ranks[token] = rank
    _expect(all(bytes([b]) in ranks for b in range(256)), "the 256 byte tokens are not all in the vocab")
    _expect(len(set(ranks.values()) | set(special_tokens.values())) == len(ranks) + len(special_tokens),
            "two tokens share an id")
    _check_merges(merges, ranks)
    name = pattern_name(pattern) or "custom"
    return name, pattern, ranks, special_tokens


def _split_pattern(pre: Any) -> str:
    """The split regex of a byte-level pre-tokenizer: ours (Sequence[Split, ByteLevel]) or HF's GPT-2 ByteLevel."""
    _expect(isinstance(pre, dict), "no pre_tokenizer")
    if pre.get("type") == "ByteLevel":
        _expect(pre.get("use_regex", True) and not pre.get("add_prefix_space"),
                "ByteLevel pre-tokenizer with add_prefix_space or without its regex is not supported")
        return GPT2_HF
    _expect(pre.get("type") == "Sequence", f"pre_tokenizer type {pre.get('type')!r} is not supported")
    steps = pre.get("pretokenizers") or []
    _expect(len(steps) == 2, "pre_tokenizer is not Sequence[Split, ByteLevel]")
    split, byte_level = steps
    _expect(split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert"),
            "first pre-tokenizer is not Split(behavior=Isolated)")
    pattern = (split.get("pattern") or {}).get("Regex")
    if not isinstance(pattern, str):
        raise _Foreign("Split pattern is not a Regex")
    _expect(byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex")
            and not byte_level.get("add_prefix_space"),
            "second pre-tokenizer is not ByteLevel(add_prefix_space=false, use_regex=false)")
    return pattern


def _check_merges(merges: list, ranks: dict[bytes, int]) -> None:
    """tiktoken ranks tokens by id, so each multi-byte token must come from exactly one merge, in id order."""
    last = -1
    seen = 0
    for m in merges:
        if isinstance(m, str):
            m = m.split(" ")
        _expect(isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m), f"malformed merge {m!r}")
        try:
            a, b = str_to_token(m[0]), str_to_token(m[1])
        except KeyError:
            raise _Foreign(f"merge {m!r} is not in the byte-level alphabet") from None
        rank = ranks.get(a + b)
        if a not in ranks or b not in ranks or rank is None:
            raise _Foreign(f"merge {m!r} uses or makes a token not in the vocab")
        _expect(rank > last, f"merge {m!r} is out of id order (ids must follow merge order)")
        _expect(ranks[a] < rank and ranks[b] < rank, f"merge {m!r} makes a token older than its parts")
        last = rank
        seen += 1
    multi = sum(1 for t in ranks if len(t) > 1)
    _expect(seen == multi, f"{multi} multi-byte tokens but {seen} merges")
