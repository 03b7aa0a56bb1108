"""Byte-level BPE tokenizers: GPT-2's own (tiktoken r50k_base, its ranks shipped in ``assets/``) and ones trained by
``train_tokenizer.py``. Stands alone: needs tiktoken and regex, not torch nor the rest of gpt2stream.

``from tokenizer import Tokenizer, load_tokenizer``. Importing does no work. Bad input raises ``TokenizerError``.
"""

from tokenizer.core import EOT, Tokenizer, load_tokenizer
from tokenizer.errors import TokenizerError

__all__ = ["EOT", "Tokenizer", "TokenizerError", "load_tokenizer"]
