"""Hugging Face Hub access for streaming: resolve a dataset to parquet files, and read them by ranged GETs.

Our own small HTTP client (requests) rather than huggingface_hub/datasets, because a multi-day run needs every
request to have a timeout and a bounded, logged retry, and the ordinary clients don't (see ../shared/HUB-NOTES.md:
the tree listing has no timeout, metadata requests are not retried, a dead server takes ~9 minutes to surface).

Usage::

    from gpt2stream.hub import RetryPolicy, resolve_dataset, HubFile
    policy = RetryPolicy.from_config(data_cfg)                 # max_retries, request_timeout
    ds = resolve_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", policy=policy)
    ds.sha, ds.files                                           # pinned commit; tuple of RemoteFile(path, size, url)
    files = list_parquet_files(repo_id, config, split, policy=policy)   # the same, parquet only, as a list
    f = open_remote(files[0], policy)                          # == HubFile.open(files[0], policy)
    with HubFile.open(ds.files[0], policy) as f:               # io.RawIOBase: seekable, read-only
        pf = pyarrow.parquet.ParquetFile(f)
        table = pf.read_row_group(0, columns=["text", "id"])
        f.bytes_fetched, f.requests                            # body bytes received / GETs sent by this object

- ``HF_ENDPOINT`` (default https://huggingface.co; a mirror, or the test server) and ``HF_TOKEN`` (else the token
  file ``hf auth login`` writes) are read at call time, not at import. File URLs are pinned to the resolved commit
  sha, so every rank and worker reads the same bytes even if the dataset is updated mid-run.
- RemoteFile and HubFile are picklable (a HubFile re-opens its HTTP session lazily in the new process), so they
  can be handed to DataLoader workers. Resolve once per process and pass ``ds.files`` on.
- HubFile reads ahead (``readahead`` bytes, default 4 MiB) so pyarrow's many small reads become few requests,
  and keeps the blocks it fetched (up to 64 MiB, least recently used dropped first), fetching only the gaps
  between them: reading a file once never downloads a byte twice (pyarrow's 64 KiB footer read covers the
  last row groups of a small file, which it then reads again). It insists on ``206`` + a matching
  ``Content-Range`` (a server that ignores Range is refused, never trusted), and resumes a broken transfer from
  the last byte received.
- Failures: resets, timeouts, 408/429/500/502/503/504 are retried with exponential backoff and jitter (Retry-After
  honoured); a request that fails 1 + ``max_retries`` times in a row -> gpt2stream.errors.DataStreamError (one
  line; any success or a broken transfer that still delivered 1 MiB resets the count).
  Unknown dataset / revision / config / split -> gpt2stream.errors.UserError listing what exists.
- ``bytes_fetched_total()``: body bytes received by every HubFile of this process (for resume measurements).
"""

from __future__ import annotations

import bisect
import io
import logging
import os
import re
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3

from gpt2stream.errors import DataStreamError, UserError
from gpt2stream.retry import Retrier, RetryPolicy, TransientError, call_with_retries, parse_retry_after

__all__ = [
    "RetryPolicy", "RemoteFile", "HubDataset", "HubFile", "resolve_dataset", "list_parquet_files", "open_remote",
    "endpoint", "looks_like_repo_id",
    "bytes_fetched_total", "parse_configs", "choose_config", "glob_to_regex", "DataStreamError", "UserError",
]

log = logging.getLogger("gpt2stream.hub")
DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 256 * 1024
_MAX_KEEP = 64 << 20  # bytes of fetched blocks a HubFile keeps (least recently used dropped first)
_PROGRESS_RESET = 1 << 20  # a broken transfer that still delivered 1 MiB counts as progress, not a failure
_TOTAL_LOCK = threading.Lock()
_TOTAL_FETCHED = 0


