"""The streaming data pipeline: sources -> sharding -> shuffle -> tokenize + pack -> resumable loaders.

Importing does no work; sources are opened when a loader is built.
"""

from gpt2stream.data.documents import iter_documents
from gpt2stream.data.loader import TrainLoader, val_batches, val_documents

__all__ = ["TrainLoader", "iter_documents", "val_batches", "val_documents"]
