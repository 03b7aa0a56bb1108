"""The rest of a partly read unit, kept on local disk instead of in memory, for readers that run many streams.

A stream reads its units a shuffle window at a time, and a window often ends inside a unit (a FineWeb-Edu row group
is ~1000 documents, a window is shuffle_buffer / C of them). Reading the unit again for the next window would fetch
it again from the Hub, so the stream keeps the unit's rows. With many canonical streams on one rank (C = 512 on a
few GPUs) that is hundreds of row groups of text in memory. A reader given a ``UnitSpill`` writes the rows not yet
read to one file per stream (pickled rows back to back, their offsets in memory) and reads each later window back
with one seek and one read: each unit is still fetched once, and memory holds only the windows.

The files live in a private temporary directory (``$TMPDIR``), removed when the reader stops; a unit's file is
removed as soon as its stream moves on. Which rows a window holds, and in what order, is exactly as without it.

A process killed with SIGKILL (the OOM killer, a scheduler) cannot remove its directory, so the directory's name
carries its owner: ``gpt2stream-units-<pid>-<start>-<where>-``, the pid, the process's start time (a reused pid has
another) and a tag of this machine and pid namespace (a pid means nothing on another host sharing $TMPDIR, or in
another container). The first spill of a process removes the directories of such owners that are gone, only those of
this user, this machine and namespace, in exactly this naming.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import socket
import stat
import tempfile
from typing import Any

import numpy as np

from gpt2stream.data.sources.base import Row
from gpt2stream.errors import UserError

SPILL_ABOVE = 16  # a rank with more streams than this keeps their partly read units on disk (16 = the old default C)


class SpilledRows:
    """Rows ``first .. first+n-1`` of a unit, in a file; indexable by the unit's row numbers like the list was."""

    def __init__(self, path: str, first: int, offsets: np.ndarray) -> None:
        self.path = path
        self.first = first
        self.offsets = offsets  # n+1 byte offsets

    def __len__(self) -> int:
        return self.first + len(self.offsets) - 1

    def __getitem__(self, sl: slice) -> list[Row]:
        a, b, _ = sl.indices(len(self))
        if a < self.first:
            raise IndexError(f"row {a} of this unit was not kept (rows from {self.first} were)")
        if b <= a:
            return []
        lo, hi = int(self.offsets[a - self.first]), int(self.offsets[b - self.first])
        with open(self.path, "rb") as f:
            f.seek(lo)
            data = f.read(hi - lo)
        ends = self.offsets[a - self.first + 1 : b - self.first + 1] - lo
        out, start = [], 0
        for end in ends.tolist():
            out.append(Row(*pickle.loads(data[start:end])))
            start = end
        return out

    def drop(self) -> None:
        try:
            os.remove(self.path)
        except OSError:
            pass


_PREFIX = "gpt2stream-units-"
_NAME = re.compile(r"gpt2stream-units-(\d+)-(\d+)-([0-9a-f]{8})-[A-Za-z0-9_]+")
_swept: set[str] = set()  # the temporary directories this process has swept


def start_ticks(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def place_tag() -> str:
    """This machine and pid namespace, in 8 hex digits: only there does an owner's pid name a process."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha1(f"{socket.gethostname()}|{ns}".encode()).hexdigest()[:8]


def spill_prefix(pid: int | None = None) -> str:
    """The name of a spill directory of process ``pid`` (this one by default), before mkdtemp's random end."""
    pid = os.getpid() if pid is None else pid
    return f"{_PREFIX}{pid}-{start_ticks(pid)}-{place_tag()}-"


def _owner_gone(pid: int, start: int) -> bool:
    """Whether process ``pid`` that started at ``start`` has ended (os.kill(pid, 0) semantics; a pid now used by a
    process that started at another time counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's: its start time says whether it is the owner
    return start != 0 and start_ticks(pid) not in (0, start)


def remove_stale_spills(root: str | None = None) -> list[str]:
    """Remove the spill directories in ``root`` ($TMPDIR) left by processes of this user that are gone (killed
    with SIGKILL); return their paths. Anything else there is left alone."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    tag, uid = place_tag(), os.getuid()
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        m = _NAME.fullmatch(name)
        if m is None or m[3] != tag or int(m[1]) == os.getpid():
            continue
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and _owner_gone(int(m[1]), int(m[2])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class UnitSpill:
    """One reader's spill directory; ``spill`` stores the rest of a unit for stream ``key``."""

    def __init__(self) -> None:
        self._dir: str | None = None

    def spill(self, key: Any, rows: list[Row], first: int) -> SpilledRows:
        """Rows ``first..`` of ``rows`` written to disk (``rows`` stays the caller's to drop)."""
        if self._dir is None:
            root = tempfile.gettempdir()
            if root not in _swept:  # once per process: what killed processes left
                _swept.add(root)
                remove_stale_spills(root)
            self._dir = tempfile.mkdtemp(prefix=spill_prefix(), dir=root)
        path = os.path.join(self._dir, f"{key}.rows")
        parts = [pickle.dumps(tuple(r), protocol=pickle.HIGHEST_PROTOCOL) for r in rows[first:]]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        try:
            with open(path, "wb") as f:
                f.write(b"".join(parts))
        except OSError as e:
            raise UserError(f"cannot keep a partly read unit in {self._dir}: {e.strerror}; free disk space there "
                            f"or point TMPDIR at a disk with room (a rank needs about one row group per stream)") \
                from None
        return SpilledRows(path, first, offsets)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