def endpoint() -> str:
    """The Hub base URL: $HF_ENDPOINT (a mirror or a test server) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """$HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file `hf auth login` wrote ($HF_TOKEN_PATH)."""
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if tok and tok.strip():
        return tok.strip()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"))
    try:
        tok = path.read_text().strip()
    except OSError:
        return None
    return tok or None


def _headers() -> dict[str, str]:
    h = {"User-Agent": "gpt2stream/0.1", "Accept-Encoding": "identity"}
    tok = hub_token()
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    return h


def looks_like_repo_id(spec: str) -> bool:
    """'org/name' (or a bare 'name') with the Hub's allowed characters, and not an existing local path."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", spec) or ".." in spec or spec.endswith("."):
        return False
    return not os.path.exists(spec)


def bytes_fetched_total() -> int:
    """Body bytes received by every HubFile in this process (failed partial transfers included)."""
    return _TOTAL_FETCHED


def _count(n: int) -> None:
    global _TOTAL_FETCHED
    with _TOTAL_LOCK:
        _TOTAL_FETCHED += n


# ---------------------------------------------------------------------------------------------------------------
# One HTTP attempt -> a response, TransientError (retry) or a final error
# ---------------------------------------------------------------------------------------------------------------

def _request(session: requests.Session, method: str, url: str, policy: RetryPolicy, *,
             headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
    try:
        resp = session.request(method, url, headers={**_headers(), **(headers or {})}, stream=stream,
                               timeout=(policy.timeout, policy.timeout), allow_redirects=True)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise TransientError(describe_connection_error(e, url, policy.timeout)) from e
    if resp.status_code in RETRY_STATUSES:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        resp.close()
        raise TransientError(f"HTTP {resp.status_code} {resp.reason or ''}".strip(), retry_after)
    return resp


def _cause(e: BaseException) -> BaseException | None:
    return e.__cause__ or e.__context__


def describe_connection_error(err: BaseException, url: str, timeout: float) -> str:
    """The cause of a failed connection in words a user can act on; requests' own text buries it in a long repr
    that the one-line retry log then cuts off."""
    host = urlsplit(url).netloc or url
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain and len(chain) < 10:
        chain.append(e)
        nested = e.args[0] if e.args and isinstance(e.args[0], BaseException) else None
        e = getattr(e, "reason", None) if isinstance(e, urllib3.exceptions.MaxRetryError) else None
        e = e or nested or _cause(chain[-1])
    kinds = {type(x).__name__ for x in chain}
    name = type(err).__name__
    if "NameResolutionError" in kinds or any(isinstance(x, socket.gaierror) for x in chain):
        return f"{name}: cannot resolve host {host} (DNS lookup failed: no network, or a wrong HF_ENDPOINT?)"
    if any(isinstance(x, ConnectionRefusedError) for x in chain):
        return f"{name}: connection refused by {host} (is HF_ENDPOINT right?)"
    if isinstance(err, requests.Timeout) or any(isinstance(x, (TimeoutError, socket.timeout)) for x in chain):
        return f"{name}: no answer from {host} within {timeout:g}s (--request-timeout)"
    return f"{name}: {err}"


def _error_code(resp: requests.Response) -> str:
    return resp.headers.get("X-Error-Code", "")


def _get_json(session: requests.Session, url: str, policy: RetryPolicy, what: str) -> tuple[Any, requests.Response]:
    """GET a JSON document with retries. Returns (obj, resp); obj is None on a 4xx (caller explains it)."""

    def attempt() -> tuple[Any, requests.Response]:
        resp = _request(session, "GET", url, policy)
        if resp.status_code >= 400:
            return None, resp
        try:
            return resp.json(), resp
        except (ValueError, requests.RequestException) as e:  # truncated body = a broken transfer
            raise TransientError(f"bad JSON from {url}: {e}") from e

    return call_with_retries(attempt, policy, what)


# ---------------------------------------------------------------------------------------------------------------
# Dataset resolution: README YAML `configs` + tree listing -> files of one (config, split)
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub dataset at a pinned commit: repo path, size in bytes, resolve URL."""

    path: str
    size: int
    url: str


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    config: str
    split: str
    sha: str
    files: tuple[RemoteFile, ...]


def glob_to_regex(pattern: str) -> re.Pattern:
    """Hub data_files glob -> regex: '*' and '?' stay inside one path segment, '**' crosses segments.

    >>> bool(glob_to_regex("data/*/*").fullmatch("data/CC-MAIN-2013-20/000_00000.parquet"))
    True
    >>> bool(glob_to_regex("sample/10BT/*").fullmatch("sample/10BT/sub/x.parquet"))
    False
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            j = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1:j].replace("!", "^", 1) + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _static_prefix(pattern: str) -> str:
    """Directory part of a glob before the first wildcard: 'data/*/*' -> 'data' (what to list)."""
    parts = []
    for seg in pattern.split("/")[:-1]:
        if any(c in seg for c in "*?["):
            break
        parts.append(seg)
    return "/".join(parts)


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else [str(x) for x in (v or [])]


