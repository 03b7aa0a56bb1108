"""A Hugging Face Hub look-alike for tests: fixture builder, HTTP server and fault-injecting proxy.

The code lives in tests/hubsim/ (one concern a module); this module re-exports it, so that both
``from tests.hubserver import ...`` and, with tests/ on sys.path (bench/ scripts), ``from hubserver import ...``
work, and it stays a script.

Usage (tests/ is a package; from bench/ scripts put the project root on sys.path first)::

    from tests.hubserver import HubServer, FaultProxy, Fault, build_fineweb_repo, DEFAULT_REPO, METADATA, DATA

    fx = build_fineweb_repo(tmp_path / "repo")            # FineWeb-Edu-shaped dataset repo on disk
    fx.ids("sample-10BT")                                  # every document id of that config, in file/row order
    with HubServer({DEFAULT_REPO: fx.root}) as server:     # 127.0.0.1, ephemeral port, threaded
        monkeypatch.setenv("HF_ENDPOINT", server.url)      # gpt2stream.data.hub reads HF_ENDPOINT at call time
        ...
        server.bytes_served["sample/10BT/000_00000.parquet"]   # body bytes sent per repo file (thread-safe)
        server.reset_counters()

    with HubServer({DEFAULT_REPO: fx.root}) as server, FaultProxy(server.url) as proxy:
        proxy.add(Fault.reset(DATA, nth=2, after_bytes=10_000))   # 2nd parquet request: RST mid-body
        proxy.add(Fault.http(503, METADATA))                      # 1st metadata request: 503
        proxy.add(Fault.stall(DATA, stall_seconds=5))             # 1st data request: no answer for 5 s
        proxy.add(Fault.http(500, DATA, times=None))              # every data request: 500 (persistent)
        ... point HF_ENDPOINT at proxy.url ...
        proxy.fired                                               # how many faults were injected

Conftest fixtures built on this: ``hub_repo`` (session: the RepoFixture, text from ../shared/corpus when present)
and ``hub_server`` (a running HubServer for it, HF_ENDPOINT pointed at it, ``hub_server.fixture`` = the RepoFixture).
The default fixture is small (4 x 3 x 40 rows, ~45 KB per file): pass ``readahead=`` small (e.g. 4096) to HubFile
when a test needs many ranged requests per file, or build a bigger repo with build_fineweb_repo(...).
``python tests/hubserver.py DIR`` builds a repo in DIR and serves it (manual use).

Server routes (see ../shared/HUB-NOTES.md): GET /api/agent-harnesses; HEAD/GET /datasets/<repo>/resolve/<rev>/<path>
(X-Repo-Commit, ETag, Content-Length, Accept-Ranges; Range -> 206 + Content-Range, 416 when unsatisfiable);
GET /api/datasets/<repo>[/revision/<rev>]; GET /api/datasets/<repo>/tree/<rev>[/<path>] (%2F accepted, Link-header
pagination); POST /api/datasets/<repo>/paths-info/<rev>. Unknown repo/revision/file -> 404 with the X-Error-Code the
Hub uses (RepoNotFound / RevisionNotFound / EntryNotFound). Options: ``token=`` (require a Bearer token),
``ignore_range=True`` (a broken mirror that answers 200 with the whole file), ``max_range=N`` (206 answers carry
at most N bytes, as some CDNs do), ``redirect_data=True`` (parquet
resolves 302 to a signed ``/cdn/`` URL on a second host, 127.0.0.2 (``server.cdn_url``), valid ``url_ttl`` seconds, like
LFS/Xet files on the real Hub: a CDN request carrying ``Authorization`` gets 400, an expired or forged one 403),
``page_size=`` (tree pagination), ``rate_limits={"resolvers": (quota, window_s), "api": (...)}`` (fixed windows with
the Hub's ``RateLimit``/``RateLimit-Policy`` headers and 429), ``gated={repo_id: {tokens that accepted the terms}}``
(files answer 401/403 with ``X-Error-Code: GatedRepo``; the revision API stays 200).
Revisions: ``server.update(repo_id, new_root)`` moves main to new content and keeps the old sha readable;
``server.tag(repo_id, name, sha)``; ``server.drop_revision(repo_id, sha)``.
Request log: ``server.requests`` (RequestRecord with ``kind`` api/resolver/cdn/other) and ``server.counts()``.
Everything runs in daemon threads with socket timeouts and a maximum lifetime, so nothing outlives a test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if not __package__:  # ``hubserver`` with tests/ on sys.path (bench/ scripts) or ``python tests/hubserver.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: ``tests`` is a package

from tests.hubsim import (  # noqa: E402
    DATA,
    DEFAULT_REPO,
    METADATA,
    SAMPLE_DUMPS,
    SCHEMA_COLUMNS,
    Fault,
    FaultProxy,
    HubServer,
    RepoFixture,
    RequestRecord,
    build_fineweb_repo,
    parse_range,
    request_kind,
)

__all__ = ["DATA", "DEFAULT_REPO", "METADATA", "SAMPLE_DUMPS", "SCHEMA_COLUMNS", "Fault", "FaultProxy", "HubServer",
           "RepoFixture", "RequestRecord", "build_fineweb_repo", "parse_range", "request_kind"]


def main(argv: list[str]) -> int:
    """python tests/hubserver.py DIR [--corpus DIR]: build a fixture repo in DIR (if empty) and serve it."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("dir")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--seconds", type=float, default=600)
    a = ap.parse_args(argv)
    root = Path(a.dir)
    if not (root / "README.md").exists():
        build_fineweb_repo(root, corpus_dir=Path(a.corpus) if a.corpus else None)
    with HubServer({DEFAULT_REPO: root}, max_lifetime=a.seconds) as s:
        print(f"HF_ENDPOINT={s.url}  (repo {DEFAULT_REPO}, sha {s.sha()}); serving for {a.seconds:.0f} s", flush=True)
        time.sleep(a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
