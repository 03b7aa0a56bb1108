"""A file of a Hub dataset: ``RemoteFile`` (what identifies it at a pinned commit) and ``HubFile``, a seekable
read-only binary file over ranged GETs.

HubFile reads ahead (``readahead`` bytes, default 4 MiB) so pyarrow's many small reads become few requests, and
keeps the blocks it fetched (up to 64 MiB, least recently used dropped first), fetching only the gaps between them:
reading a file once never downloads a byte twice. It insists on ``206`` + a matching ``Content-Range`` (a server that
ignores Range is refused, never trusted), and resumes a broken transfer from the last byte received. RemoteFile and
HubFile are picklable (a HubFile re-opens its HTTP session lazily in the new process), so they can be handed to
DataLoader workers.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urljoin

import requests
import urllib3

from gpt2stream.data.hub import client, signed
from gpt2stream.data.hub.client import endpoint, gated_error, request
from gpt2stream.data.hub.retry import Retrier, RetryPolicy, TransientError, count_event
from gpt2stream.errors import DataStreamError, UserError

_CHUNK = 256 * 1024
_MAX_KEEP = 64 << 20  # bytes of fetched blocks a HubFile keeps (least recently used dropped first)
_PROGRESS_RESET = 1 << 20  # a broken transfer that still delivered 1 MiB counts as progress, not a failure
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REFUSED = frozenset({400, 401, 403, 410})  # a signed URL that answers this has expired (or was revoked): resolve again


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub dataset at a pinned commit: repo path, size in bytes, resolve URL; ``target``: the signed
    storage URL its resolve URL redirected to (empty: not known yet), valid until ``expires`` (epoch seconds)."""

    path: str
    size: int
    url: str
    target: str = ""
    expires: float = 0.0

    def with_known_target(self) -> RemoteFile:
        """This file with the signed URL this process last got for it (so it can be shipped to other processes)."""
        got = signed.TARGETS.get(self.url)
        return replace(self, target=got[0], expires=got[1]) if got else self



def open_remote(file: RemoteFile, policy: RetryPolicy | None = None, **kw: Any) -> HubFile:
    """A seekable read-only HubFile for ``file`` (keyword arguments go to HubFile, e.g. readahead)."""
    return HubFile.open(file, policy, **kw)



