"""Local data pinned like a Hub revision: what each local file was when the run started, checked on --resume.

A Hub run is pinned to a commit sha; local files have none, and a file edited in place or appended to would make a
resume read rows the checkpoint's position does not refer to (documents repeated, skipped or never seen) with no
sign of it. So the run directory keeps ``data-files.json`` (a mixture's local source NAME: ``data-files-NAME.json``):
each file's size, mtime and a digest (of the parquet footer, which describes every row group, or of the first and
last MiB of a text file). ``--resume`` compares and refuses on any difference unless ``--accept-data-change`` is
given.

Format (JSON): ``{"format", "files": [{"path", "size", "mtime_ns", "digest"}]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gpt2stream.errors import UserError

FORMAT = "gpt2stream.local-files/1"
FILENAME = "data-files.json"
EDGE = 1 << 20  # bytes hashed at each end of a text file


def _parquet_footer(f, size: int) -> bytes | None:
    """The footer (metadata + its length + magic) of a parquet file, or None if it does not look like one."""
    if size < 12:
        return None
    f.seek(size - 8)
    tail = f.read(8)
    n = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or n + 8 > size:
        return None
    f.seek(size - 8 - n)
    return f.read(n + 8)


def file_digest(path: str, size: int) -> str:
    """sha256 of the parquet footer, else of the first and last MiB (the whole file when it is smaller)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        footer = _parquet_footer(f, size) if path.lower().endswith(".parquet") else None
        if footer is not None:
            h.update(b"footer:" + footer)
        else:
            f.seek(0)
            h.update(f.read(EDGE))
            if size > 2 * EDGE:
                f.seek(size - EDGE)
            h.update(f.read())
    return h.hexdigest()


def describe(paths: list[str]) -> list[dict]:
    """What each file is now: path, size, mtime_ns, digest."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append({"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "digest": file_digest(p, st.st_size)})
        except OSError as e:
            raise UserError(f"cannot read data file {p}: {e.strerror}") from None
    return out


def filename(source: str = "") -> str:
    """The pin's file name: the run's one source (""), or a mixture's source by its name.

    >>> filename(), filename("mine")
    ('data-files.json', 'data-files-mine.json')
    """
    return f"data-files-{source}.json" if source else FILENAME


def save(entries: list[dict], run_dir: Path, source: str = "") -> None:
    path = Path(run_dir) / filename(source)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"format": FORMAT, "files": entries}, indent=1))
    os.replace(tmp, path)


def load(run_dir: Path, source: str = "") -> list[dict] | None:
    """The files a run recorded (for a mixture's ``source``), or None (a run from before this check, or an
    unreadable file)."""
    try:
        m = json.loads((Path(run_dir) / filename(source)).read_text())
    except (OSError, ValueError):
        return None
    return m["files"] if isinstance(m, dict) and m.get("format") == FORMAT else None


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def changes(saved: list[dict], now: list[dict]) -> list[str]:
    """One phrase per difference, naming the file and what changed.

    >>> a = {"path": "d.jsonl", "size": 10, "mtime_ns": 0, "digest": "x"}
    >>> changes([a], [{**a, "size": 12, "digest": "y"}])
    ['d.jsonl grew from 10 to 12 bytes (appended to?)']
    >>> changes([a], [])
    ['d.jsonl is gone']
    """
    old, new = {f["path"]: f for f in saved}, {f["path"]: f for f in now}
    out = [f"{p} is gone" for p in old if p not in new] + [f"{p} is new" for p in new if p not in old]
    for p, f in new.items():
        s = old.get(p)
        if s is None:
            continue
        if f["size"] > s["size"]:
            out.append(f"{p} grew from {s['size']} to {f['size']} bytes (appended to?)")
        elif f["size"] < s["size"]:
            out.append(f"{p} shrank from {s['size']} to {f['size']} bytes")
        elif f["digest"] != s["digest"]:
            out.append(f"{p} was edited in place (same size, different content)")
        elif f["mtime_ns"] != s["mtime_ns"]:
            out.append(f"{p} was modified at {_when(f['mtime_ns'])} (same size; an edit in the middle cannot be "
                       f"ruled out)")
    return out


PROMISE = ("the resume no longer promises each document once per epoch, nor the batches an uninterrupted run "
           "would have trained")


def check(saved: list[dict] | None, paths: list[str], accept: bool) -> str | None:
    """UserError if the files changed since the run recorded them (unless ``accept``); returns the warning to print
    when a change is accepted, else None."""
    if saved is None:
        return None
    diff = changes(saved, describe(paths))
    if not diff:
        return None
    more = f" (and {len(diff) - 1} more change{'s' * (len(diff) > 2)})" if len(diff) > 1 else ""
    if not accept:
        raise UserError(f"cannot resume: the data changed since the run started: {diff[0]}{more}; restore it, start "
                        f"a new run (another --out-dir), or add --accept-data-change to go on knowingly")
    return f"--accept-data-change: {'; '.join(diff)}; {PROMISE}"
