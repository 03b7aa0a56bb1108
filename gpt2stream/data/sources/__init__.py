"""Where documents come from, locally: the kinds of source and the one table that maps a file to its kind.

``KINDS`` is the registry: a file extension -> the Source class that reads it. Adding a kind of file is one module
(a Source subclass: plan, read_unit, read_val) plus one line here. ``open_local`` turns a path, directory or glob into
a Source of one kind. The common types live in base.py (re-exported here). The Hub (gpt2stream.data.hub) builds on
these sources; nothing here imports it.
"""

from __future__ import annotations

import glob
import os

from gpt2stream.config import DataConfig
from gpt2stream.data.sources.base import (  # noqa: F401 - re-exported: the names callers import from here
    FileRef,
    HandleCache,
    LocalFile,
    Plan,
    Row,
    Source,
    Unit,
    decode_utf8,
    usable,
)
from gpt2stream.data.sources.parquet import ParquetSource
from gpt2stream.data.sources.text import JsonlSource, TxtSource
from gpt2stream.errors import UserError

# file extension (lower case) -> the kind that reads it. Order matters for a directory: the first kind found wins, so
# a local copy of a Hub dataset repo (parquet + README.md) reads its parquet files.
KINDS: dict[str, type[Source]] = {
    ".parquet": ParquetSource,
    ".jsonl": JsonlSource,
    ".ndjson": JsonlSource,
    ".txt": TxtSource,
    ".text": TxtSource,
    ".md": TxtSource,
}


def kind_of(path: str) -> type[Source] | None:
    """The Source class that reads ``path``, by its extension, or None.

    >>> kind_of("a/B.PARQUET").kind, kind_of("notes.md").kind, kind_of("x.csv")
    ('parquet', 'txt', None)
    """
    name = path.lower()
    return next((cls for ext, cls in KINDS.items() if name.endswith(ext)), None)


def _extensions() -> str:
    return ", ".join(KINDS)


def _directory_files(spec: str) -> list[str]:
    """A directory's data files of one kind, the first kind (in KINDS order) it holds; hidden files/dirs ignored."""
    found: dict[type[Source], list[str]] = {cls: [] for cls in KINDS.values()}
    for root, dirs, names in os.walk(spec):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            cls = kind_of(n)
            if cls is not None and not n.startswith("."):
                found[cls].append(os.path.join(root, n))
    for paths in found.values():
        if paths:
            return sorted(paths)
    raise UserError(f"directory {spec} holds no {_extensions()} files")


def local_paths(spec: str) -> list[str] | None:
    """Local files named by spec (file, directory, glob), or None if spec does not look local."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        return _directory_files(spec)
    if any(c in spec for c in "*?["):
        out = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not out:
            raise UserError(f"no files match {spec!r}")
        return out
    looks_local = spec.startswith((".", "/", "~")) or kind_of(spec) is not None or os.sep + os.sep in spec
    if looks_local or spec.count("/") > 1:
        raise UserError(f"data file {spec} does not exist; give a Hub dataset id (owner/name) or a local path")
    return None


def _kind_of_file(path: str) -> type[Source]:
    cls = kind_of(path)
    if cls is None:
        raise UserError(f"{path}: unknown file type; use one of {_extensions()}")
    return cls


def open_local(spec: str, data_cfg: DataConfig) -> Source | None:
    """The Source over the local files ``spec`` names, or None when ``spec`` is not local (a Hub dataset id)."""
    paths = local_paths(os.path.expanduser(spec))
    if paths is None:
        return None
    kinds = {_kind_of_file(p) for p in paths}
    if len(kinds) > 1:
        raise UserError(f"{spec} mixes file types {sorted(k.kind for k in kinds)}; point --data at one kind of file")
    return kinds.pop().from_files([LocalFile(p) for p in paths], data_cfg)
