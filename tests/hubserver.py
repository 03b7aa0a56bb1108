"""A Hugging Face Hub look-alike for tests: fixture builder, HTTP server and fault-injecting proxy.

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

import hashlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_REPO = "HuggingFaceFW/fineweb-edu"
# Path patterns for Fault.match: metadata (API, README and the probes datasets sends) vs parquet data.
METADATA = r"^/api/|/README\.md|\.huggingface\.yaml|dataset_infos\.json|\.py(\?|$)"
DATA = r"\.parquet(\?|$)"

SCHEMA_COLUMNS = (
    "text", "id", "dump", "url", "file_path", "language", "language_score", "token_count", "score", "int_score",
)
SAMPLE_DUMPS = ("CC-MAIN-2013-20", "CC-MAIN-2019-35", "CC-MAIN-2024-10")


# ---------------------------------------------------------------------------------------------------------------
# Fixture builder
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class RepoFixture:
    """A dataset repo written on disk by build_fineweb_repo."""

    root: Path
    configs: dict[str, str]                        # config name -> data_files glob (split "train")
    file_ids: dict[str, list[str]] = field(default_factory=dict)   # repo path -> ids in row order
    row_groups: dict[str, list[int]] = field(default_factory=dict)  # repo path -> rows per row group

    def files(self, config: str = "sample-10BT") -> list[str]:
        pattern = _glob_regex(self.configs[config])
        return sorted(p for p in self.file_ids if pattern.fullmatch(p))

    def ids(self, config: str = "sample-10BT") -> list[str]:
        return [i for f in self.files(config) for i in self.file_ids[f]]

    def texts(self, config: str = "sample-10BT", column: str = "text") -> list:
        import pyarrow.parquet as pq

        return [v for f in self.files(config) for v in pq.read_table(self.root / f, columns=[column])[column]
                .to_pylist()]


def _glob_regex(pattern: str) -> re.Pattern:
    out = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(out)


_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if can more no will out so up said what "
    "its about into than them only other new some time could these two may first then do any like my now over "
    "such our man me even most made after also did many before must through back years where much your way well "
    "down should because each just those people how too little state good very make world still own see men work "
    "long here get both between life being under never day same another know while last might great old year off "
    "come since against go came right used take three water energy students learning history science children "
    "health research system school teachers plants climate river city education language number process example"
).split()


def _generated_paragraphs(rng: random.Random, n: int) -> list[str]:
    """English-like filler used when ../shared/corpus is absent (a user's fresh clone)."""
    paras = []
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]  # Zipf-like: function words dominate, as in English
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(2, 6)):
            words = rng.choices(_WORDS, weights, k=rng.randint(6, 20))
            sents.append(" ".join(words).capitalize() + rng.choice(".....?!"))
        paras.append(" ".join(sents))
    return paras


def _corpus_paragraphs(corpus_dir: Path | None) -> list[str]:
    if corpus_dir is None or not Path(corpus_dir).is_dir():
        return []
    paras: list[str] = []
    for name in ("fineweb_edu_sample.txt", "frankenstein.txt", "sherlock.txt"):
        p = Path(corpus_dir) / name
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            paras += [ln.strip() for ln in re.split(r"\n\s*\n|\n", text) if len(ln.strip()) >= 40]
    return paras


