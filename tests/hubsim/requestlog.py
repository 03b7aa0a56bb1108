"""The request log: one RequestRecord per request served, and the Hub's rate-limit bucket of a request target
(from the Hub's URL shapes, which the routes share)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Model repos (no /datasets prefix, /api/models) are served from the same table, for hf_interop.load_hf_gpt2(repo_id).
_REPO_ROUTE = re.compile(r"^/api/(?:datasets|models)/([^/]+/[^/]+)(?:/(revision|tree|paths-info)(?:/(.*))?)?$")
_RESOLVE_ROUTE = re.compile(r"^(?:/datasets)?/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_CDN_ROUTE = re.compile(r"^/cdn/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)$")


@dataclass
class RequestRecord:
    method: str
    path: str            # raw request target
    range: str | None
    status: int
    body_bytes: int = 0
    kind: str = ""       # "api" (/api/...), "resolver" (/resolve/...), "cdn" (the signed-URL host) or "other"


def request_kind(path: str, cdn: bool = False) -> str:
    """The Hub's rate-limit bucket of a request target: api, resolver (resolvers bucket), or cdn/other (not limited)."""
    if cdn:
        return "cdn"
    if path.startswith("/api/"):
        return "api"
    if _RESOLVE_ROUTE.match(urlsplit(path).path):
        return "resolver"
    return "other"


_BUCKET = {"api": "api", "resolver": "resolvers"}

