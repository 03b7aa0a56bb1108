"""gpt2stream.data.hub against the local Hub-compatible server: resolution, ranged reads, errors, the test server."""

from __future__ import annotations

import io
import multiprocessing as mp
import pickle
import random

import pyarrow.parquet as pq
import pytest
import requests

from gpt2stream.data.hub import client
from gpt2stream.data.hub import file as hubfile
from gpt2stream.data.hub.card import choose_config
from gpt2stream.data.hub.file import HubFile
from gpt2stream.data.hub.resolve import list_parquet_files, resolve_dataset
from gpt2stream.data.hub.retry import RetryPolicy
from gpt2stream.errors import DataStreamError, UserError
from tests.hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo, parse_range

FAST = RetryPolicy(max_retries=2, timeout=5.0, backoff=0.01, max_backoff=0.02)


# -- resolution -------------------------------------------------------------------------------------------------

def test_resolve_config_to_pinned_files(hub_server, hub_repo):
    ds = resolve_dataset(DEFAULT_REPO, "sample-10BT", "train", policy=FAST)
    assert ds.sha == hub_server.sha() and ds.config == "sample-10BT" and ds.split == "train"
    assert [f.path for f in ds.files] == hub_repo.files("sample-10BT") and len(ds.files) == 4
    for f in ds.files:
        assert f.size == (hub_repo.root / f.path).stat().st_size
        assert f.url == f"{hub_server.url}/datasets/{DEFAULT_REPO}/resolve/{ds.sha}/{f.path}"


def test_default_config_and_dump_config(hub_server, hub_repo):
    ds = resolve_dataset(DEFAULT_REPO, None, "train", policy=FAST)
    assert ds.config == "default"
    assert [f.path for f in ds.files] == hub_repo.files("default") and len(ds.files) == 3
    one = resolve_dataset(DEFAULT_REPO, "CC-MAIN-2019-35", "train", policy=FAST)
    assert [f.path for f in one.files] == ["data/CC-MAIN-2019-35/000_00000.parquet"]


def test_list_parquet_files_and_open_remote(hub_server, hub_repo):
    files = list_parquet_files(DEFAULT_REPO, "sample-10BT", "train", policy=FAST)
    assert [f.path for f in files] == hub_repo.files("sample-10BT")
    with hubfile.open_remote(files[1], FAST) as f:
        assert f.read() == (hub_repo.root / files[1].path).read_bytes()


def test_tree_pagination_is_followed(hub_repo, monkeypatch):
    with HubServer({DEFAULT_REPO: hub_repo.root}, page_size=2) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        ds = resolve_dataset(DEFAULT_REPO, "default", "train", policy=FAST)
        assert [f.path for f in ds.files] == hub_repo.files("default")
        tree_requests = [r for r in server.requests if "/tree/" in r.path]
        assert len(tree_requests) >= 3, "data/ has 3 dirs + 3 files: 2 per page needs several pages"


def test_hf_endpoint_is_read_at_call_time(hub_repo, monkeypatch):
    # two servers, one process: each call goes where HF_ENDPOINT points *now*
    with HubServer({DEFAULT_REPO: hub_repo.root}) as a, HubServer({DEFAULT_REPO: hub_repo.root}) as b:
        for server in (a, b, a):
            monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
            ds = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
            assert ds.files[0].url.startswith(server.url + "/datasets/")
        assert len(a.requests) == 2 * len(b.requests) > 0


def test_unknown_dataset_config_split_revision(hub_server):
    with pytest.raises(UserError, match=r"dataset 'nobody/nothing' not found on http://127\.0\.0\.1:\d+.*HF_TOKEN"):
        resolve_dataset("nobody/nothing", "sample-10BT", policy=FAST)
    with pytest.raises(UserError) as e:
        resolve_dataset(DEFAULT_REPO, "sample-1T", policy=FAST)
    msg = str(e.value)
    assert "no config 'sample-1T'" in msg and "sample-10BT" in msg and "default" in msg and "CC-MAIN-2013-20" in msg
    with pytest.raises(UserError, match=r"no split 'validation'; its splits are: train"):
        resolve_dataset(DEFAULT_REPO, "sample-10BT", "validation", policy=FAST)
    with pytest.raises(UserError, match=r"has no revision 'v9'"):
        resolve_dataset(DEFAULT_REPO, "sample-10BT", revision="v9", policy=FAST)
    with pytest.raises(UserError, match="not a Hub dataset id"):
        resolve_dataset("no such/thing here", policy=FAST)
    assert "\n" not in msg