def _write_parquet(path: Path, docs: list[str], dump: str, rows_per_group: int, rng: random.Random,
                   seen_ids: set[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = []
    for _ in docs:
        while True:
            i = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"
            if i not in seen_ids:
                break
        seen_ids.add(i)
        ids.append(i)
    scores = [round(rng.uniform(2.5, 5.0), 4) for _ in docs]
    cols = {
        "text": pa.array(docs, pa.string()),
        "id": pa.array(ids, pa.string()),
        "dump": pa.array([dump] * len(docs), pa.string()),
        "url": pa.array([f"http://example{rng.randint(0, 999)}.org/page/{k}" for k in range(len(docs))],
                        pa.string()),
        "file_path": pa.array([f"s3://commoncrawl/crawl-data/{dump}/segments/{rng.randint(10**12, 10**13)}"
                               f"/warc/CC-MAIN-{k:05d}.warc.gz" for k in range(len(docs))], pa.string()),
        "language": pa.array(["en"] * len(docs), pa.string()),
        "language_score": pa.array([round(rng.uniform(0.85, 1.0), 4) for _ in docs], pa.float64()),
        "token_count": pa.array([max(1, len(d.split()) * 4 // 3) for d in docs], pa.int64()),
        "score": pa.array(scores, pa.float64()),
        "int_score": pa.array([int(round(s)) for s in scores], pa.int64()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=rows_per_group)
    return ids


def build_fineweb_repo(
    root: Path,
    *,
    n_files: int = 4,
    row_groups: int = 3,
    rows_per_group: int = 40,
    dump_files: int = 1,
    corpus_dir: Path | None = None,
    seed: int = 0,
    paragraphs_per_doc: tuple[int, int] = (1, 6),
) -> RepoFixture:
    """Write a FineWeb-Edu-shaped dataset repo into ``root`` and describe it.

    Layout (like the real one): README.md with YAML ``configs`` -> ``sample-10BT`` = ``sample/10BT/*`` (``n_files``
    parquet files of ``row_groups`` x ``rows_per_group`` rows), one config per dump ``CC-MAIN-...`` =
    ``data/<dump>/*`` (``dump_files`` smaller files each) and ``default`` = ``data/*/*``. Text comes from
    ``corpus_dir`` (../shared/corpus) when given and present, else generated English-like text. Ids are unique.
    """
    root = Path(root)
    rng = random.Random(seed)
    paras = _corpus_paragraphs(corpus_dir) or _generated_paragraphs(rng, 2000)
    cursor = rng.randrange(len(paras))

    def make_docs(n: int) -> list[str]:
        nonlocal cursor
        docs = []
        for _ in range(n):
            k = rng.randint(*paragraphs_per_doc)
            docs.append("\n".join(paras[(cursor + j) % len(paras)] for j in range(k)))
            cursor = (cursor + k) % len(paras)
        return docs

    configs = {"default": "data/*/*", "sample-10BT": "sample/10BT/*"}
    configs.update({d: f"data/{d}/*" for d in SAMPLE_DUMPS})
    fx = RepoFixture(root=root, configs=configs)
    seen: set[str] = set()
    for i in range(n_files):
        rel = f"sample/10BT/{i:03d}_00000.parquet"
        n = row_groups * rows_per_group
        fx.file_ids[rel] = _write_parquet(root / rel, make_docs(n), SAMPLE_DUMPS[i % len(SAMPLE_DUMPS)],
                                          rows_per_group, rng, seen)
        fx.row_groups[rel] = [rows_per_group] * row_groups
    for d in SAMPLE_DUMPS:
        for i in range(dump_files):
            rel = f"data/{d}/{i:03d}_00000.parquet"
            fx.file_ids[rel] = _write_parquet(root / rel, make_docs(2 * 10), d, 10, rng, seen)
            fx.row_groups[rel] = [10, 10]

    yaml_configs = []
    for name, pattern in configs.items():
        yaml_configs.append(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {pattern}")
    readme = (
        "---\nlicense: odc-by\ntask_categories:\n- text-generation\nlanguage:\n- en\npretty_name: FineWeb-Edu "
        "(test fixture)\nsize_categories:\n- n>1T\nconfigs:\n" + "\n".join(yaml_configs) + "\n---\n\n"
        "# FineWeb-Edu (test fixture)\n\nA small FineWeb-Edu-shaped dataset served by tests/hubserver.py.\n"
    )
    (root / "README.md").write_text(readme, encoding="utf-8")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    return fx


# ---------------------------------------------------------------------------------------------------------------
# Hub-compatible HTTP server
# ---------------------------------------------------------------------------------------------------------------

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


class _Repo:
    def __init__(self, repo_id: str, root: Path):
        self.repo_id = repo_id
        self.root = Path(root)
        self.files: dict[str, Path] = {}
        self.digests: dict[str, str] = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.root).as_posix()
                self.files[rel] = p
                self.digests[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        h = hashlib.sha1(repo_id.encode())
        for rel in self.files:
            h.update(rel.encode() + b"\0" + self.digests[rel].encode())
        self.sha = h.hexdigest()

    def dirs(self) -> set[str]:
        out = set()
        for rel in self.files:
            parts = rel.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                out.add("/".join(parts[:k]))
        return out

    def entry(self, rel: str) -> dict:
        if rel in self.files:
            size = self.files[rel].stat().st_size
            e = {"type": "file", "oid": hashlib.sha1(self.digests[rel].encode()).hexdigest(), "size": size,
                 "path": rel}
            if rel.endswith(".parquet"):
                e["lfs"] = {"oid": self.digests[rel], "size": size, "pointerSize": 134}
            return e
        return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}

    def card_data(self) -> dict:
        import yaml

        readme = self.files.get("README.md")
        if readme is None:
            return {}
        text = readme.read_text(encoding="utf-8")
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
        return (yaml.safe_load(m.group(1)) or {}) if m else {}

    def info(self) -> dict:
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
            "author": self.repo_id.split("/")[0], "sha": self.sha, "lastModified": "2025-01-01T00:00:00.000Z",
            "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "cardData": self.card_data(), "siblings": [{"rfilename": r} for r in self.files],
            "createdAt": "2024-01-01T00:00:00.000Z", "usedStorage": sum(p.stat().st_size for p in self.files.values()),
        }


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


# Model repos (no /datasets prefix, /api/models) are served from the same table, for hf_interop.load_hf_gpt2(repo_id).
_REPO_ROUTE = re.compile(r"^/api/(?:datasets|models)/([^/]+/[^/]+)(?:/(revision|tree|paths-info)(?:/(.*))?)?$")
_RESOLVE_ROUTE = re.compile(r"^(?:/datasets)?/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_CDN_ROUTE = re.compile(r"^/cdn/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)$")
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
