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
import hashlib
import io
import json
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

import requests
import urllib3

from gpt2stream.errors import DataStreamError, UserError
from gpt2stream.retry import (
    Retrier,
    RetryPolicy,
    TransientError,
    call_with_retries,
    parse_retry_after,
    rate_limit_of,
)

__all__ = [
    "RetryPolicy", "RemoteFile", "HubDataset", "HubFile", "resolve_dataset", "list_parquet_files", "open_remote",
    "endpoint", "looks_like_repo_id",
    "bytes_fetched_total", "parse_configs", "choose_config", "glob_to_regex", "DataStreamError", "UserError",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 256 * 1024
_MAX_KEEP = 64 << 20  # bytes of fetched blocks a HubFile keeps (least recently used dropped first)
_PROGRESS_RESET = 1 << 20  # a broken transfer that still delivered 1 MiB counts as progress, not a failure
_TOTAL_LOCK = threading.Lock()
_TOTAL_FETCHED = 0
_REQUESTS: dict[str, int] = {"api": 0, "resolver": 0, "cdn": 0}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REFUSED = frozenset({400, 401, 403, 410})  # a signed URL that answers this has expired (or was revoked): resolve again
TARGET_MARGIN = 60.0  # a signed URL is not used in its last minute (a read may take that long)
TARGET_TTL = 3600.0  # lifetime assumed for a signed URL whose expiry cannot be read from it
_TARGETS: dict[str, tuple[str, float]] = {}  # resolve URL -> (signed URL, expiry), shared by this process's readers
_TRUE = ("1", "true", "yes", "on")


def endpoint() -> str:
    """The Hub base URL: $HF_ENDPOINT (a mirror or a test server) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """$HF_HUB_OFFLINE is set: huggingface_hub's switch for "send nothing to the Hub"."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_token() -> str | None:
    """The token huggingface_hub.get_token would find, read at call time: $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN),
    else the file `hf auth login` wrote ($HF_TOKEN_PATH, default $HF_HOME/token); none when
    $HF_HUB_DISABLE_IMPLICIT_TOKEN is set (then, as in huggingface_hub, only an explicit token would be sent)."""
    if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").strip().lower() in _TRUE:
        return None
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if tok and tok.strip():
        return tok.strip()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"))
    try:
        tok = path.read_text().strip()
    except OSError:
        tok = ""
    if not tok and os.environ.get("HF_OIDC_RESOURCE"):  # CI trusted publishing: only huggingface_hub knows how
        from huggingface_hub import get_token

        tok = get_token() or ""
    return tok or None


def _headers(auth: bool = True) -> dict[str, str]:
    h = {"User-Agent": "gpt2stream/0.1", "Accept-Encoding": "identity"}
    tok = hub_token() if auth else None
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    return h


def _verify() -> str | bool:
    """CA bundle for TLS: $REQUESTS_CA_BUNDLE, $CURL_CA_BUNDLE or $SSL_CERT_FILE, else certifi's (requests' default)."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var):
            return os.environ[var]
    return True


def request_counts() -> dict[str, int]:
    """Requests this process sent, by the Hub's bucket: api (/api/...), resolver (/resolve/...), cdn (signed URLs)."""
    with _TOTAL_LOCK:
        return dict(_REQUESTS)


def _kind(url: str) -> str:
    if not url.startswith(endpoint() + "/"):
        return "cdn"
    return "api" if urlsplit(url).path.startswith("/api/") else "resolver" if "/resolve/" in url else "cdn"


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
             headers: dict[str, str] | None = None, stream: bool = False, redirects: bool = True,
             auth: bool = True) -> requests.Response:
    """One attempt. ``auth=False``: no token (a signed storage URL carries its own; S3-style hosts refuse both)."""
    kind = _kind(url)
    with _TOTAL_LOCK:
        _REQUESTS[kind] += 1
    try:
        resp = session.request(method, url, headers={**_headers(auth), **(headers or {})}, stream=stream,
                               timeout=(policy.timeout, policy.timeout), allow_redirects=redirects, verify=_verify())
    except requests.exceptions.SSLError as e:  # a wrong CA bundle stays wrong: retrying would only hide it
        host = urlsplit(url).netloc
        raise UserError(f"TLS certificate check failed for {host} ({one_line_cause(e)}); if a proxy or mirror uses "
                        f"its own CA, point SSL_CERT_FILE or REQUESTS_CA_BUNDLE at its CA bundle") from None
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise TransientError(describe_connection_error(e, url, policy.timeout)) from e
    if resp.status_code in RETRY_STATUSES:
        limited = rate_limit_of(resp.status_code, resp.headers)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        resp.close()
        if limited is not None:
            raise limited
        raise TransientError(f"HTTP {resp.status_code} {resp.reason or ''}".strip(), retry_after)
    return resp


