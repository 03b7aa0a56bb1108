"""Where documents come from: ``open_source`` picks the kind of source named by DataConfig.data (Hub parquet files,
or local parquet / jsonl / txt files, directories or globs). The common types live in base.py (re-exported here),
the kinds in parquet_source.py and text_source.py, so none of them imports this module back.
"""

from __future__ import annotations

import glob
import os

from gpt2stream.config import DataConfig
from gpt2stream.data.base import (  # noqa: F401 - re-exported: the names callers import from here
    HUB_READAHEAD,
    JSONL_EXT,
    KNOWN_EXT,
    PARQUET_EXT,
    TXT_EXT,
    FileRef,
    HandleCache,
    HubRef,
    LocalFile,
    Plan,
    Row,
    Source,
    Unit,
    decode_utf8,
    usable,
)
from gpt2stream.errors import UserError

# ---------------------------------------------------------------------------------------------------------------
# resolving DataConfig.data


def _local_candidates(spec: str) -> list[str] | None:
    """Local files named by spec (file, directory, glob), or None if spec does not look local."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        # A directory takes its data files of one kind, the first found of parquet, jsonl, txt: so a local copy
        # of a Hub dataset repo (parquet + README.md) reads the parquet files. Hidden files/dirs are ignored.
        found: dict[tuple[str, ...], list[str]] = {PARQUET_EXT: [], JSONL_EXT: [], (".txt", ".text"): []}
        for root, dirs, names in os.walk(spec):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for n in names:
                for ext, paths in found.items():
                    if n.lower().endswith(ext) and not n.startswith("."):
                        paths.append(os.path.join(root, n))
        for paths in found.values():
            if paths:
                return sorted(paths)
        raise UserError(f"directory {spec} holds no .parquet, .jsonl or .txt files")
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


def open_source(data_cfg: DataConfig) -> Source:
    """The Source named by ``data_cfg.data``: a named source (``demo``), local path / directory / glob, else a Hub
    dataset id."""
    from gpt2stream.named_data import named_data_path

    spec = named_data_path(str(data_cfg.data)) or str(data_cfg.data)
    text_col, id_col = data_cfg.text_column, data_cfg.id_column
    paths = _local_candidates(os.path.expanduser(spec))
    if paths is not None:
        kinds = {_kind_of(p) for p in paths}
        if len(kinds) > 1:
            raise UserError(f"{spec} mixes file types {sorted(kinds)}; point --data at one kind of file")
        kind = kinds.pop()
        files = [LocalFile(p) for p in paths]
        if kind == "parquet":
            from gpt2stream.data.parquet_source import ParquetSource

            return ParquetSource(files, text_col, id_col)
        from gpt2stream.data.text_source import TextSource

        return TextSource(files, text_col, id_col, kind, getattr(data_cfg, "txt_docs", "file"))
    return _open_hub(data_cfg)


def _open_hub(data_cfg: DataConfig) -> Source:
    from gpt2stream.data.manifest import open_hub_source

    return open_hub_source(data_cfg, getattr(data_cfg, "data_revision", "") or "main", readahead=HUB_READAHEAD)
