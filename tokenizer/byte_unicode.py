"""GPT-2's reversible map between the 256 byte values and printable unicode characters.

Byte-level BPE files (GPT-2's vocab.json/merges.txt, HF tokenizer.json) store tokens as strings in which every byte
is replaced by one printable character: printable Latin-1 bytes map to themselves, the other 68 bytes (control
characters, space, ...) map to U+0100 onwards, in byte order. So b" the" is stored as "Ġthe".
"""

from __future__ import annotations

from functools import cache


@cache
def bytes_to_unicode() -> dict[int, str]:
    """byte value -> the printable character that stands for it (GPT-2's ``bytes_to_unicode``)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@cache
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    """b" the" -> "Ġthe"."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str) -> bytes:
    """"Ġthe" -> b" the". KeyError if a character is not one of the 256 byte stand-ins."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)
