"""The Hugging Face Hub wing of the data path: resolve a dataset to parquet files and read them by ranged GETs.

Our own small HTTP client (requests) rather than huggingface_hub/datasets, because a multi-day run needs every request
to have a timeout and a bounded, logged retry, and the ordinary clients don't (docs/hub.md: the tree listing has no
timeout, metadata requests are not retried, a dead server takes minutes to surface). ``datasets``' own card rules
choose the files (card.py), online and from the local cache.

    client.py    endpoint, offline switch, token, one request attempt, JSON GETs, errors in words, counters
    retry.py     RetryPolicy, backoff, Retry-After and rate limits
    card.py      the dataset card's configs -> {split: repo paths} (datasets' rules)
    resolve.py   (dataset, config, split) at a revision -> HubDataset (pinned sha, RemoteFiles)
    file.py      RemoteFile, HubFile (seekable ranged reads, read-ahead, resume of broken transfers)
    signed.py    signed storage URLs: expiry, reuse, sharing between the processes of a job
    cache.py     a dataset pre-downloaded into the local HF cache (offline, or the Hub unreachable at start-up)
    source.py    the seam to gpt2stream.data.sources: a Hub dataset as a ParquetSource of HubRefs
    manifest.py  the opened source saved in the run directory, so a resume sends no listing and reads no footer

This wing imports gpt2stream.data.sources, never the reverse. Usage::

    from gpt2stream.data.hub.resolve import resolve_dataset
    from gpt2stream.data.hub.file import HubFile
    from gpt2stream.data.hub.retry import RetryPolicy
    ds = resolve_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", policy=RetryPolicy())
    with HubFile.open(ds.files[0], RetryPolicy()) as f:   # io.RawIOBase: seekable, read-only
        pyarrow.parquet.ParquetFile(f).read_row_group(0, columns=["text", "id"])
"""
