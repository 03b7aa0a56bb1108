"""HubServer: serves repos (repo_id -> local directory) the way huggingface.co does, on 127.0.0.1 (and a CDN host
on 127.0.0.2 for signed URLs); revisions, rate limits, the request log and byte counters."""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

from .fixture import DEFAULT_REPO
from .repo import _Repo
from .requestlog import RequestRecord, request_kind
from .routes import _HubHandler, _QuietServer


class HubServer:
    """Serves dataset repos (repo_id -> local directory) the way huggingface.co does, on 127.0.0.1."""

    def __init__(self, repos: dict[str, Path], *, token: str | None = None, ignore_range: bool = False,
                 redirect_data: bool = False, page_size: int = 1000, max_range: int | None = None,
                 idle_timeout: float = 60.0, max_lifetime: float = 900.0, url_ttl: float = 3600.0,
                 rate_limits: dict[str, tuple[int, float]] | None = None,
                 gated: dict[str, set[str]] | None = None, tls: tuple[str, str] | None = None):
        self.repos = {rid: _Repo(rid, root) for rid, root in repos.items()}  # repo id -> its revision at main
        self.revisions = {rid: {r.sha: r} for rid, r in self.repos.items()}  # every revision kept, by sha
        self.refs: dict[str, dict[str, str]] = {rid: {} for rid in self.repos}  # branches/tags other than main
        self.token = token
        self.url_ttl = url_ttl  # seconds a signed CDN URL stays valid
        self.rate_limits = dict(rate_limits or {})  # bucket ("api" / "resolvers") -> (quota, window seconds)
        self.gated = {k: set(v) for k, v in (gated or {}).items()}  # repo id -> tokens that accepted its terms
        self._windows: dict[str, tuple[int, int]] = {}  # bucket -> (window index, requests counted in it)
        self._secret = uuid.uuid4().bytes
        self.tls = tls  # (certfile, keyfile): serve https
        self._cdn: ThreadingHTTPServer | None = None
        self.ignore_range = ignore_range
        self.redirect_data = redirect_data
        self.page_size = page_size
        self.max_range = max_range  # answer at most this many bytes per Range request (some CDNs cap ranges)
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.bytes_served: dict[str, int] = {}
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle
    def start(self) -> HubServer:
        handler = type("Handler", (_HubHandler,), {"hub": self, "timeout": self.idle_timeout})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        if self.tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="hubserver")
        self._thread.start()
        if self.redirect_data:  # the CDN: another host (127.0.0.2), so a client must not send it the token
            cdn_handler = type("CdnHandler", (_HubHandler,), {"hub": self, "timeout": self.idle_timeout, "cdn": True})
            self._cdn = _QuietServer(("127.0.0.2", 0), cdn_handler)
            threading.Thread(target=self._cdn.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name="hubserver-cdn").start()
        self._started = time.monotonic()
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for name in ("_httpd", "_cdn"):
            httpd = getattr(self, name)
            if httpd is not None:
                setattr(self, name, None)
                httpd.shutdown()
                httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        assert self._cdn is not None, "no CDN: start the server with redirect_data=True"
        return f"http://127.0.0.2:{self._cdn.server_address[1]}"

    def sha(self, repo_id: str = DEFAULT_REPO) -> str:
        return self.repos[repo_id].sha

    # -- revisions: main moves, older commits stay readable by sha (as on the Hub)
    def update(self, repo_id: str, root: Path) -> str:
        """Commit ``root``'s content as the new main of ``repo_id``; the previous revisions stay. Returns the sha."""
        repo = _Repo(repo_id, root)
        with self._lock:
            self.repos[repo_id] = repo
            self.revisions.setdefault(repo_id, {})[repo.sha] = repo
            self.refs.setdefault(repo_id, {})
        return repo.sha

    def tag(self, repo_id: str, name: str, sha: str | None = None) -> None:
        """A branch or tag ``name`` pointing at ``sha`` (default: the current main)."""
        self.refs[repo_id][name] = sha or self.repos[repo_id].sha

    def drop_revision(self, repo_id: str, sha: str) -> None:
        """Forget a revision (a force-push or a deleted branch): it answers RevisionNotFound from now on."""
        with self._lock:
            self.revisions[repo_id].pop(sha, None)

    def revision(self, repo_id: str, rev: str) -> _Repo | None:
        if rev == "main":
            return self.repos.get(repo_id)
        rev = self.refs.get(repo_id, {}).get(rev, rev)
        return self.revisions.get(repo_id, {}).get(rev)

    # -- signed CDN URLs
    def sign(self, path: str, expires: int) -> str:
        return hashlib.sha256(self._secret + f"{path}|{expires}".encode()).hexdigest()[:32]

    # -- rate limits: fixed windows counted from the server's start, per bucket, as the Hub does
    def take(self, bucket: str) -> tuple[bool, dict[str, str]]:
        """Count one request in ``bucket``; (allowed, RateLimit headers to send)."""
        if bucket not in self.rate_limits:
            return True, {}
        quota, window = self.rate_limits[bucket]
        now = time.monotonic() - self._started
        index = int(now // window)
        with self._lock:
            seen_index, used = self._windows.get(bucket, (index, 0))
            if seen_index != index:
                used = 0
            allowed = used < quota
            used += allowed
            self._windows[bucket] = (index, used)
        reset = max(1, math.ceil((index + 1) * window - now))
        return allowed, {"RateLimit": f'"{bucket}";r={quota - used};t={reset}',
                         "RateLimit-Policy": f'"fixed window";"{bucket}";q={quota};w={int(window) or 1}'}

    # -- the request log
    def counts(self) -> dict[str, int]:
        """Requests by kind (api, resolver, cdn, other), 429 answers as "429" and body bytes as "bytes"."""
        out = {"api": 0, "resolver": 0, "cdn": 0, "other": 0, "429": 0, "bytes": 0}
        with self._lock:
            for r in self.requests:
                out[r.kind or "other"] += 1
                out["429"] += r.status == 429
                out["bytes"] += r.body_bytes
        return out

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()

    def total_bytes_served(self) -> int:
        with self._lock:
            return sum(self.bytes_served.values())

    # Accounting happens BEFORE the bytes are written: a client can only see an answer after its record (and the
    # bytes it carries) is counted, so a test that reads the counters right after a call returns sees them exactly.
    # (Recording after the write raced with the client: ~5% of reads under load missed the last request.)
    def _record(self, rec: RequestRecord, file: str | None = None, cdn: bool = False) -> None:
        rec.kind = rec.kind or request_kind(rec.path, cdn)
        with self._lock:
            self.requests.append(rec)
            if file is not None:
                self.bytes_served[file] = self.bytes_served.get(file, 0) + rec.body_bytes

    def _add_bytes(self, rec: RequestRecord, file: str | None, n: int) -> None:
        with self._lock:
            rec.body_bytes += n
            if file is not None:
                self.bytes_served[file] = self.bytes_served.get(file, 0) + n