def one_line_cause(err: BaseException) -> str:
    """The innermost message of an exception chain (e.g. the SSL reason inside requests' wrappers), one line."""
    e: BaseException | None = err
    last = str(err)
    for _ in range(10):
        if e is None:
            break
        if str(e):
            last = str(e)
        reason = getattr(e, "reason", None)
        nested = e.args[0] if e.args and isinstance(e.args[0], BaseException) else None
        e = (reason if isinstance(reason, BaseException) else None) or nested or _cause(e)
    text = " ".join(last.split())
    return text if len(text) <= 160 else text[:157] + "..."


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
    """One file of a Hub dataset at a pinned commit: repo path, size in bytes, resolve URL; ``target``: the signed
    storage URL its resolve URL redirected to (empty: not known yet), valid until ``expires`` (epoch seconds)."""

    path: str
    size: int
    url: str
    target: str = ""
    expires: float = 0.0

    def with_known_target(self) -> RemoteFile:
        """This file with the signed URL this process last got for it (so it can be shipped to other processes)."""
        got = _TARGETS.get(self.url)
        return replace(self, target=got[0], expires=got[1]) if got else self


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


def gated_error(resp: requests.Response, repo_id: str) -> UserError | None:
    """A gated dataset's 401/403 (X-Error-Code: GatedRepo) in words: no token vs a token whose user has not accepted
    the terms, with the Hub's own X-Error-Message."""
    if resp.status_code not in (401, 403) or _error_code(resp) != "GatedRepo":
        return None
    page = f"{endpoint()}/datasets/{repo_id}"
    said = resp.headers.get("X-Error-Message", "").strip()
    said = f" (the Hub says: {one_line_cause(Exception(said))})" if said else ""
    if resp.status_code == 401 or not hub_token():
        why = "no token was sent" + ("" if hub_token() else " (HF_TOKEN is not set)")
        return UserError(f"dataset {repo_id} is gated and {why}: accept its terms at {page} and set HF_TOKEN{said}")
    return UserError(f"dataset {repo_id} is gated and the user of your HF_TOKEN has not been granted access: accept "
                     f"its terms at {page} (or wait for the authors' approval), then run again{said}")


def _check_repo_response(resp: requests.Response, repo_id: str, revision: str) -> None:
    code = _error_code(resp)
    gated = gated_error(resp, repo_id)
    if gated is not None:
        raise gated
    if resp.status_code == 404 and code == "RevisionNotFound":
        raise UserError(f"dataset {repo_id} has no revision {revision!r} on {endpoint()}; give --data-revision a "
                        f"branch, tag or commit sha of it (default: main)")
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


class RevisionGone(UserError):
    """The revision (branch, tag or sha) does not exist on the Hub (any more)."""