_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HubFile(io.RawIOBase):
    """A remote file as a seekable, read-only binary file: ranged GETs, read-ahead, retries, byte counting."""

    def __init__(self, url: str, size: int, policy: RetryPolicy | None = None, *, name: str = "",
                 readahead: int = 4 << 20, target: str = "", expires: float = 0.0, share_dir: str | None = None):
        super().__init__()
        if size < 0:
            raise ValueError(f"HubFile size={size} is invalid: must be >= 0")
        self.url = url
        self.size = int(size)
        self.policy = policy or RetryPolicy()
        self.name = name or url.rsplit("/", 1)[-1]
        self.readahead = int(readahead)
        self.bytes_fetched = 0
        self.requests = 0
        self.resolves = 0  # resolve requests that came back with a redirect (a new signed URL)
        self.share_dir = share_dir  # directory where processes of one job share signed URLs (None: this process)
        if target and url not in signed.TARGETS:
            signed.TARGETS[url] = (target, float(expires))
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, disjoint, least recently used first
        self._starts: list[int] = []  # the keys of _blocks, sorted
        self._kept = 0  # bytes in _blocks
        self._lock = threading.RLock()
        self._session: requests.Session | None = None
        self._session_pid = -1

    @classmethod
    def open(cls, file: RemoteFile, policy: RetryPolicy | None = None, **kw: Any) -> HubFile:
        return cls(file.url, file.size, policy, name=file.path, target=file.target, expires=file.expires, **kw)

    # -- pickling: ship what identifies the file (and its signed URL), never a session or a buffer
    def __reduce__(self):
        target, expires = signed.TARGETS.get(self.url, ("", 0.0))
        return (_reopen, (self.url, self.size, self.policy, self.name, self.readahead, self._pos, self.closed,
                          target, expires, self.share_dir))

    # -- io.RawIOBase protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos} in {self.name}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        data = self.read(len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Exactly min(size, bytes left) bytes (pyarrow treats a short read as end of file)."""
        self._checkClosed()
        with self._lock:
            pos = self._pos
            n = self.size - pos if size is None or size < 0 else min(size, self.size - pos)
            if n <= 0:
                return b""
            end = pos + n
            parts: list[bytes] = []
            cur = pos
            while cur < end:
                start, block = self._cached(cur)
                if block is None:  # a gap: fetch up to the next kept block, with read-ahead if that is far
                    limit = self._starts[start] if start < len(self._starts) else self.size
                    start, block = cur, self._fetch(cur, min(limit, max(end, cur + self.readahead)))
                    self._keep(start, block)
                off = cur - start
                piece = block[off:off + end - cur] if off or len(block) > end - cur else block
                parts.append(piece)
                cur += len(piece)
            self._pos = end
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._blocks.clear()
        self._starts.clear()
        self._kept = 0
        super().close()

    # -- internals
    def _cached(self, pos: int) -> tuple[int, bytes | None]:
        """(start, block) of the kept block holding byte ``pos``; else (index in _starts of the next block, None)."""
        i = bisect.bisect_right(self._starts, pos)
        if i:
            start = self._starts[i - 1]
            block = self._blocks[start]
            if pos < start + len(block):
                self._blocks.move_to_end(start)
                return start, block
        return i, None

    def _keep(self, start: int, block: bytes) -> None:
        if not block or len(block) > _MAX_KEEP:
            return
        while self._kept + len(block) > _MAX_KEEP:
            old, dropped = self._blocks.popitem(last=False)
            del self._starts[bisect.bisect_left(self._starts, old)]
            self._kept -= len(dropped)
        self._blocks[start] = block
        bisect.insort(self._starts, start)
        self._kept += len(block)

    def _http(self) -> requests.Session:
        if self._session is None or self._session_pid != os.getpid():  # forked: never share a connection
            self._session = requests.Session()
            self._session_pid = os.getpid()
        return self._session

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) by ranged GETs; a broken transfer resumes from the last byte received."""
        got = bytearray()
        retrier = Retrier(self.policy, f"reading {self.name} bytes {start}-{end - 1}")
        while len(got) < end - start:
            before = len(got)
            try:
                self._fetch_into(got, start + len(got), end)
                retrier.succeeded()
            except TransientError as e:
                if len(got) - before >= min(_PROGRESS_RESET, end - start - before):
                    retrier.succeeded()  # it moved forward: not a *consecutive* failure
                retrier.failed(e)
        return bytes(got)

    # -- signed URLs: resolve once, read from the storage host until the URL expires or is refused
    def _live_target(self) -> str | None:
        got = signed.TARGETS.get(self.url)
        if (got is None or got[1] - signed.TARGET_MARGIN <= time.time()) and self.share_dir:
            got = signed.read_shared(self.share_dir, self.url) or got
            if got is not None:
                signed.TARGETS[self.url] = got
        if got is None:
            return None
        signed.SEEN.add(self.url)
        return got[0] if got[1] - signed.TARGET_MARGIN > time.time() else None

    def _remember(self, target: str) -> None:
        self.resolves += 1
        if self.url in signed.SEEN:  # it had one: expired or refused
            count_event("url_refreshes")
        signed.SEEN.add(self.url)
        entry = (target, signed.url_expiry(target))
        signed.TARGETS[self.url] = entry
        if self.share_dir:
            signed.write_shared(self.share_dir, self.url, entry)

    def _forget(self, target: str) -> None:
        if signed.TARGETS.get(self.url, ("",))[0] == target:
            del signed.TARGETS[self.url]

    def _get_range(self, start: int, end: int) -> tuple[requests.Response, bool]:
        """GET bytes [start, end): from the signed URL while it lasts, else through /resolve/ (following its
        redirect once and remembering the target). Returns (response, whether it came from a signed URL)."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        target = self._live_target()
        if target:
            self.requests += 1
            resp = request(self._http(), "GET", target, self.policy, headers=headers, stream=True,
                            auth=signed.same_host(target))
            if resp.status_code not in _REFUSED:
                return resp, True
            resp.close()  # expired or refused: never reported, resolved again
            self._forget(target)
        self.requests += 1
        resp = request(self._http(), "GET", self.url, self.policy, headers=headers, stream=True, redirects=False)
        location = resp.headers.get("Location")
        if resp.status_code not in _REDIRECTS or not location:
            return resp, False
        resp.close()
        target = urljoin(self.url, location)
        self._remember(target)
        self.requests += 1
        return request(self._http(), "GET", target, self.policy, headers=headers, stream=True,
                        auth=signed.same_host(target)), True

    def _fetch_into(self, got: bytearray, start: int, end: int) -> None:
        resp, signed = self._get_range(start, end)
        try:
            want = self._check_range(resp, start, end, signed)  # a server may send less than asked: ask again
            received = 0
            try:
                while received < want:
                    # read1: whatever has arrived, so a transfer that breaks keeps every byte it delivered
                    chunk = resp.raw.read1(min(_CHUNK, want - received))
                    if not chunk:
                        break
                    got += chunk
                    received += len(chunk)
                    self.bytes_fetched += len(chunk)
                    client.count_fetched(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:  # reset / stall mid-body
                raise TransientError(f"{type(e).__name__} after {received} of {want} bytes: {e}") from e
            if received < want:
                raise TransientError(f"connection closed after {received} of {want} bytes")
        finally:
            resp.close()

    def _check_range(self, resp: requests.Response, start: int, end: int, signed: bool = False) -> int:
        """Bytes the answer to 'Range: bytes=start-(end-1)' carries; DataStreamError if it is not that range."""
        status = resp.status_code
        if status == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != start or int(m.group(2)) > end - 1 or int(m.group(2)) < start:
                raise DataStreamError(
                    f"network: {self.name}: asked for bytes {start}-{end - 1}, server sent Content-Range "
                    f"{resp.headers.get('Content-Range')!r}; the server or a proxy in between mangles ranged requests")
            if m.group(3) != "*" and int(m.group(3)) != self.size:
                raise DataStreamError(f"network: {self.name} is {m.group(3)} bytes on the server, expected "
                                      f"{self.size}: it changed under a pinned revision; restart the run")
            return int(m.group(2)) - start + 1
        if status == 200 and start == 0 and end == self.size:
            return self.size  # a whole-file range answered with the whole file is the same bytes
        if status == 200:
            raise DataStreamError(
                f"network: {endpoint()} ignored a Range request for {self.name} (HTTP 200 instead of 206); "
                f"ranged reads are required, use the Hub or a mirror that supports them")
        if signed and status in _REFUSED:
            raise DataStreamError(f"network: the storage host refused a freshly signed URL for {self.name} (HTTP "
                                  f"{status}); check the machine's clock, then resume the run with --resume latest")
        m = re.search(r"/datasets/(.+?)/resolve/", self.url)
        gated = gated_error(resp, unquote(m.group(1))) if m else None
        if gated is not None:
            raise gated
        if status in (401, 403):
            raise UserError(f"access to {self.name} denied (HTTP {status}): set HF_TOKEN to a token that can read "
                            f"this dataset")
        raise DataStreamError(f"network: {self.name}: HTTP {status} {resp.reason or ''} for bytes "
                              f"{start}-{end - 1}".rstrip())

    def __repr__(self) -> str:
        return f"HubFile({self.name!r}, size={self.size}, pos={self._pos})"



def _reopen(url: str, size: int, policy: RetryPolicy, name: str, readahead: int, pos: int, closed: bool,
            target: str = "", expires: float = 0.0, share_dir: str | None = None) -> HubFile:
    f = HubFile(url, size, policy, name=name, readahead=readahead, target=target, expires=expires,
                share_dir=share_dir)
    f._pos = pos
    if closed:
        f.close()
    return f
