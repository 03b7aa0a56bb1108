"""The Hub look-alike's parts, one concern a module (tests/hubserver.py is the entry point that re-exports them):

- fixture: the repository builders (build_fineweb_repo, RepoFixture);
- repo: one served revision of a repo; requestlog: RequestRecord and the Hub's rate-limit buckets;
- routes: the HTTP handler; server: HubServer (lifecycle, revisions, rate limits, counters);
- faults: the fault-injecting proxy (Fault, FaultProxy, the METADATA / DATA patterns).
"""

from __future__ import annotations

from .faults import DATA, METADATA, Fault, FaultProxy
from .fixture import DEFAULT_REPO, SAMPLE_DUMPS, SCHEMA_COLUMNS, RepoFixture, build_fineweb_repo
from .requestlog import RequestRecord, request_kind
from .routes import parse_range
from .server import HubServer

__all__ = ["DATA", "DEFAULT_REPO", "METADATA", "SAMPLE_DUMPS", "SCHEMA_COLUMNS", "Fault", "FaultProxy", "HubServer",
           "RepoFixture", "RequestRecord", "build_fineweb_repo", "parse_range", "request_kind"]
