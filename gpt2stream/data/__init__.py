"""The streaming data pipeline: sources -> sharding -> shuffle -> tokenize + pack -> resumable loaders.

Importing does no work; sources are opened when a loader is built. The loaders need torch, the document iterator
(train_tokenizer.py) does not, so each name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "iter_documents": "gpt2stream.data.documents",
    "TrainLoader": "gpt2stream.data.loader",
    "val_batches": "gpt2stream.data.loader",
    "val_documents": "gpt2stream.data.loader",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpt2stream.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