def revision_sha(repo_id: str, revision: str, policy: RetryPolicy | None = None) -> str:
    """The commit sha ``revision`` names now (one API request); RevisionGone if it does not exist."""
    policy = policy or RetryPolicy()
    if offline():
        raise UserError(f"HF_HUB_OFFLINE is set, so dataset {repo_id} cannot be streamed from the Hub; unset it")
    with requests.Session() as session:
        info, resp = _get_json(session, f"{endpoint()}/api/datasets/{repo_id}/revision/{quote(revision, safe='')}",
                               policy, f"dataset info of {repo_id}")
    if info is None:
        if resp.status_code == 404 and _error_code(resp) == "RevisionNotFound":
            raise RevisionGone(f"dataset {repo_id} has no revision {revision!r} on {endpoint()}")
        _check_repo_response(resp, repo_id, revision)
    return str(info.get("sha") or revision)


def resolve_dataset(repo_id: str, config: str | None = None, split: str = "train", *, revision: str = "main",
                    policy: RetryPolicy | None = None) -> HubDataset:
    """(dataset id, config, split) -> the files to stream, pinned to the revision's commit sha."""
    policy = policy or RetryPolicy()
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo_id):
        raise UserError(f"{repo_id!r} is not a Hub dataset id (expected 'org/name') nor an existing local path")
    if offline():
        raise UserError(f"HF_HUB_OFFLINE is set, so dataset {repo_id} cannot be streamed from the Hub; unset it, or "
                        f"give --data a local copy (a directory of its parquet files)")
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
        listings: dict[str, list[tuple[str, int]]] = {}
        sizes: dict[str, int] = {}

        def listing(prefix: str) -> list[tuple[str, int]]:
            # one listing of the shallowest prefix serves every glob under it
            for known, files in listings.items():
                if known == "" or prefix == known or prefix.startswith(known + "/"):
                    return [(p, n) for p, n in files if not prefix or p == prefix or p.startswith(prefix + "/")]
            listings[prefix] = _list_tree(session, base, sha, prefix, policy, repo_id)
            sizes.update(listings[prefix])
            return listings[prefix]

        from gpt2stream.hub_card import card_configs, resolve_data_files

        configs, default = card_configs(card)
        if not configs:  # no YAML configs: datasets' split-name patterns over the whole repo
            configs, default = {"default": None}, "default"
        name = choose_config(configs, default, config, repo_id)
        splits = resolve_data_files(configs[name], listing)
        if split not in splits:
            raise UserError(f"config {name!r} of dataset {repo_id} has no split {split!r}; its splits are: "
                            f"{_listing(sorted(splits))} (set --split)")
        chosen = {p: sizes[p] for p in splits[split] if p in sizes}
    if not chosen:
        data_files = (configs[name] or {}).get("data_files", "(the default patterns)")
        raise UserError(f"config {name!r} split {split!r} of dataset {repo_id} matches no files "
                        f"(data_files: {data_files})")
    files = tuple(RemoteFile(p, chosen[p], f"{ep}/datasets/{repo_id}/resolve/{sha}/{quote(p)}")
                  for p in sorted(chosen))
    return HubDataset(repo_id, name, split, sha, files)


def resolve_parquet(repo_id: str, config: str | None = None, split: str = "train", *,
                    policy: RetryPolicy | None = None, revision: str = "main") -> HubDataset:
    """resolve_dataset keeping only the parquet files; UserError if there are none."""
    ds = resolve_dataset(repo_id, config, split, revision=revision, policy=policy)
    files = tuple(f for f in ds.files if f.path.endswith(".parquet"))
    if not files:
        raise UserError(f"config {ds.config!r} split {split!r} of dataset {repo_id} has no parquet files "
                        f"(found: {_listing([f.path for f in ds.files], 5)}); streaming from the Hub reads parquet")
    return replace(ds, files=files)


