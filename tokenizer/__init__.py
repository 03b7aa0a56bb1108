"""Byte-level BPE tokenizers: GPT-2's own (tiktoken r50k_base) and ones trained by ``train_tokenizer.py``.

``from tokenizer import Tokenizer, load_tokenizer``. Importing does no work.
"""

from tokenizer.core import EOT, Tokenizer, load_tokenizer

__all__ = ["EOT", "Tokenizer", "load_tokenizer"]
