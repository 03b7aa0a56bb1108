"""The common types of the data sources: rows, units, files (local and Hub), the plan, open-file caches and the
Source base class. The kinds (parquet_source.py, text_source.py) build on these; sources.py opens the right kind.

A source is split into *units*, the smallest pieces that can be read on their own without reading anything else:
a parquet row group, a byte range of a jsonl/txt file (documents whose first byte lies in the range), or a whole txt
file when each file is one document. Units are what the sharding hands out, and a position inside a unit is a row
offset, so a resume re-reads from the start of one unit, never from the start of a file.

The validation set is the first ``val_docs`` rows of the last file (sorted order), so it does not depend on the
world size; training units of that file start after it.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from gpt2stream.errors import UserError

PARQUET_EXT = (".parquet",)
JSONL_EXT = (".jsonl", ".ndjson")
TXT_EXT = (".txt", ".text", ".md")
KNOWN_EXT = PARQUET_EXT + JSONL_EXT + TXT_EXT
# Hub read-ahead. The footers are read once when planning and passed on, so the only reads left are row groups,
# and pyarrow reads a row group's wanted column chunks (text, id: adjacent) in one call. A small read-ahead then
# means each row group costs about its own bytes; a large one would fetch the other columns' bytes for nothing.
HUB_READAHEAD = 64 << 10


class Row(NamedTuple):
    text: Any  # usually str; None / non-str / "" are skipped (and counted) downstream
    doc_id: str


class Unit(NamedTuple):
    """One independently readable piece of the data.

    parquet: ``part`` = row group, ``skip`` = rows at its start that belong to the validation set.
    jsonl/txt: documents whose first byte lies in [lo, hi). txt "file" mode: the whole file, one document.
    """

    file: int
    part: int
    lo: int = 0
    hi: int = 0
    skip: int = 0


class FileRef(abc.ABC):
    """A file of the source: a local path or a Hub file, opened as a seekable binary file object."""

    name: str
    size: int

    @abc.abstractmethod
    def open(self) -> io.RawIOBase | io.BufferedIOBase:
        """A new seekable binary file object for this file."""


class LocalFile(FileRef):
    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path
        try:
            self.size = os.path.getsize(path)
        except OSError as e:
            raise UserError(f"cannot read data file {path}: {e.strerror}") from None

    def open(self):
        try:
            return open(self.path, "rb", buffering=1 << 20)
        except OSError as e:
            raise UserError(f"cannot read data file {self.path}: {e.strerror}; check the path and permissions") \
                from None

    def __repr__(self) -> str:
        return f"LocalFile({self.path!r})"


class HubRef(FileRef):
    """A parquet file of a Hub dataset (gpt2stream.hub.RemoteFile), read by ranged GETs with retries and timeouts."""

    def __init__(self, remote: Any, policy: Any, readahead: int, share_dir: str | None = None) -> None:
        self.remote = remote
        self.policy = policy
        self.readahead = readahead
        self.share_dir = share_dir  # where the job's processes share signed URLs (None: within this process)
        self.name = remote.path
        self.size = int(remote.size)

    def open(self):
        from gpt2stream import hub

        return hub.open_remote(self.remote, self.policy, readahead=self.readahead, share_dir=self.share_dir)

    def __getstate__(self) -> dict:
        # ship the signed URL this process holds for the file, so a DataLoader worker need not resolve it again
        return {**self.__dict__, "remote": self.remote.with_known_target()}

    def __repr__(self) -> str:
        return f"HubRef({self.name!r})"


@dataclass(frozen=True)
class Plan:
    """What a source looks like for one run: training units in natural order and the validation region."""

    units: tuple[Unit, ...]
    val_file: int  # -1 when there is no validation set
    val_rows: int
    val_hi: int  # jsonl/txt: byte offset where the validation region ends (0 = none)


class _Borrowed:
    def __init__(self, handles: HandleCache, i: int, ref: FileRef) -> None:
        self.handles, self.i, self.ref = handles, i, ref

    def __enter__(self):
        return self.handles.get(self.i, self.ref)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.handles.discard(self.i)


def decode_utf8(data: bytes, name: str, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text near byte {offset}; convert the file to UTF-8 or remove it") from None


class HandleCache:
    """The open files of one thread, the ``keep`` most recently used. Reusing a Hub file object between row groups
    of the same file keeps its HTTP connections alive. Not thread-safe: one cache per thread."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._open: dict[int, Any] = {}

    def get(self, i: int, ref: FileRef) -> Any:
        fh = self._open.pop(i, None)
        if fh is None or fh.closed:
            fh = ref.open()
        self._open[i] = fh  # (re)inserted as the most recent
        while len(self._open) > self.keep:
            self._open.pop(next(iter(self._open))).close()
        return fh

    def discard(self, i: int) -> None:
        """Forget (and close) a handle whose read failed: its position or connection may be bad."""
        fh = self._open.pop(i, None)
        if fh is not None:
            fh.close()

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()


class Source(abc.ABC):
    """Base: a kind of file (parquet / jsonl / txt) plus the list of files."""

    kind: str
    revision: str = ""  # the commit sha of a Hub dataset ("" for local files)

    def __init__(self, files: list[FileRef], text_column: str, id_column: str) -> None:
        if not files:
            raise UserError("the data source has no files")
        self.files = files
        self.text_column = text_column
        self.id_column = id_column

    # -- planning -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        """The training units (validation rows excluded) and where the validation rows are."""

    # -- reading --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_unit(self, unit: Unit, handles: HandleCache | None = None) -> list[Row]:
        """All rows of a unit (after ``unit.skip``), texts unvalidated; files from ``handles`` if given (else
        opened and closed for this read)."""

    def _handle(self, i: int, handles: HandleCache | None) -> contextlib.AbstractContextManager:
        """A context giving an open file i: borrowed from the cache (and dropped from it on error) or private."""
        if handles is None:
            return self.files[i].open()
        return _Borrowed(handles, i, self.files[i])

    @abc.abstractmethod
    def read_val(self, plan: Plan) -> list[Row]:
        """The held-out validation rows, in order."""


def usable(text: Any) -> bool:
    """Documents that are None, not strings, empty or only whitespace are skipped (and counted)."""
    return isinstance(text, str) and bool(text) and not text.isspace()