def list_parquet_files(repo_id: str, config: str | None = None, split: str = "train", *,
                       policy: RetryPolicy | None = None, revision: str = "main") -> list[RemoteFile]:
    """The parquet files of (dataset, config, split), sorted by path; UserError if it has no parquet files."""
    return list(resolve_parquet(repo_id, config, split, policy=policy, revision=revision).files)


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
        if target and url not in _TARGETS:
            _TARGETS[url] = (target, float(expires))
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
        target, expires = _TARGETS.get(self.url, ("", 0.0))
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
        got = _TARGETS.get(self.url)
        if (got is None or got[1] - TARGET_MARGIN <= time.time()) and self.share_dir:
            got = _read_shared(self.share_dir, self.url) or got
            if got is not None:
                _TARGETS[self.url] = got
        if got is None or got[1] - TARGET_MARGIN <= time.time():
            return None
        return got[0]

    def _remember(self, target: str) -> None:
        self.resolves += 1
        entry = (target, url_expiry(target))
        _TARGETS[self.url] = entry
        if self.share_dir:
            _write_shared(self.share_dir, self.url, entry)

    def _forget(self, target: str) -> None:
        if _TARGETS.get(self.url, ("",))[0] == target:
            del _TARGETS[self.url]

    def _get_range(self, start: int, end: int) -> tuple[requests.Response, bool]:
        """GET bytes [start, end): from the signed URL while it lasts, else through /resolve/ (following its
        redirect once and remembering the target). Returns (response, whether it came from a signed URL)."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        target = self._live_target()
        if target:
            self.requests += 1
            resp = _request(self._http(), "GET", target, self.policy, headers=headers, stream=True,
                            auth=_same_host(target))
            if resp.status_code not in _REFUSED:
                return resp, True
            resp.close()  # expired or refused: never reported, resolved again
            self._forget(target)
        self.requests += 1
        resp = _request(self._http(), "GET", self.url, self.policy, headers=headers, stream=True, redirects=False)
        location = resp.headers.get("Location")
        if resp.status_code not in _REDIRECTS or not location:
            return resp, False
        resp.close()
        target = urljoin(self.url, location)
        self._remember(target)
        self.requests += 1
        return _request(self._http(), "GET", target, self.policy, headers=headers, stream=True,
                        auth=_same_host(target)), True

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
                    _count(len(chunk))
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


def _same_host(url: str) -> bool:
    """The token goes to the endpoint's own host only, never to a storage host a file redirects to."""
    return urlsplit(url).netloc == urlsplit(endpoint()).netloc


def url_expiry(url: str, now: float | None = None) -> float:
    """When a signed URL expires (epoch seconds): its ``Expires`` (CloudFront) or ``X-Amz-Date`` + ``X-Amz-Expires``
    (S3) parameter, else ``TARGET_TTL`` from now (a refused URL is resolved again anyway).

    >>> url_expiry("https://cdn/x?Expires=1700000000&Signature=s")
    1700000000.0
    >>> url_expiry("https://s3/x?X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600")
    1735693200.0
    """
    now = time.time() if now is None else now
    q = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    try:
        if "expires" in q:
            return float(q["expires"])
        if "x-amz-date" in q and "x-amz-expires" in q:
            import calendar

            t = time.strptime(q["x-amz-date"], "%Y%m%dT%H%M%SZ")
            return float(calendar.timegm(t) + int(q["x-amz-expires"]))
    except ValueError:
        pass
    return now + TARGET_TTL


def _shared_path(share_dir: str, url: str) -> Path:
    return Path(share_dir) / (hashlib.sha1(url.encode()).hexdigest()[:20] + ".json")


def _read_shared(share_dir: str, url: str) -> tuple[str, float] | None:
    try:
        obj = json.loads(_shared_path(share_dir, url).read_text())
        return str(obj["target"]), float(obj["expires"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_shared(share_dir: str, url: str, entry: tuple[str, float]) -> None:
    """Atomically, readable by this user only (a signed URL grants access until it expires); best effort."""
    path = _shared_path(share_dir, url)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, "target": entry[0], "expires": entry[1]}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _reopen(url: str, size: int, policy: RetryPolicy, name: str, readahead: int, pos: int, closed: bool,
            target: str = "", expires: float = 0.0, share_dir: str | None = None) -> HubFile:
    f = HubFile(url, size, policy, name=name, readahead=readahead, target=target, expires=expires,
                share_dir=share_dir)
    f._pos = pos
    if closed:
        f.close()
    return f
