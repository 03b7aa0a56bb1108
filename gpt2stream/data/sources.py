"""Where documents come from: Hub parquet files or local parquet / jsonl / txt files.

A source is split into *units*, the smallest pieces that can be read on their own without reading anything else:
a parquet row group, a byte range of a jsonl/txt file (documents whose first byte lies in the range), or a whole txt
file when each file is one document. Units are what the sharding hands out, and a position inside a unit is a row
offset, so resuming reads one unit again at most.

The validation set is the first ``val_docs`` rows of the last file (sorted order), so it does not depend on the
world size; training units of that file start after it.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from gpt2stream.errors import UserError

PARQUET_EXT = (".parquet",)
JSONL_EXT = (".jsonl", ".ndjson")
TXT_EXT = (".txt", ".text", ".md")
KNOWN_EXT = PARQUET_EXT + JSONL_EXT + TXT_EXT
TXT_MODES = ("file", "paragraph", "line")
MAX_CHUNK_BYTES = 4 << 20  # byte range of one jsonl/txt unit (upper bound)
MIN_CHUNK_BYTES = 4 << 10
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


class FileRef:
    """A file of the source: a local path or a Hub file, opened as a seekable binary file object."""

    name: str
    size: int

    def open(self) -> io.RawIOBase | io.BufferedIOBase:  # pragma: no cover - interface
        raise NotImplementedError


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

    def __init__(self, remote: Any, policy: Any, readahead: int) -> None:
        self.remote = remote
        self.policy = policy
        self.readahead = readahead
        self.name = remote.path
        self.size = int(remote.size)

    def open(self):
        from gpt2stream import hub

        return hub.open_remote(self.remote, self.policy, readahead=self.readahead)

    def __repr__(self) -> str:
        return f"HubRef({self.name!r})"


@dataclass(frozen=True)
class Plan:
    """What a source looks like for one run: training units in natural order and the validation region."""

    units: tuple[Unit, ...]
    val_file: int  # -1 when there is no validation set
    val_rows: int
    val_hi: int  # jsonl/txt: byte offset where the validation region ends (0 = none)


def _decode(data: bytes, name: str, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text near byte {offset}; convert the file to UTF-8 or remove it") from None


class Source:
    """Base: a kind of file (parquet / jsonl / txt) plus the list of files, with a per-process file-open cache."""

    kind: str

    def __init__(self, files: list[FileRef], text_column: str, id_column: str) -> None:
        if not files:
            raise UserError("the data source has no files")
        self.files = files
        self.text_column = text_column
        self.id_column = id_column

    # -- planning -------------------------------------------------------------------------------------------
    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        raise NotImplementedError

    # -- reading --------------------------------------------------------------------------------------------
    def read_unit(self, unit: Unit) -> list[Row]:
        """All rows of a unit (after ``unit.skip``), texts unvalidated."""
        raise NotImplementedError

    def read_val(self, plan: Plan) -> list[Row]:
        raise NotImplementedError



# ---------------------------------------------------------------------------------------------------------------
# parquet


class ParquetSource(Source):
    """Parquet files; a unit is one row group. Footers are read once (when planning) and travel with the source
    to the workers, so a worker's only requests are for the column chunks of its own row groups."""

    kind = "parquet"

    def _meta(self, i: int):
        """The file's parquet metadata (footer), checked for the text column; cached."""
        metas = self.__dict__.setdefault("metas", {})
        if i not in metas:
            import pyarrow.parquet as pq

            f = self.files[i]
            with f.open() as fh:
                try:
                    md = pq.ParquetFile(fh).metadata
                except UserError:
                    raise
                except Exception as e:
                    raise UserError(f"cannot read parquet file {f.name}: {e}; is it a valid parquet file?") from None
            cols = md.schema.to_arrow_schema().names
            if self.text_column not in cols:
                raise UserError(
                    f"{f.name} has no column {self.text_column!r}; its columns are {cols}; set --text-column"
                )
            metas[i] = md
        return metas[i]

    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        units: list[Unit] = []
        last = len(self.files) - 1
        for i in range(len(self.files)):
            md = self._meta(i)
            held = val_docs if i == last else 0
            if i == last and held > md.num_rows:
                raise UserError(
                    f"val_docs={val_docs} but the last file {self.files[i].name} has only {md.num_rows} rows; "
                    f"lower --val-docs (0 = no validation set)"
                )
            for rg in range(md.num_row_groups):
                n = md.row_group(rg).num_rows
                if held >= n:
                    held -= n
                    continue
                units.append(Unit(i, rg, skip=held))
                held = 0
        return Plan(tuple(units), last if val_docs > 0 else -1, val_docs, 0)

    def _read_group(self, i: int, rg: int, skip: int, limit: int | None = None) -> list[Row]:
        import pyarrow.parquet as pq

        md = self._meta(i)
        names = md.schema.to_arrow_schema().names
        columns = [self.text_column] + ([self.id_column] if self.id_column and self.id_column in names else [])
        f = self.files[i]
        try:
            with f.open() as fh:  # its own handle: a prefetch thread may read another group meanwhile
                table = pq.ParquetFile(fh, metadata=md).read_row_group(rg, columns=columns)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot read row group {rg} of {f.name}: {e}") from None
        end = table.num_rows if limit is None else min(table.num_rows, skip + limit)
        table = table.slice(skip, end - skip)
        texts = table.column(self.text_column).to_pylist()
        if table.num_columns > 1:
            ids = [str(v) for v in table.column(1).to_pylist()]
        else:
            base = f"{self.files[i].name}:{rg}:"
            ids = [base + str(skip + k) for k in range(len(texts))]
        return [Row(t, d) for t, d in zip(texts, ids, strict=True)]

    def read_unit(self, unit: Unit) -> list[Row]:
        return self._read_group(unit.file, unit.part, unit.skip)

    def read_val(self, plan: Plan) -> list[Row]:
        rows: list[Row] = []
        if plan.val_file < 0:
            return rows
        md = self._meta(plan.val_file)
        for rg in range(md.num_row_groups):
            if len(rows) >= plan.val_rows:
                break
            rows.extend(self._read_group(plan.val_file, rg, 0, plan.val_rows - len(rows)))
        return rows


