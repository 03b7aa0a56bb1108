"""The pre-tokenization split patterns (GPT-2's and GPT-4's), each written twice on purpose.

``HF`` strings are the classic forms: plain greedy quantifiers, no ``$``. They mean the same thing in Python's
``regex``, in tiktoken's fancy-regex and in HF tokenizers' Oniguruma (whose Ruby syntax reads ``{1,3}+`` as
"repeat the group", not as possessive, and whose ``$`` matches before any newline). They go into tokenizer.json.

``FAST`` strings are tiktoken's own (possessive quantifiers, a ``\\s++$`` shortcut). They split text into exactly the
same pieces but run faster in fancy-regex, so encoding uses them.
"""

from __future__ import annotations

GPT2_HF = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_FAST = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

GPT4_HF = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
GPT4_FAST = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# name -> the pattern stored in tokenizer.json
PATTERNS: dict[str, str] = {"gpt2": GPT2_HF, "gpt4": GPT4_HF}

# stored pattern -> the equivalent pattern that tiktoken runs fastest
_FAST_EQUIVALENT: dict[str, str] = {GPT2_HF: GPT2_FAST, GPT4_HF: GPT4_FAST}


def pattern_by_name(name: str) -> str:
    """``"gpt2"`` / ``"gpt4"`` -> the split pattern (HF-compatible form). ValueError names the choices."""
    try:
        return PATTERNS[name]
    except KeyError:
        raise ValueError(f"unknown split pattern {name!r}; choose one of {sorted(PATTERNS)}") from None


def pattern_name(pattern: str) -> str | None:
    """The short name of a known pattern, or None for a custom one."""
    for name, pat in PATTERNS.items():
        if pat == pattern or _FAST_EQUIVALENT[pat] == pattern:
            return name
    return None


def fast_pattern(pattern: str) -> str:
    """The tiktoken-optimized equivalent of a known pattern; a custom pattern is returned unchanged."""
    return _FAST_EQUIVALENT.get(pattern, pattern)
