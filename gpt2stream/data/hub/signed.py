"""Signed storage URLs: a file's resolve URL redirects to a signed URL on a storage host, which is read until it
expires or is refused. This process keeps the latest one per file; the processes of a job can share them through
files in a directory (``share_dir``) so each file is resolved once per job, not once per reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gpt2stream.data.hub.client import endpoint

TARGET_MARGIN = 60.0  # a signed URL is not used in its last minute (a read may take that long)
TARGET_TTL = 3600.0  # lifetime assumed for a signed URL whose expiry cannot be read from it
TARGETS: dict[str, tuple[str, float]] = {}  # resolve URL -> (signed URL, expiry), shared by this process's readers
SEEN: set[str] = set()  # resolve URLs this process had a signed URL for: resolving one again is a refresh


def same_host(url: str) -> bool:
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


def read_shared(share_dir: str, url: str) -> tuple[str, float] | None:
    try:
        obj = json.loads(_shared_path(share_dir, url).read_text())
        return str(obj["target"]), float(obj["expires"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_shared(share_dir: str, url: str, entry: tuple[str, float]) -> None:
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
