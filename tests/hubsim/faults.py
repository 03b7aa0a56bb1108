"""The fault-injecting TCP proxy: resets, stalls and HTTP errors injected into matching requests (Fault), and the
path patterns tests match on (METADATA, DATA)."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# Path patterns for Fault.match: metadata (API, README and the probes datasets sends) vs parquet data.
METADATA = r"^/api/|/README\.md|\.huggingface\.yaml|dataset_infos\.json|\.py(\?|$)"
DATA = r"\.parquet(\?|$)"

_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 404: "Not Found", 403: "Forbidden"}


@dataclass
class Fault:
    """One injected fault: hits matching requests number nth .. nth+times-1 (times=None: every one from nth on).

    kind: "reset" (TCP RST), "stall" (no bytes for stall_seconds, then close) or "http" (answer ``status``
    without asking the server). For reset/stall, ``after_bytes`` forwards that many response-body bytes first
    (a mid-body fault); None = before any response byte. ``match`` is a regex searched in the request target.
    """

    kind: str
    match: str = ""
    nth: int = 1
    times: int | None = 1
    method: str | None = None
    status: int = 503
    retry_after: str | None = None
    after_bytes: int | None = None
    stall_seconds: float = 30.0
    seen: int = 0
    fired: int = 0

    @classmethod
    def reset(cls, match: str = "", **kw) -> Fault:
        return cls("reset", match, **kw)

    @classmethod
    def stall(cls, match: str = "", **kw) -> Fault:
        return cls("stall", match, **kw)

    @classmethod
    def http(cls, status: int, match: str = "", **kw) -> Fault:
        return cls("http", match, status=status, **kw)

    def _hit(self, method: str, target: str) -> bool:
        if self.method and method != self.method:
            return False
        if not re.search(self.match, target):
            return False
        self.seen += 1
        if self.seen < self.nth or (self.times is not None and self.seen >= self.nth + self.times):
            return False
        self.fired += 1
        return True


class _Closed(Exception):
    pass


def _read_head(f) -> bytes:
    head = b""
    while True:
        line = f.readline(65537)
        if not line:
            raise _Closed
        head += line
        if line in (b"\r\n", b"\n"):
            return head


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.strip().lower().decode()] = v.strip().decode()
    return out


def _rst(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """HTTP-aware TCP proxy on 127.0.0.1 in front of a HubServer that injects Faults per request."""

    def __init__(self, upstream_url: str, faults: list[Fault] | tuple = (), *, io_timeout: float = 30.0,
                 max_lifetime: float = 900.0):
        u = urlsplit(upstream_url)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.faults: list[Fault] = list(faults)
        self.io_timeout = io_timeout
        self.max_lifetime = max_lifetime
        self.events: list[tuple[str, str, str]] = []   # (method, target, fault kind or "ok")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._started = 0.0

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    @property
    def fired(self) -> int:
        with self._lock:
            return sum(f.fired for f in self.faults)

    @property
    def url(self) -> str:
        assert self._sock is not None, "proxy not started"
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> FaultProxy:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self._started = time.monotonic()
        threading.Thread(target=self._accept_loop, daemon=True, name="faultproxy").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._started > self.max_lifetime:
                self.stop()
                return
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, target: str) -> Fault | None:
        with self._lock:
            hit = None
            for f in self.faults:
                if f._hit(method, target) and hit is None:
                    hit = f
            self.events.append((method, target, hit.kind if hit else "ok"))
            return hit

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.io_timeout)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conns.add(client)
        upstream: socket.socket | None = None
        try:
            cin = client.makefile("rb")
            uin = None
            while not self._stop.is_set():
                head = _read_head(cin)
                method, target = head.split(b" ", 2)[:2]
                method, target = method.decode(), target.decode()
                hdrs = _headers(head)
                body = cin.read(int(hdrs.get("content-length") or 0)) if hdrs.get("content-length") else b""
                fault = self._pick(method, target)
                if fault is not None and fault.kind == "http":
                    msg = json.dumps({"error": f"injected {fault.status}"}).encode()
                    extra = f"Retry-After: {fault.retry_after}\r\n" if fault.retry_after is not None else ""
                    client.sendall((f"HTTP/1.1 {fault.status} {_REASONS.get(fault.status, 'Error')}\r\n"
                                    f"Content-Type: application/json\r\nContent-Length: {len(msg)}\r\n{extra}"
                                    "\r\n").encode() + (msg if method != "HEAD" else b""))
                    continue
                if fault is not None and fault.after_bytes is None:
                    return self._inject(fault, client)
                rhead = b""
                for _attempt in range(2):  # a kept-alive upstream connection may have been closed while idle
                    reused = upstream is not None
                    if upstream is None:
                        upstream = socket.create_connection(self.upstream, timeout=self.io_timeout)
                        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        uin = upstream.makefile("rb")
                    try:
                        upstream.sendall(head + body)
                        rhead = _read_head(uin)
                        break
                    except (_Closed, OSError):
                        upstream.close()
                        upstream = None
                        if not reused:
                            raise
                rh = _headers(rhead)
                status = int(rhead.split(b" ", 2)[1])
                length = 0 if method == "HEAD" or status in (204, 304) else int(rh.get("content-length") or 0)
                client.sendall(rhead)
                sent = 0
                while sent < length:
                    limit = length - sent
                    if fault is not None:
                        limit = min(limit, max(0, fault.after_bytes - sent))
                        if limit == 0:
                            upstream.close()
                            upstream = None
                            return self._inject(fault, client)
                    chunk = uin.read(min(limit, 64 * 1024))
                    if not chunk:
                        raise _Closed
                    client.sendall(chunk)
                    sent += len(chunk)
                if fault is not None:  # body shorter than after_bytes: fault on the next byte that never comes
                    return self._inject(fault, client)
                if hdrs.get("connection", "").lower() == "close" or rh.get("connection", "").lower() == "close":
                    return None
        except (_Closed, OSError, ValueError, IndexError):
            return None
        finally:
            with self._lock:
                self._conns.discard(client)
            for s in (upstream, client):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _inject(self, fault: Fault, client: socket.socket) -> None:
        if fault.kind == "reset":
            _rst(client)
        elif fault.kind == "stall":
            self._stop.wait(fault.stall_seconds)
            client.close()
