"""jsonl and txt files: a unit is a byte range, holding the documents whose first byte lies in it.

Whatever the cut points, every document belongs to exactly one range: a range starts at its first line start,
skips a paragraph continuing from the range before, and reads on past its end to finish its last document.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from gpt2stream.config import DataConfig
from gpt2stream.data.sources.base import FileRef, HandleCache, Plan, Row, Source, Unit, decode_utf8, doc_key
from gpt2stream.errors import UserError

TXT_MODES = ("file", "paragraph", "line")
MAX_CHUNK_BYTES = 4 << 20  # byte range of one unit (upper bound)
MIN_CHUNK_BYTES = 4 << 10


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


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"), (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
         (b"\xff\xfe", "UTF-16 (little-endian)"), (b"\xfe\xff", "UTF-16 (big-endian)"))


def check_encoding(f, name: str) -> None:
    """UserError naming the encoding of a text file that is not UTF-8: a UTF-16/32 byte-order mark, or NUL bytes
    (UTF-16 without a mark), which would otherwise read as garbage or as "no usable text"."""
    f.seek(0)
    head = f.read(4096)
    enc = next((e for bom, e in _BOMS if head.startswith(bom)), None)
    if enc is None and head.count(b"\x00") > len(head) // 8:
        enc = "UTF-16 or UTF-32 (no byte-order mark, but NUL bytes between the characters)"
    if enc is not None:
        raise UserError(f"{name} is {enc} text, not UTF-8; convert it to UTF-8 first (e.g. with iconv)")


def _has_line_start(f, a: int, b: int, block: int = 1 << 16) -> bool:
    """Does a line start in [a, b)? Reads at most b - a bytes, stopping at the first newline found, so a file of
    ordinary lines costs a few bytes per range and a file of huge lines is read once in all."""
    if a == 0:
        return b > 0
    f.seek(a - 1)
    pos = a - 1
    while pos < b - 1:
        data = f.read(min(block, b - 1 - pos))
        if not data:
            return False
        if b"\n" in data:
            return True
        pos += len(data)
    return False


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
    start = -1
    parts: list[bytes] = []
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
        text = decode_utf8(raw, name, off)
        if self.kind == "txt":
            return Row(text.rstrip("\r\n"), f"{name}:{off}")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{name}: the line at byte {off} is not valid JSON ({e.msg}); fix or remove it") from None
        if not isinstance(obj, dict):
            raise UserError(f"{name}: the line at byte {off} is not a JSON object; expected one object per line")
        doc_id = obj.get(self.id_column) if self.id_column else None
        return Row(obj.get(self.text_column), doc_key(doc_id, f"{name}:{off}"))

    def _check_columns(self, i: int) -> None:
        with self.files[i].open() as f:
            for off, raw in iter_line_docs(f, 0, self.files[i].size):
                text = decode_utf8(raw, self.files[i].name, off)
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
        for f in self.files:
            with f.open() as fh:
                check_encoding(fh, f.name)
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
            with self.files[last].open() as fh:
                for off, raw in self._iter_docs(fh, 0, self.files[last].size):
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
        pieces: list[Unit] = []
        for i, ref in enumerate(self.files):
            lo = val_hi if i == last else 0
            with ref.open() as fh:
                # a range inside one long document holds none: dealt out, it would leave a stream without text
                pieces += [Unit(i, k, a, min(a + chunk, ref.size)) for k, a in enumerate(range(lo, ref.size, chunk))
                           if _has_line_start(fh, a, min(a + chunk, ref.size))]
        return Plan(tuple(pieces), last if val_docs > 0 else -1, val_docs, val_hi)

    def read_unit(self, unit: Unit, handles: HandleCache | None = None) -> list[Row]:
        f = self.files[unit.file]
        with self._handle(unit.file, handles) as fh:
            if self.whole_files:
                fh.seek(0)
                data = fh.read()
                return [Row(decode_utf8(data, f.name, 0), f.name)]
            return [self._row(unit.file, off, raw) for off, raw in self._iter_docs(fh, unit.lo, unit.hi)]

    def read_val(self, plan: Plan) -> list[Row]:
        if plan.val_file < 0:
            return []
        if self.whole_files:
            return [r for i in range(plan.val_file, len(self.files)) for r in self.read_unit(Unit(i, 0))]
        return self.read_unit(Unit(plan.val_file, 0, 0, plan.val_hi))

    @classmethod
    def from_files(cls, files: list[FileRef], data_cfg: DataConfig) -> TextSource:
        return cls(files, data_cfg.text_column, data_cfg.id_column, cls.kind, data_cfg.txt_docs)


class JsonlSource(TextSource):
    """jsonl files: one JSON object per line."""

    kind = "jsonl"


class TxtSource(TextSource):
    """Plain text files: a document is a file, a paragraph or a line (``txt_docs``)."""

    kind = "txt"
