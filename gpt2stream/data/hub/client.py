"""The Hub's HTTP client: the endpoint, the offline switch, the token and headers, one request attempt, JSON GETs
with retries, errors in words a user can act on, and the request / byte counters of this process.

Our own small client (requests) rather than huggingface_hub's, because a multi-day run needs every request to have
a timeout and a bounded, logged retry (docs/hub.md). ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` are read
at call time, never at import.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from gpt2stream.cache_dirs import hf_home
from gpt2stream.data.hub.retry import (
    RetryPolicy,
    TransientError,
    call_with_retries,
    event_counts,
    parse_retry_after,
    rate_limit_of,
)
from gpt2stream.errors import UserError

DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TOTAL_LOCK = threading.Lock()
_TOTAL_FETCHED = 0
_REQUESTS: dict[str, int] = {"api": 0, "resolver": 0, "cdn": 0}
_TRUE = ("1", "true", "yes", "on")


def endpoint() -> str:
    """The Hub base URL: $HF_ENDPOINT (a mirror or a test server) or https://huggingface.co; UserError (one line)
    when HF_ENDPOINT is not an http(s) URL with a host, which requests would report as a long traceback."""
    raw = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    url = raw.rstrip("/")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. a malformed port or IPv6 host
        ok = False
    if not ok:
        raise UserError(f"HF_ENDPOINT={raw!r} is not a Hub URL: it needs http:// or https:// and a host (e.g. "
                        f"{DEFAULT_ENDPOINT} or http://localhost:8080); fix it, or unset it for the Hub")
    return url


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
    path = Path(os.environ.get("HF_TOKEN_PATH") or hf_home() / "token")
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


def client_counts() -> dict[str, float]:
    """This process's retries, seconds waited on rate limits and signed-URL refreshes (data/counters.py)."""
    return event_counts()


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


def count_fetched(n: int) -> None:
    global _TOTAL_FETCHED
    with _TOTAL_LOCK:
        _TOTAL_FETCHED += n


# ---------------------------------------------------------------------------------------------------------------
# One HTTP attempt -> a response, TransientError (retry) or a final error
# ---------------------------------------------------------------------------------------------------------------

def request(session: requests.Session, method: str, url: str, policy: RetryPolicy, *,
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


def error_code(resp: requests.Response) -> str:
    return resp.headers.get("X-Error-Code", "")


def get_json(session: requests.Session, url: str, policy: RetryPolicy, what: str) -> tuple[Any, requests.Response]:
    """GET a JSON document with retries. Returns (obj, resp); obj is None on a 4xx (caller explains it)."""

    def attempt() -> tuple[Any, requests.Response]:
        resp = request(session, "GET", url, policy)
        if resp.status_code >= 400:
            return None, resp
        try:
            return resp.json(), resp
        except (ValueError, requests.RequestException) as e:  # truncated body = a broken transfer
            raise TransientError(f"bad JSON from {url}: {e}") from e

    return call_with_retries(attempt, policy, what)



def gated_error(resp: requests.Response, repo_id: str) -> UserError | None:
    """A gated dataset's 401/403 (X-Error-Code: GatedRepo) in words: no token vs a token whose user has not accepted
    the terms, with the Hub's own X-Error-Message."""
    if resp.status_code not in (401, 403) or error_code(resp) != "GatedRepo":
        return None
    page = f"{endpoint()}/datasets/{repo_id}"
    said = resp.headers.get("X-Error-Message", "").strip()
    said = f" (the Hub says: {one_line_cause(Exception(said))})" if said else ""
    if resp.status_code == 401 or not hub_token():
        why = "no token was sent" + ("" if hub_token() else " (HF_TOKEN is not set)")
        return UserError(f"dataset {repo_id} is gated and {why}: accept its terms at {page} and set HF_TOKEN{said}")
    return UserError(f"dataset {repo_id} is gated and the user of your HF_TOKEN has not been granted access: accept "
                     f"its terms at {page} (or wait for the authors' approval), then run again{said}")