# ---------------------------------------------------------------------------------------------------------------
# jsonl / txt: units are byte ranges; a document belongs to the range holding its first byte


def _first_line_at_or_after(f, a: int) -> int:
    if a == 0:
        return 0
    f.seek(a - 1)
    f.readline()  # finishes the line that holds byte a-1; returns immediately if that byte is the newline
    return f.tell()


def _prev_line_blank(f, pos: int) -> bool:
    """Is the line that ends just before ``pos`` (a line start) blank? True at the start of the file."""
    if pos == 0:
        return True
    lo = max(0, pos - 1 - 4096)
    f.seek(lo)
    window = f.read(pos - 1 - lo)  # without the newline that ends the previous line
    k = window.rfind(b"\n")
    return window[k + 1 :].strip() == b""


def iter_line_docs(f, a: int, b: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every non-blank line starting in [a, b)."""
    pos = _first_line_at_or_after(f, a)
    f.seek(pos)
    while pos < b:
        line = f.readline()
        if not line:
            return
        if line.strip():
            yield pos, line
        pos += len(line)


def iter_paragraph_docs(f, a: int, b: int) -> Iterator[tuple[int, bytes]]:
    """(offset, paragraph) for every paragraph (run of non-blank lines) whose first line starts in [a, b)."""
    pos = _first_line_at_or_after(f, a)
    in_prev = not _prev_line_blank(f, pos)  # the line at pos continues a paragraph of the previous range
    f.seek(pos)
    start, parts = -1, []
    while True:
        line = f.readline()
        blank = not line or not line.strip()
        if parts and blank:
            yield start, b"".join(parts)
            parts = []
        if not line:
            return
        if blank:
            in_prev = False
        elif in_prev:
            pass
        elif parts:
            parts.append(line)
        elif pos < b:
            start, parts = pos, [line]
        else:
            return
        pos += len(line)


class TextSource(Source):
    """jsonl (one JSON object per line) or txt (file / paragraph / line documents)."""

    def __init__(self, files: list[FileRef], text_column: str, id_column: str, kind: str, txt_docs: str) -> None:
        super().__init__(files, text_column, id_column)
        if kind == "txt" and txt_docs not in TXT_MODES:
            raise UserError(f"txt_docs must be one of {TXT_MODES}, got {txt_docs!r}")
        self.kind = kind
        self.txt_docs = txt_docs

    @property
    def whole_files(self) -> bool:
        return self.kind == "txt" and self.txt_docs == "file"

    def _iter_docs(self, f, a: int, b: int):
        if self.kind == "txt" and self.txt_docs == "paragraph":
            return iter_paragraph_docs(f, a, b)
        return iter_line_docs(f, a, b)

    def _row(self, i: int, off: int, raw: bytes) -> Row:
        name = self.files[i].name
        text = _decode(raw, name, off)
        if self.kind == "txt":
            return Row(text.rstrip("\r\n"), f"{name}:{off}")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{name}: the line at byte {off} is not valid JSON ({e.msg}); fix or remove it") from None
        if not isinstance(obj, dict):
            raise UserError(f"{name}: the line at byte {off} is not a JSON object; expected one object per line")
        doc_id = obj.get(self.id_column) if self.id_column else None
        return Row(obj.get(self.text_column), str(doc_id) if doc_id is not None else f"{name}:{off}")

    def _check_columns(self, i: int) -> None:
        with self.files[i].open() as f:
            for off, raw in iter_line_docs(f, 0, self.files[i].size):
                text = _decode(raw, self.files[i].name, off)
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{self.files[i].name}: the line at byte {off} is not valid JSON ({e.msg}); fix or remove it"
                    ) from None
                if not isinstance(obj, dict) or self.text_column not in obj:
                    cols = list(obj) if isinstance(obj, dict) else []
                    raise UserError(
                        f"{self.files[i].name} has no field {self.text_column!r}; its fields are {cols}; "
                        f"set --text-column"
                    )
                return

    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        n = len(self.files)
        if self.kind == "jsonl":
            for i in range(n):
                self._check_columns(i)
        if self.whole_files:
            if val_docs >= n and val_docs > 0:
                raise UserError(
                    f"val_docs={val_docs} but there are only {n} txt files and each is one document "
                    f"(--txt-docs file); lower --val-docs or use --txt-docs paragraph"
                )
            units = tuple(Unit(i, 0) for i in range(n - val_docs))
            return Plan(units, n - val_docs if val_docs else -1, val_docs, 0)
        last = n - 1
        val_hi = 0
        if val_docs > 0:
            count = 0
            with self.files[last].open() as f:
                for off, raw in self._iter_docs(f, 0, self.files[last].size):
                    if count == val_docs:
                        val_hi = off
                        break
                    count += 1
                    val_hi = off + len(raw)
            if count < val_docs or val_hi >= self.files[last].size:
                raise UserError(
                    f"val_docs={val_docs} but the last file {self.files[last].name} has only {count} documents; "
                    f"lower --val-docs (0 = no validation set)"
                )
        total = sum(f.size for f in self.files) - val_hi
        # Enough units that every reader gets several, but no unit larger than MAX_CHUNK_BYTES.
        chunk = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, math.ceil(total / (8 * max(1, num_readers)))))
        units = []
        for i, f in enumerate(self.files):
            lo = val_hi if i == last else 0
            for k, a in enumerate(range(lo, f.size, chunk)):
                units.append(Unit(i, k, a, min(a + chunk, f.size)))
        return Plan(tuple(units), last if val_docs > 0 else -1, val_docs, val_hi)

    def read_unit(self, unit: Unit) -> list[Row]:
        f = self.files[unit.file]
        with f.open() as fh:
            if self.whole_files:
                data = fh.read()
                return [Row(_decode(data, f.name, 0), f.name)]
            return [self._row(unit.file, off, raw) for off, raw in self._iter_docs(fh, unit.lo, unit.hi)]

    def read_val(self, plan: Plan) -> list[Row]:
        if plan.val_file < 0:
            return []
        if self.whole_files:
            return [r for i in range(plan.val_file, len(self.files)) for r in self.read_unit(Unit(i, 0))]
        return self.read_unit(Unit(plan.val_file, 0, 0, plan.val_hi))


# ---------------------------------------------------------------------------------------------------------------
# resolving DataConfig.data


def _local_candidates(spec: str) -> list[str] | None:
    """Local files named by spec (file, directory, glob), or None if spec does not look local."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        out = []
        for root, _dirs, names in os.walk(spec):
            out += [os.path.join(root, n) for n in names if n.lower().endswith(KNOWN_EXT)]
        if not out:
            raise UserError(f"directory {spec} holds no {'/'.join(KNOWN_EXT)} files")
        return sorted(out)
    if any(c in spec for c in "*?["):
        out = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not out:
            raise UserError(f"no files match {spec!r}")
        return out
    looks_local = spec.startswith((".", "/", "~")) or spec.lower().endswith(KNOWN_EXT) or os.sep + os.sep in spec
    if looks_local or spec.count("/") > 1:
        raise UserError(f"data file {spec} does not exist; give a Hub dataset id (owner/name) or a local path")
    return None


def _kind_of(path: str) -> str:
    p = path.lower()
    if p.endswith(PARQUET_EXT):
        return "parquet"
    if p.endswith(JSONL_EXT):
        return "jsonl"
    if p.endswith(TXT_EXT):
        return "txt"
    raise UserError(f"{path}: unknown file type; use .parquet, .jsonl or .txt files")


def open_source(data_cfg: Any) -> Source:
    """The Source named by ``data_cfg.data``: local path / directory / glob, else a Hub dataset id."""
    spec = str(data_cfg.data)
    text_col, id_col = data_cfg.text_column, data_cfg.id_column
    paths = _local_candidates(os.path.expanduser(spec))
    if paths is not None:
        kinds = {_kind_of(p) for p in paths}
        if len(kinds) > 1:
            raise UserError(f"{spec} mixes file types {sorted(kinds)}; point --data at one kind of file")
        kind = kinds.pop()
        files = [LocalFile(p) for p in paths]
        if kind == "parquet":
            return ParquetSource(files, text_col, id_col)
        return TextSource(files, text_col, id_col, kind, getattr(data_cfg, "txt_docs", "paragraph"))
    return _open_hub(data_cfg)


def _open_hub(data_cfg: Any) -> Source:
    from gpt2stream import hub

    policy = hub.RetryPolicy.from_config(data_cfg)
    remotes = hub.list_parquet_files(data_cfg.data, data_cfg.data_config, data_cfg.split, policy=policy)
    files: list[FileRef] = [HubRef(r, policy, HUB_READAHEAD) for r in remotes]
    return ParquetSource(files, data_cfg.text_column, data_cfg.id_column)