def parse_configs(card: dict) -> tuple[dict[str, dict[str, list[str]]], str | None]:
    """README YAML -> ({config: {split: [globs]}}, default config name or None).

    Accepts every data_files form the Hub accepts: a string, a list of strings (split 'train'), a list of
    {split, path} and a {split: path(s)} mapping; ``data_dir`` prefixes the globs.
    """
    out: dict[str, dict[str, list[str]]] = {}
    default = None
    for c in card.get("configs") or []:
        if not isinstance(c, dict) or "config_name" not in c:
            continue
        name = str(c["config_name"])
        data_dir = str(c.get("data_dir") or "").strip("/")
        files = c.get("data_files")
        splits: dict[str, list[str]] = {}
        if files is None:
            splits["train"] = ["**"]
        elif isinstance(files, (str, list)) and not (isinstance(files, list) and files
                                                       and isinstance(files[0], dict)):
            splits["train"] = _as_list(files)
        elif isinstance(files, list):
            for item in files:
                splits.setdefault(str(item.get("split", "train")), []).extend(_as_list(item.get("path")))
        elif isinstance(files, dict):
            for split, paths in files.items():
                splits[str(split)] = _as_list(paths)
        if data_dir:
            splits = {s: [f"{data_dir}/{p.lstrip('/')}" for p in ps] for s, ps in splits.items()}
        out[name] = splits
        if c.get("default"):
            default = name
    if default is None and "default" in out:
        default = "default"
    return out, default


_SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test"}


def infer_splits(paths: list[str]) -> dict[str, list[str]]:
    """No `configs` in the README: data files by split, from directory or file-name words (else all 'train')."""
    data = [p for p in paths if p.rsplit(".", 1)[-1] in ("parquet", "jsonl", "json", "csv", "txt", "arrow")
            and not p.startswith(".") and p != "README.md"]
    splits: dict[str, list[str]] = {}
    for p in data:
        words = re.split(r"[/\-_.]", p.lower())
        split = next((_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS), None)
        splits.setdefault(split or "train", []).append(p)
    return splits


