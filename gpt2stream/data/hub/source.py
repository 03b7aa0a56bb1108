"""A Hub dataset as a data source: its files as FileRefs (HubRef) in a ParquetSource, the seam between the Hub and
the sources (the Hub builds on gpt2stream.data.sources; they never import the Hub).

Hub read-ahead: the footers are read once when planning and passed on, so the only reads left are row groups, and
pyarrow reads a row group's wanted column chunks (text, id: adjacent) in one call. A small read-ahead then means
each row group costs about its own bytes; a large one would fetch the other columns' bytes for nothing.
"""

from __future__ import annotations

from gpt2stream.config import DataConfig
from gpt2stream.data.hub.cache import resolve_hub_files
from gpt2stream.data.hub.file import HubFile, RemoteFile, open_remote
from gpt2stream.data.hub.retry import RetryPolicy
from gpt2stream.data.sources import FileRef, LocalFile, ParquetSource

HUB_READAHEAD = 64 << 10


class HubRef(FileRef):
    """A parquet file of a Hub dataset (a RemoteFile), read by ranged GETs with retries and timeouts."""

    def __init__(self, remote: RemoteFile, policy: RetryPolicy, readahead: int, share_dir: str | None = None) -> None:
        self.remote = remote
        self.policy = policy
        self.readahead = readahead
        self.share_dir = share_dir  # where the job's processes share signed URLs (None: within this process)
        self.name = remote.path
        self.size = int(remote.size)

    def open(self) -> HubFile:
        return open_remote(self.remote, self.policy, readahead=self.readahead, share_dir=self.share_dir)

    def __getstate__(self) -> dict:
        # ship the signed URL this process holds for the file, so a DataLoader worker need not resolve it again
        return {**self.__dict__, "remote": self.remote.with_known_target()}

    def __repr__(self) -> str:
        return f"HubRef({self.name!r})"


def open_hub_source(data_cfg: DataConfig, revision: str = "main", share_dir: str | None = None,
                    readahead: int = HUB_READAHEAD) -> ParquetSource:
    """Resolve (dataset, config, split) at ``revision`` and return its ParquetSource (footers not read yet)."""
    policy = RetryPolicy.from_config(data_cfg)
    ds, snapshot = resolve_hub_files(data_cfg, policy, revision)  # the Hub, or its cached snapshot when offline
    if snapshot is not None:  # local files: no manifest, no URLs to share (a resume finds the cache again)
        return ParquetSource([LocalFile(p) for p in snapshot.files], data_cfg.text_column, data_cfg.id_column)
    files: list[FileRef] = [HubRef(r, policy, readahead, share_dir) for r in ds.files]
    src = ParquetSource(files, data_cfg.text_column, data_cfg.id_column)
    src.revision = ds.sha
    return src
