"""The common types of the data sources: rows, units, files, the plan, open-file caches and the Source base class.
The kinds (parquet.py, text.py) build on these; the package's KINDS table maps a file extension to its kind. A file
may be local (LocalFile) or remote (data/hub's HubRef): a source reads either through ``FileRef.open()``.

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

from gpt2stream.config import DataConfig
from gpt2stream.errors import UserError


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

    @classmethod
    def from_files(cls, files: list[FileRef], data_cfg: DataConfig) -> Source:
        """This kind over ``files``, configured from the run's data config: the one constructor KINDS is called by."""
        return cls(files, data_cfg.text_column, data_cfg.id_column)

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


def doc_key(value: Any, where: str) -> str:
    """A row's id for the document log: its id-column value, or ``where`` it is (file:row group:row or
    file:byte offset) when that value is null or empty, so rows without an id never share one ("None").

    >>> doc_key("<urn:1>", "a.parquet:0:3"), doc_key(None, "a.parquet:0:3"), doc_key(" ", "a.jsonl:120")
    ('<urn:1>', 'a.parquet:0:3', 'a.jsonl:120')
    """
    if value is None:
        return where
    key = str(value)
    return key if key.strip() else where
