"""The tokenizer package's one exception type: bad input the user can fix (a missing or corrupt tokenizer file, a
vocabulary size out of range). Its message is one line saying what is wrong and what to do."""

from __future__ import annotations


class TokenizerError(ValueError):
    """A tokenizer file or setting the user can fix; callers print it as one ``error: ...`` line."""
