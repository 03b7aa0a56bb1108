"""A Hub source's manifest: the pinned commit, the files and their parquet footers, saved in the run directory.

Resolving a Hub dataset (revision -> sha, card, listing, every file's footer) is the expensive, rate-limited part of
opening it. It is done once per job (job.py) and saved as ``<run dir>/data-manifest.json`` (a mixture's source NAME:
``data-manifest-NAME.json``), so that a resume needs no listing and no footer, only a check that the pinned revision
still exists.

Format (JSON): ``{"format", "repo", "config", "split", "revision", "files": [{"path", "size", "footer"}]}`` where
``footer`` is the file's parquet metadata as a base64 ``_metadata`` file (pyarrow's write_metadata_file).
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gpt2stream.config import DataConfig
from gpt2stream.data.hub import client
from gpt2stream.data.hub.file import RemoteFile
from gpt2stream.data.hub.retry import RetryPolicy
from gpt2stream.data.hub.source import HUB_READAHEAD, HubRef
from gpt2stream.data.sources import FileRef, ParquetSource
from gpt2stream.errors import UserError

FORMAT = "gpt2stream.hub-manifest/1"
FILENAME = "data-manifest.json"


def _footer_bytes(md: Any) -> str:
    buf = io.BytesIO()
    md.write_metadata_file(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _footer(text: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_metadata(io.BytesIO(base64.b64decode(text)))


def manifest_of(src: ParquetSource, data_cfg: DataConfig) -> dict:
    """The manifest of an opened Hub source (reads the footers not read yet)."""
    files = []
    for i, ref in enumerate(src.files):
        files.append({"path": ref.name, "size": ref.size, "footer": _footer_bytes(src._meta(i))})
    return {"format": FORMAT, "repo": str(data_cfg.data), "config": str(data_cfg.data_config),
            "split": str(data_cfg.split), "revision": src.revision, "files": files}


def filename(source: str = "") -> str:
    """The manifest's file name: the run's one source (""), or a mixture's source by its name.

    >>> filename(), filename("code")
    ('data-manifest.json', 'data-manifest-code.json')
    """
    return f"data-manifest-{source}.json" if source else FILENAME


def save_manifest(manifest: dict, run_dir: Path, source: str = "") -> Path:
    """Write ``run_dir/data-manifest[-source].json`` atomically (a crash leaves the old one or the new one)."""
    path = Path(run_dir) / filename(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)
    return path


def load_manifest(run_dir: Path, source: str = "") -> dict | None:
    """The run directory's manifest (of a mixture's ``source``), or None if there is none (or it is unreadable:
    then it is resolved again)."""
    try:
        m = json.loads((Path(run_dir) / filename(source)).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def matches(manifest: dict, data_cfg: DataConfig) -> bool:
    return (manifest.get("repo"), manifest.get("config"), manifest.get("split")) == (
        str(data_cfg.data), str(data_cfg.data_config), str(data_cfg.split))


def source_from_manifest(manifest: dict, data_cfg: DataConfig, share_dir: str | None = None) -> ParquetSource:
    """The ParquetSource a manifest describes, footers included: opening it sends no request."""
    policy = RetryPolicy.from_config(data_cfg)
    repo, sha = manifest["repo"], manifest["revision"]
    base = f"{client.endpoint()}/datasets/{repo}/resolve/{sha}/"
    files: list[FileRef] = []
    metas = {}
    for i, f in enumerate(manifest["files"]):
        remote = RemoteFile(f["path"], int(f["size"]), base + quote(f["path"]))
        files.append(HubRef(remote, policy, HUB_READAHEAD, share_dir))
        metas[i] = _footer(f["footer"])
    src = ParquetSource(files, data_cfg.text_column, data_cfg.id_column)
    src.revision = sha
    names = metas[0].schema.to_arrow_schema().names if metas else []
    if data_cfg.text_column not in names:
        raise UserError(f"{files[0].name} has no column {data_cfg.text_column!r}; its columns are {names}; "
                        f"set --text-column")
    src.__dict__["metas"] = metas
    return src