def test_token_is_sent_when_required(hub_repo, monkeypatch, tmp_path):
    with HubServer({DEFAULT_REPO: hub_repo.root}, token="hf_secret") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        with pytest.raises(UserError, match="set HF_TOKEN"):
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        ds = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        with HubFile.open(ds.files[0], FAST) as f:
            assert f.read(4) == b"PAR1"
        monkeypatch.delenv("HF_TOKEN")  # the file `hf auth login` writes works too
        (tmp_path / "token").write_text("hf_secret\n")
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
        assert len(resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files) == 4


def test_readme_without_configs_infers_splits(tmp_path, monkeypatch):
    fx = build_fineweb_repo(tmp_path / "src", n_files=2, row_groups=1, rows_per_group=5, dump_files=1)
    repo = tmp_path / "plain"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train-00000.parquet").write_bytes((fx.root / fx.files()[0]).read_bytes())
    (repo / "data" / "test-00000.parquet").write_bytes((fx.root / fx.files()[1]).read_bytes())
    (repo / "README.md").write_text("# no YAML here\n")
    with HubServer({"me/plain": repo}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert [f.path for f in resolve_dataset("me/plain", policy=FAST).files] == ["data/train-00000.parquet"]
        assert [f.path for f in resolve_dataset("me/plain", None, "test", policy=FAST).files] == [
            "data/test-00000.parquet"]


def test_several_configs_and_no_default_is_refused():
    with pytest.raises(UserError, match="several configs and no default.*a, c"):
        choose_config({"a": {}, "c": {}}, None, None, "x/y")


def test_looks_like_repo_id(tmp_path):
    assert client.looks_like_repo_id("HuggingFaceFW/fineweb-edu") and client.looks_like_repo_id("wikitext")
    assert not client.looks_like_repo_id(str(tmp_path)) and not client.looks_like_repo_id("data/*.parquet")
    assert not client.looks_like_repo_id("../x")


# -- the seekable file object -----------------------------------------------------------------------------------

def test_parquet_through_hubfile_equals_local_and_bytes_are_counted(hub_server, hub_repo):
    ds = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
    hub_server.reset_counters()
    before = client.bytes_fetched_total()
    for rf in ds.files:
        local = pq.ParquetFile(hub_repo.root / rf.path)
        with HubFile.open(rf, FAST, readahead=4096) as f:
            remote = pq.ParquetFile(f)
            assert remote.metadata.num_row_groups == local.metadata.num_row_groups == 3
            for i in range(3):
                got = remote.read_row_group(i, columns=["text", "id"])
                assert got.equals(local.read_row_group(i, columns=["text", "id"]))
            assert f.bytes_fetched == hub_server.bytes_served[rf.path] <= rf.size
            # read-ahead: pyarrow's small reads (footer, pages) do not each become a request
            assert f.requests <= 2 + 3 * 2 + rf.size // 4096
    assert client.bytes_fetched_total() - before == hub_server.total_bytes_served()
    assert sum(pq.ParquetFile(hub_repo.root / r.path).metadata.num_rows for r in ds.files) == len(hub_repo.ids())


def test_full_read_is_byte_identical_and_one_request(hub_server, hub_repo):
    rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[2]
    hub_server.reset_counters()
    with HubFile.open(rf, FAST) as f:  # default 4 MiB read-ahead covers the whole small file
        assert f.read() == (hub_repo.root / rf.path).read_bytes()
        assert f.requests == 1 and f.bytes_fetched == rf.size == hub_server.bytes_served[rf.path]
        table = pq.read_table(f, columns=["id"])  # re-reads come from the buffer
        assert f.requests == 1
    assert table["id"].to_pylist() == hub_repo.file_ids[rf.path]


def _union_len(ranges: list[tuple[int, int]]) -> int:
    covered = set()
    for a, b in ranges:
        covered.update(range(a, b))
    return len(covered)


def test_overlapping_reads_fetch_each_byte_once(hub_server, hub_repo):
    # Regression: one kept block made a read that started before it fetch the kept bytes again, and the new
    # block evicted the old one (pyarrow: 64 KiB footer read, then row group 0 -> the later row groups fetched
    # twice, 125623 bytes for an 80452-byte file). Kept blocks now fill only the gaps between them.
    rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[1]
    data = (hub_repo.root / rf.path).read_bytes()
    hub_server.reset_counters()
    rng = random.Random(1)
    ranges = [(len(data) - 3000, len(data)), (100, 5000), (50, 8000), (7000, 7100), (0, 200)]
    ranges += [(a, min(len(data), a + rng.randrange(1, 6000))) for a in (rng.randrange(len(data)) for _ in range(40))]
    with HubFile.open(rf, FAST, readahead=1) as f:  # no read-ahead: exactly the missing bytes are fetched
        for a, b in ranges:
            f.seek(a)
            assert f.read(b - a) == data[a:b]
        assert f.bytes_fetched == _union_len(ranges) == hub_server.bytes_served[rf.path]


def test_kept_blocks_are_bounded_least_recently_used_dropped(hub_server, hub_repo, monkeypatch):
    monkeypatch.setattr(hubfile, "_MAX_KEEP", 10_000)
    rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
    data = (hub_repo.root / rf.path).read_bytes()
    with HubFile.open(rf, FAST, readahead=4000) as f:
        for a in (0, 4000, 8000):  # three 4000-byte blocks > 10_000: the first one is dropped
            f.seek(a)
            assert f.read(10) == data[a:a + 10]
        assert f.requests == 3 and f._kept == 8000
        f.seek(4100)
        assert f.read(3900) == data[4100:8000] and f.requests == 3  # kept
        f.seek(0)
        assert f.read(10) == data[:10] and f.requests == 4  # dropped: fetched again
        f.seek(20_000)
        assert f.read(20_000) == data[20_000:40_000] and f._kept <= 10_000  # too big to keep, still read


def test_parquet_bigger_than_the_footer_read_is_fetched_once(tmp_path, monkeypatch):
    # generated text: files > 64 KiB, so pyarrow's footer read does not cover row group 0 (the shared corpus makes
    # smaller files, where it covers everything and the regression above cannot show)
    fx = build_fineweb_repo(tmp_path / "big", n_files=1, row_groups=3, rows_per_group=40, dump_files=1)
    with HubServer({DEFAULT_REPO: fx.root}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        assert rf.size > 70_000
        with HubFile.open(rf, FAST, readahead=4096) as f:
            remote = pq.ParquetFile(f)
            for i in range(3):
                assert remote.read_row_group(i, columns=["text", "id"])["id"].to_pylist() == \
                    fx.file_ids[rf.path][40 * i:40 * (i + 1)]
            assert f.bytes_fetched == server.bytes_served[rf.path] <= rf.size
            assert f.requests == 2  # the footer read, then the bytes before it


def test_seek_tell_read_semantics(hub_server, hub_repo):
    rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
    data = (hub_repo.root / rf.path).read_bytes()
    f = HubFile.open(rf, FAST, readahead=1000)
    assert f.seekable() and f.readable() and not f.writable()
    assert f.seek(-8, io.SEEK_END) == len(data) - 8 and f.read(100) == data[-8:] and f.read(5) == b""
    assert f.seek(10) == 10 and f.read(3000) == data[10:3010] and f.tell() == 3010  # bigger than read-ahead
    assert f.seek(-10, io.SEEK_CUR) == 3000 and f.read(20) == data[3000:3020]
    buf = bytearray(50)
    assert f.readinto(buf) == 50 and bytes(buf) == data[3020:3070]
    rng = random.Random(0)
    for _ in range(50):
        a = rng.randrange(len(data))
        n = rng.randrange(1, 5000)
        f.seek(a)
        assert f.read(n) == data[a:a + n]
    f.seek(len(data) + 5)
    assert f.read(1) == b""
    with pytest.raises(OSError, match="negative seek"):
        f.seek(-1)
    f.close()
    with pytest.raises(ValueError):
        f.read(1)
    with io.BufferedReader(HubFile.open(rf, FAST)) as br:  # usable wherever a normal binary file is
        assert br.read(4) == b"PAR1"


def _read_tail(f: HubFile) -> tuple[int, bytes]:
    return f.tell(), f.read(16)


def test_pickle_and_forked_worker(hub_server, hub_repo):
    rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[3]
    data = (hub_repo.root / rf.path).read_bytes()
    f = HubFile.open(rf, FAST, readahead=2048)
    f.seek(100)
    assert f.read(10) == data[100:110]  # the parent has a live session and a buffer now
    g = pickle.loads(pickle.dumps(f))
    assert (g.tell(), g.name, g.size, g.readahead) == (110, rf.path, rf.size, 2048)
    assert g.read(20) == data[110:130]
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(1) as pool:
            assert pool.apply(_read_tail, (f,), {}) == (110, data[110:126])
    f.close()


def test_server_ignoring_range_is_refused(hub_repo, monkeypatch):
    with HubServer({DEFAULT_REPO: hub_repo.root}, ignore_range=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        f = HubFile.open(rf, FAST, readahead=1024)
        f.seek(100)
        with pytest.raises(DataStreamError, match=r"ignored a Range request .*HTTP 200 instead of 206"):
            f.read(10)
        f.seek(0)
        with pytest.raises(DataStreamError):
            f.read(50)
        # asking for the whole file and getting it with a 200 is the same bytes: accepted (read it explicitly:
        # pyarrow's first read is the 64 KiB footer, the whole file only when the file is smaller than that)
        whole = HubFile.open(rf, FAST)
        assert whole.read() == (hub_repo.root / rf.path).read_bytes() and whole.requests == 1
        assert pq.read_table(whole)["id"].to_pylist() == hub_repo.file_ids[rf.path] and whole.requests == 1


def test_redirected_data_is_followed(hub_repo, monkeypatch):
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[1]
        with HubFile.open(rf, FAST, readahead=8192) as f:
            assert pq.read_table(f, columns=["id"])["id"].to_pylist() == hub_repo.file_ids[rf.path]
        assert any(r.status == 302 for r in server.requests) and any("/cdn/" in r.path for r in server.requests)


def test_short_range_answers_are_continued(hub_repo, monkeypatch, caplog):
    with HubServer({DEFAULT_REPO: hub_repo.root}, max_range=1000) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        with HubFile.open(rf, RetryPolicy(max_retries=0)) as f:  # no retry allowed: short answers are not failures
            assert f.read() == (hub_repo.root / rf.path).read_bytes()
            assert f.requests == -(-rf.size // 1000) and f.bytes_fetched == rf.size
    assert "retry" not in caplog.text


def test_dead_endpoint_gives_up_with_one_clear_line(monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, quickly
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DataStreamError) as e:
        resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
    msg = str(e.value)
    assert "failed 3 times in a row" in msg and "--max-retries" in msg and "--resume" in msg and "\n" not in msg
    assert f"connection refused by 127.0.0.1:{port}" in msg  # the cause, not requests' long repr cut off


def test_connection_failures_are_described_by_their_cause():
    """No network (DNS), nothing listening, a silent server: each retry line must say which, within its 200 chars."""
    import socket
    import threading

    def cause(url: str) -> str:
        with pytest.raises((requests.ConnectionError, requests.Timeout)) as info:
            requests.get(url, timeout=(0.5, 0.5))
        text = client.describe_connection_error(info.value, url, 0.5)
        assert len(text) < 200 and "\n" not in text
        return text

    assert "cannot resolve host no-such-host.invalid (DNS lookup failed" in cause("http://no-such-host.invalid/x")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        port = silent.getsockname()[1]
        assert f"no answer from 127.0.0.1:{port} within 0.5s" in cause(f"http://127.0.0.1:{port}/x")
    finally:
        silent.close()


# -- the test server itself (other helpers rely on it) -----------------------------------------------------------

def test_server_routes(hub_server, hub_repo):
    base, sha = hub_server.url, hub_server.sha()
    assert requests.get(f"{base}/api/agent-harnesses", timeout=5).status_code == 200
    head = requests.head(f"{base}/datasets/{DEFAULT_REPO}/resolve/main/README.md", timeout=5)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == sha and head.headers["ETag"]
    assert int(head.headers["Content-Length"]) == (hub_repo.root / "README.md").stat().st_size
    path = hub_repo.files()[0]
    size = (hub_repo.root / path).stat().st_size
    r = requests.get(f"{base}/datasets/{DEFAULT_REPO}/resolve/{sha}/{path}", headers={"Range": "bytes=-8"}, timeout=5)
    assert r.status_code == 206 and r.headers["Content-Range"] == f"bytes {size - 8}-{size - 1}/{size}"
    assert r.content == (hub_repo.root / path).read_bytes()[-8:]
    r = requests.get(f"{base}/datasets/{DEFAULT_REPO}/resolve/{sha}/{path}", headers={"Range": f"bytes={size}-"},
                     timeout=5)
    assert r.status_code == 416
    for url, code in [(f"{base}/api/datasets/x/y/revision/main", "RepoNotFound"),
                      (f"{base}/api/datasets/{DEFAULT_REPO}/revision/nope", "RevisionNotFound"),
                      (f"{base}/datasets/{DEFAULT_REPO}/resolve/{sha}/fineweb-edu.py", "EntryNotFound")]:
        r = requests.get(url, timeout=5)
        assert r.status_code == 404 and r.headers["X-Error-Code"] == code
    info = requests.get(f"{base}/api/datasets/{DEFAULT_REPO}/revision/{sha}", timeout=5).json()
    assert info["sha"] == sha and {"rfilename": path} in info["siblings"]
    assert {c["config_name"] for c in info["cardData"]["configs"]} >= {"default", "sample-10BT"}
    tree = requests.get(f"{base}/api/datasets/{DEFAULT_REPO}/tree/{sha}/sample%2F10BT?recursive=false", timeout=5)
    assert [e["path"] for e in tree.json()] == hub_repo.files()
    pi = requests.post(f"{base}/api/datasets/{DEFAULT_REPO}/paths-info/{sha}",
                       data={"paths": [path, "sample", "missing"]}, timeout=5).json()
    assert [(e["path"], e["type"]) for e in pi] == [(path, "file"), ("sample", "directory")]
    assert hub_server.bytes_served[path] == 8


def test_parse_range():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=95-200", 100) == (95, 99)
    assert parse_range("bytes=100-", 100) is None and parse_range("bytes=5-2", 100) is None
    assert parse_range("items=0-1", 100) is None


def test_fixture_shape(hub_repo):
    pf = pq.ParquetFile(hub_repo.root / hub_repo.files()[0])
    assert pf.schema_arrow.names == ["text", "id", "dump", "url", "file_path", "language", "language_score",
                                     "token_count", "score", "int_score"]
    assert pf.metadata.num_row_groups == 3 and pf.metadata.num_rows == 120
    ids = hub_repo.ids("default") + hub_repo.ids("sample-10BT")
    assert len(ids) == len(set(ids)) == 3 * 20 + 4 * 120
    texts = hub_repo.texts()
    assert all(isinstance(t, str) and len(t) > 20 for t in texts) and len(set(texts)) > 100


def test_fixture_without_corpus_is_english_like(tmp_path):
    fx = build_fineweb_repo(tmp_path, n_files=1, row_groups=2, rows_per_group=5, dump_files=1, corpus_dir=None)
    texts = fx.texts()
    words = [w.strip(".?!").lower() for w in " ".join(texts).split()]
    common = sum(w in ("the", "of", "and", "to", "in", "a", "is", "that") for w in words)
    assert len(texts) == 10 and len(words) > 200 and common / len(words) > 0.15
    assert all(t[0].isupper() and t.rstrip()[-1] in ".?!" for t in texts)


def test_proxy_counts_matches_and_fires_nth_to_nth_plus_times(hub_repo):
    import time

    from tests.hubserver import Fault, FaultProxy

    with HubServer({DEFAULT_REPO: hub_repo.root}, idle_timeout=0.3) as server, FaultProxy(server.url) as proxy:
        fault = proxy.add(Fault.http(503, r"/api/datasets/", nth=2, times=2, retry_after="4"))
        sess = requests.Session()
        codes = [sess.get(f"{proxy.url}/api/datasets/{DEFAULT_REPO}", timeout=5) for _ in range(5)]
        assert [r.status_code for r in codes] == [200, 503, 503, 200, 200]
        assert codes[1].headers["Retry-After"] == "4"
        assert sess.get(f"{proxy.url}/api/agent-harnesses", timeout=5).status_code == 200  # not matching
        assert (fault.seen, fault.fired, proxy.fired) == (5, 2, 2)
        assert [k for _, _, k in proxy.events] == ["ok", "http", "http", "ok", "ok", "ok"]
        time.sleep(0.8)  # the server closes the idle upstream connection: the proxy reconnects, no fault appears
        assert sess.get(f"{proxy.url}/api/datasets/{DEFAULT_REPO}", timeout=5).status_code == 200
        reset = proxy.add(Fault.reset(r"README", method="GET"))
        assert requests.head(f"{proxy.url}/datasets/{DEFAULT_REPO}/resolve/main/README.md", timeout=5).ok
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.url}/datasets/{DEFAULT_REPO}/resolve/main/README.md", timeout=5)
        assert reset.fired == 1
