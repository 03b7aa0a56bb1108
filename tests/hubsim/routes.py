"""The HTTP handler: the Hub's routes (resolve, revision, tree, paths-info, the CDN's signed URLs), ranges, auth,
gated repos and rate-limit answers."""

from __future__ import annotations

import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .repo import _Repo
from .requestlog import _BUCKET, _CDN_ROUTE, _REPO_ROUTE, _RESOLVE_ROUTE, RequestRecord, request_kind

if TYPE_CHECKING:
    from .server import HubServer

_GATED_401 = "Access to dataset {} is restricted. You must have access to it and be authenticated to access it."
_GATED_403 = ("Access to dataset {} is restricted and you are not in the authorized list. Visit "
              "https://huggingface.co/datasets/{} to ask for access.")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' | 'bytes=a-' | 'bytes=-n' -> inclusive (start, end) clipped to size; None if unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":
        n = int(m.group(2))
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients (and the fault proxy) drop connections on purpose; only report real bugs.
        if not isinstance(sys.exc_info()[1], (OSError, ConnectionError)):
            super().handle_error(request, client_address)


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    cdn = False  # the handler of the CDN host (signed URLs only)
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1.0"
    disable_nagle_algorithm = True  # header and body go out in separate writes: avoid 40 ms delayed-ACK stalls

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    # -- helpers
    _limit_headers: dict = {}

    def _send(self, status: int, body: bytes = b"", *, headers: dict | None = None, ctype: str = "application/json",
              file: str | None = None) -> None:
        headers = {**self._limit_headers, **(headers or {})}
        sent = len(body) if self.command != "HEAD" else 0
        rec = RequestRecord(self.command, self.path, self.headers.get("Range"), status, sent)
        self.hub._record(rec, file, self.cdn)  # before the answer goes out (see HubServer._record)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        try:
            self.end_headers()
            if sent:
                self.wfile.write(body)
        except OSError:
            self.hub._add_bytes(rec, file, -sent)  # not delivered
            raise

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    def _authorized(self) -> bool:
        if self.hub.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, "RepoNotFound", "Invalid username or password.")
        return False

    def _repo_rev(self, repo_id: str, rev: str) -> _Repo | None:
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return None
        repo = self.hub.revision(repo_id, rev)
        if repo is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _gated_ok(self, repo_id: str) -> bool:
        """Files of a gated repo need a token whose user accepted the terms: 401 without one, 403 with another."""
        if repo_id not in self.hub.gated:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.hub.gated[repo_id]:
            return True
        status, msg = (403, _GATED_403.format(repo_id, repo_id)) if auth else (401, _GATED_401.format(repo_id))
        self._error(status, "GatedRepo", msg)
        return False

    def _rate_limited(self) -> bool:
        bucket = _BUCKET.get(request_kind(self.path, self.cdn))
        if bucket is None:
            return False
        allowed, headers = self.hub.take(bucket)
        self._limit_headers = headers
        if allowed:
            return False
        self._json({"error": "You have been rate-limited; you can retry this action in a few minutes."}, 429,
                   headers={**headers, "X-Error-Message": "rate limited"})
        return True

    def _drain_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # -- verbs
    def do_HEAD(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch(self._drain_body())

    def _dispatch(self, body: bytes = b"") -> None:
        try:
            self._route(body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _route(self, body: bytes) -> None:
        split = urlsplit(self.path)
        raw_path, query = split.path, parse_qs(split.query)
        self._limit_headers = {}
        if self.cdn:
            return self._cdn_get(raw_path, query)
        if self._rate_limited():
            return None
        if raw_path == "/api/agent-harnesses":
            return self._json({})
        if not self._authorized():
            return None
        m = _RESOLVE_ROUTE.match(raw_path)
        if m and self.command in ("GET", "HEAD"):
            repo = self._repo_rev(m.group(1), unquote(m.group(2)))
            if repo is None or not self._gated_ok(m.group(1)):
                return None
            return self._resolve(repo, unquote(m.group(3)))
        m = _REPO_ROUTE.match(raw_path)
        if m:
            repo_id, kind, rest = m.group(1), m.group(2), m.group(3)
            if kind is None and self.command == "GET":
                repo = self._repo_rev(repo_id, "main")
                return self._json(repo.info()) if repo else None
            if kind == "revision" and rest and self.command == "GET":
                repo = self._repo_rev(repo_id, unquote(rest))
                return self._json(repo.info()) if repo else None
            if kind == "tree" and rest and self.command == "GET":
                rev, _, sub = rest.partition("/")
                repo = self._repo_rev(repo_id, unquote(rev))
                return self._tree(repo, unquote(sub).strip("/"), query) if repo else None
            if kind == "paths-info" and rest and self.command == "POST":
                repo = self._repo_rev(repo_id, unquote(rest))
                return self._paths_info(repo, body) if repo else None
        return self._error(404, None, f"not found: {self.command} {raw_path}")

    def _cdn_get(self, raw_path: str, query: dict) -> None:
        """The CDN host: signed, expiring URLs only; a request that also carries a token is refused (400), as S3-style
        storage refuses two authentication mechanisms; an expired or badly signed URL gets 403."""
        m = _CDN_ROUTE.match(raw_path)
        if not m or self.command not in ("GET", "HEAD"):
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", ctype="application/xml")
        if self.headers.get("Authorization"):
            return self._send(400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
                              b"</Message></Error>", ctype="application/xml")
        expires = query.get("Expires", ["0"])[0]
        if not expires.isdigit() or query.get("Signature", [""])[0] != self.hub.sign(raw_path, int(expires)):
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>", ctype="application/xml")
        if int(expires) < time.time():
            return self._send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
                              b"</Error>", ctype="application/xml")
        repo = self.hub.revision(m.group(1), m.group(2))
        if repo is None:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", ctype="application/xml")
        return self._serve_file(repo, unquote(m.group(3)))

    def _resolve(self, repo: _Repo, rel: str) -> None:
        if rel not in repo.files:
            return self._error(404, "EntryNotFound", f"{rel} does not exist on revision {repo.sha}")
        if self.hub.redirect_data and rel.endswith(".parquet"):
            size = repo.files[rel].stat().st_size
            path = f"/cdn/{repo.repo_id}/{repo.sha}/{quote(rel)}"
            expires = int(time.time() + self.hub.url_ttl)
            loc = f"{self.hub.cdn_url}{path}?Expires={expires}&Signature={self.hub.sign(path, expires)}"
            return self._send(302, b"", headers={
                "Location": loc, "X-Repo-Commit": repo.sha, "X-Linked-Size": str(size),
                "X-Linked-Etag": f'"{repo.digests[rel]}"', "ETag": f'"{repo.entry(rel)["oid"]}"'})
        return self._serve_file(repo, rel)

    def _serve_file(self, repo: _Repo, rel: str) -> None:
        if rel not in repo.files:
            return self._error(404, "EntryNotFound", f"{rel} does not exist on revision {repo.sha}")
        path = repo.files[rel]
        size = path.stat().st_size
        headers = {**self._limit_headers, "X-Repo-Commit": repo.sha, "ETag": f'"{repo.digests[rel]}"',
                   "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if rng and not self.hub.ignore_range:
            r = parse_range(rng, size)
            if r is None:
                return self._send(416, b"", headers={**headers, "Content-Range": f"bytes */{size}"})
            (start, end), status = r, 206
            if self.hub.max_range:
                end = min(end, start + self.hub.max_range - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        ctype = "application/octet-stream" if not rel.endswith((".md", ".json", ".yaml")) else "text/plain"
        rec = RequestRecord(self.command, self.path, rng, status, 0)
        self.hub._record(rec, rel, self.cdn)  # before the answer goes out; body bytes are counted before each write
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET" and size:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(left, 64 * 1024))
                    self.hub._add_bytes(rec, rel, len(chunk))
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        self.hub._add_bytes(rec, rel, -len(chunk))  # not delivered
                        raise
                    left -= len(chunk)

    def _tree(self, repo: _Repo, sub: str, query: dict) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        dirs = repo.dirs()
        if sub and sub not in dirs:
            return self._error(404, "EntryNotFound", f"{sub} does not exist on revision {repo.sha}")
        prefix = sub + "/" if sub else ""
        names = [p for p in sorted(set(repo.files) | dirs) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
        entries = [repo.entry(p) for p in names]
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor:cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(entries):
            nxt = dict((k, v[0]) for k, v in query.items())
            nxt["cursor"] = str(cursor + self.hub.page_size)
            qs = "&".join(f"{k}={quote(v)}" for k, v in nxt.items())
            headers["Link"] = f'<{self.hub.url}{urlsplit(self.path).path}?{qs}>; rel="next"'
        return self._json(page, headers=headers)

    def _paths_info(self, repo: _Repo, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        if isinstance(paths, str):
            paths = [paths]
        dirs = repo.dirs()
        out = [repo.entry(p.strip("/")) for p in paths if p.strip("/") in repo.files or p.strip("/") in dirs]
        return self._json(out)


# ---------------------------------------------------------------------------------------------------------------
# Fault-injecting proxy
# ---------------------------------------------------------------------------------------------------------------