def _listing(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def choose_config(configs: dict[str, Any], default: str | None, requested: str | None, repo_id: str) -> str:
    """The config to use: the requested one, else the default, else the only one; UserError listing the rest."""
    if requested:
        if requested in configs:
            return requested
        raise UserError(f"dataset {repo_id} has no config {requested!r}; its configs are: "
                        f"{_listing(sorted(configs))} (set --data-config)")
    if default:
        return default
    if len(configs) == 1:
        return next(iter(configs))
    raise UserError(f"dataset {repo_id} has several configs and no default: pick one with --data-config "
                    f"({_listing(sorted(configs))})")


def _front_matter(text: str) -> dict:
    import yaml

    m = re.match(r"^\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}
    try:
        card = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise UserError(f"the dataset card (README.md) has invalid YAML front matter: {e}".splitlines()[0]) from e
    return card if isinstance(card, dict) else {}


def _check_repo_response(resp: requests.Response, repo_id: str, revision: str) -> None:
    code = _error_code(resp)
    if resp.status_code == 404 and code == "RevisionNotFound":
        raise UserError(f"dataset {repo_id} has no revision {revision!r} on {endpoint()}")
    if resp.status_code in (401, 403, 404):
        hint = ("HF_TOKEN is set: check that it can read this dataset" if hub_token()
                else "if it is private or gated, set HF_TOKEN")
        raise UserError(f"dataset {repo_id!r} not found on {endpoint()} (HTTP {resp.status_code}); check the id, "
                        f"or {hint}; for a local file give an existing path")
    raise DataStreamError(f"network: {endpoint()} answered HTTP {resp.status_code} for dataset {repo_id}")


def _list_tree(session: requests.Session, base: str, sha: str, prefix: str, policy: RetryPolicy,
               repo_id: str) -> list[tuple[str, int]]:
    """All files under ``prefix`` (recursive), following the Hub's Link-header pagination."""
    path = "/" + quote(prefix, safe="") if prefix else ""
    url: str | None = f"{base}/tree/{sha}{path}?recursive=true&expand=false"
    files: list[tuple[str, int]] = []
    while url:
        obj, resp = _get_json(session, url, policy, f"listing files of {repo_id}/{prefix}")
        if obj is None:
            if resp.status_code == 404:
                return files  # a glob whose directory does not exist matches nothing
            _check_repo_response(resp, repo_id, sha)
        for e in obj:
            if e.get("type") == "file":
                files.append((e["path"], int(e.get("size") or (e.get("lfs") or {}).get("size") or 0)))
        url = resp.links.get("next", {}).get("url")
    return files


def resolve_dataset(repo_id: str, config: str | None = None, split: str = "train", *, revision: str = "main",
                    policy: RetryPolicy | None = None) -> HubDataset:
    """(dataset id, config, split) -> the files to stream, pinned to the revision's commit sha."""
    policy = policy or RetryPolicy()
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo_id):
        raise UserError(f"{repo_id!r} is not a Hub dataset id (expected 'org/name') nor an existing local path")
    ep = endpoint()
    base = f"{ep}/api/datasets/{repo_id}"
    with requests.Session() as session:
        info, resp = _get_json(session, f"{base}/revision/{quote(revision, safe='')}", policy,
                               f"dataset info of {repo_id}")
        if info is None:
            _check_repo_response(resp, repo_id, revision)
        sha = str(info.get("sha") or revision)

        def get_readme() -> str | None:
            r = _request(session, "GET", f"{ep}/datasets/{repo_id}/resolve/{sha}/README.md", policy)
            if r.status_code == 404:
                return None
            if r.status_code >= 400:
                _check_repo_response(r, repo_id, revision)
            try:
                return r.content.decode("utf-8", errors="replace")
            except requests.RequestException as e:
                raise TransientError(f"{type(e).__name__}: {e}") from e

        readme = call_with_retries(get_readme, policy, f"README.md of {repo_id}")
        card = _front_matter(readme) if readme else {}
        if not card.get("configs") and isinstance(info.get("cardData"), dict):
            card = info["cardData"]
        configs, default = parse_configs(card)
        listings: dict[str, list[tuple[str, int]]] = {}

        def listing(prefix: str) -> list[tuple[str, int]]:
            # one listing of the shallowest prefix serves every glob under it
            for known, files in listings.items():
                if known == "" or prefix == known or prefix.startswith(known + "/"):
                    return files
            listings[prefix] = _list_tree(session, base, sha, prefix, policy, repo_id)
            return listings[prefix]

        if not configs:  # no YAML configs: the Hub's default layout rules, simplified
            configs, default = {"default": infer_splits([p for p, _ in listing("")])}, "default"
        name = choose_config(configs, default, config, repo_id)
        splits = configs[name]
        if split not in splits:
            raise UserError(f"config {name!r} of dataset {repo_id} has no split {split!r}; its splits are: "
                            f"{_listing(sorted(splits))} (set --split)")
        chosen: dict[str, int] = {}
        for pattern in splits[split]:
            rx = glob_to_regex(pattern.lstrip("/"))
            for path, size in listing(_static_prefix(pattern.lstrip("/"))):
                hidden = any(seg.startswith((".", "_")) for seg in path.split("/"))
                if rx.fullmatch(path) and not hidden and path != "README.md":
                    chosen[path] = size
    if not chosen:
        raise UserError(f"config {name!r} split {split!r} of dataset {repo_id} matches no files "
                        f"(data_files: {', '.join(splits[split])})")
    files = tuple(RemoteFile(p, chosen[p], f"{ep}/datasets/{repo_id}/resolve/{sha}/{quote(p)}")
                  for p in sorted(chosen))
    return HubDataset(repo_id, name, split, sha, files)


def list_parquet_files(repo_id: str, config: str | None = None, split: str = "train", *,
                       policy: RetryPolicy | None = None, revision: str = "main") -> list[RemoteFile]:
    """The parquet files of (dataset, config, split), sorted by path; UserError if it has no parquet files."""
    ds = resolve_dataset(repo_id, config, split, revision=revision, policy=policy)
    files = [f for f in ds.files if f.path.endswith(".parquet")]
    if not files:
        raise UserError(f"config {ds.config!r} split {split!r} of dataset {repo_id} has no parquet files "
                        f"(found: {_listing([f.path for f in ds.files], 5)}); streaming from the Hub reads parquet")
    return files


def open_remote(file: RemoteFile, policy: RetryPolicy | None = None, **kw: Any) -> HubFile:
    """A seekable read-only HubFile for ``file`` (keyword arguments go to HubFile, e.g. readahead)."""
    return HubFile.open(file, policy, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Seekable read-only remote file
# ---------------------------------------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HubFile(io.RawIOBase):
    """A remote file as a seekable, read-only binary file: ranged GETs, read-ahead, retries, byte counting."""

    def __init__(self, url: str, size: int, policy: RetryPolicy | None = None, *, name: str = "",
                 readahead: int = 4 << 20):
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
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, disjoint, least recently used first
        self._starts: list[int] = []  # the keys of _blocks, sorted
        self._kept = 0  # bytes in _blocks
        self._lock = threading.RLock()
        self._session: requests.Session | None = None
        self._session_pid = -1

    @classmethod
    def open(cls, file: RemoteFile, policy: RetryPolicy | None = None, **kw: Any) -> HubFile:
        return cls(file.url, file.size, policy, name=file.path, **kw)

    # -- pickling: ship what identifies the file, never a session or a buffer
    def __reduce__(self):
        return (_reopen, (self.url, self.size, self.policy, self.name, self.readahead, self._pos, self.closed))

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

    def _fetch_into(self, got: bytearray, start: int, end: int) -> None:
        self.requests += 1
        resp = _request(self._http(), "GET", self.url, self.policy, headers={"Range": f"bytes={start}-{end - 1}"},
                        stream=True)
        try:
            want = self._check_range(resp, start, end)  # a server may send less than asked: the loop asks again
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
                    _count(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:  # reset / stall mid-body
                raise TransientError(f"{type(e).__name__} after {received} of {want} bytes: {e}") from e
            if received < want:
                raise TransientError(f"connection closed after {received} of {want} bytes")
        finally:
            resp.close()

    def _check_range(self, resp: requests.Response, start: int, end: int) -> int:
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
        if status in (401, 403):
            raise UserError(f"access to {self.name} denied (HTTP {status}): set HF_TOKEN to a token that can read "
                            f"this dataset")
        raise DataStreamError(f"network: {self.name}: HTTP {status} {resp.reason or ''} for bytes "
                              f"{start}-{end - 1}".rstrip())

    def __repr__(self) -> str:
        return f"HubFile({self.name!r}, size={self.size}, pos={self._pos})"


def _reopen(url: str, size: int, policy: RetryPolicy, name: str, readahead: int, pos: int, closed: bool) -> HubFile:
    f = HubFile(url, size, policy, name=name, readahead=readahead)
    f._pos = pos
    if closed:
        f.close()
    return f
