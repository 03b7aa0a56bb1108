"""Hub streaming at cluster scale, against the test server (tests/hubserver.py): signed storage URLs reused and
never sent the token, rate limits waited out on their own budget, gated datasets explained, pinned revisions, and a
job's metadata requests that do not grow with its ranks or workers."""

from __future__ import annotations

import logging
import pickle
import time
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data.hub import signed
from gpt2stream.data.hub.file import HubFile
from gpt2stream.data.hub.manifest import load_manifest
from gpt2stream.data.hub.resolve import resolve_dataset
from gpt2stream.data.hub.retry import RetryPolicy, event_counts
from gpt2stream.data.job import open_data_for_job, pin_revision, write_manifest
from gpt2stream.errors import DataStreamError, UserError
from tests.hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo

FAST = RetryPolicy(max_retries=2, timeout=10, backoff=0.01, max_backoff=0.05)
SOLO = SimpleNamespace(rank=0, ddp=False)  # a one-process "job" for open_data_for_job


@pytest.fixture(autouse=True)
def _fresh_targets(monkeypatch):
    monkeypatch.setattr(signed, "TARGETS", {})  # each test starts with no signed URL known to this process
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def cfg(**kw) -> DataConfig:
    base = dict(data=DEFAULT_REPO, data_config="sample-10BT", seq_len=8, val_docs=5, num_workers=0,
                max_retries=2, request_timeout=10)
    return DataConfig(**{**base, **kw})


def resolver_hits(server: HubServer, path: str) -> int:
    return sum(1 for r in server.requests if r.kind == "resolver" and r.path.endswith(path))


# ---- signed URLs -------------------------------------------------------------------------------------------------

def test_signed_url_is_resolved_once_and_never_gets_the_token(hub_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "none"))
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True, token="hf_secret") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")  # the endpoint needs it; the CDN answers 400 to it
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        server.reset_counters()
        with HubFile.open(rf, FAST, readahead=2048) as f:
            data = b"".join(iter(lambda: f.read(2048), b""))
        assert data == (hub_repo.root / rf.path).read_bytes()
        counts = server.counts()
        assert resolver_hits(server, rf.path) == 1, server.requests
        assert counts["cdn"] >= rf.size // 2048 and all(r.status == 206 for r in server.requests if r.kind == "cdn")
        assert f.resolves == 1


def test_expired_signed_url_is_resolved_again_and_never_reported(hub_repo, monkeypatch, caplog):
    monkeypatch.setattr(signed, "TARGET_MARGIN", 0.0)  # use the URL to its last second, so the CDN sees it expired
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True, url_ttl=4) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[1]
        want = (hub_repo.root / rf.path).read_bytes()
        before = event_counts()
        with caplog.at_level(logging.WARNING, "gpt2stream.hub"), \
                HubFile.open(rf, RetryPolicy(max_retries=0), readahead=1024) as f:
            head = f.read(1000)
            signed.TARGETS[rf.url] = (signed.TARGETS[rf.url][0], time.time() + 60)  # believe it is still valid
            time.sleep(4.2)  # ... it is not: the CDN answers 403 (the lifetime leaves a loaded machine time to open)
            rest = b"".join(iter(lambda: f.read(1024), b""))
        assert head + rest == want
        assert any(r.kind == "cdn" and r.status == 403 for r in server.requests)
        assert resolver_hits(server, rf.path) == 2 and f.resolves == 2
        assert caplog.text == ""
    after = event_counts()  # the run's counters (metrics.jsonl's net/url_refreshes) saw the one refresh
    assert after["url_refreshes"] - before["url_refreshes"] == 1 and after["retries"] == before["retries"]


def test_signed_urls_travel_with_the_source_to_other_processes(hub_repo, monkeypatch, tmp_path):
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        src = open_data_for_job(cfg(), SOLO, tmp_path / "run")
        server.reset_counters()
        monkeypatch.setattr(signed, "TARGETS", {})  # a DataLoader worker / another rank: nothing known yet
        other = pickle.loads(pickle.dumps(src))
        plan = other.plan(5, 1)
        rows = other.read_unit(plan.units[0])
        assert rows and server.counts()["resolver"] == 0 and server.counts()["api"] == 0


# ---- rate limits -------------------------------------------------------------------------------------------------

def test_rate_limit_is_waited_out_without_counting_as_failures(hub_repo, monkeypatch, caplog):
    with HubServer({DEFAULT_REPO: hub_repo.root}, rate_limits={"resolvers": (4, 2)}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        n = -(-rf.size // 4096)
        assert n > 8, "the file must need several windows' worth of requests"
        t0, before = time.monotonic(), event_counts()
        with caplog.at_level(logging.WARNING, "gpt2stream.hub"), \
                HubFile.open(rf, RetryPolicy(max_retries=0, timeout=10), readahead=4096) as f:
            data = b"".join(iter(lambda: f.read(4096), b""))
            assert data == (hub_repo.root / rf.path).read_bytes()  # max_retries=0: a 429 is not a failure
        elapsed = time.monotonic() - t0
    too_many = [r for r in server.requests if r.status == 429]
    waits = [ln for ln in caplog.text.splitlines() if "rate limited" in ln]
    assert too_many and len(waits) == len(too_many)
    assert "bucket resolvers, quota 4 per 2 s" in waits[0] and "waiting" in waits[0]
    windows = elapsed / 2 + 1
    assert len(too_many) <= windows, (len(too_many), elapsed)  # one 429 per exhausted window, then a wait
    after = event_counts()  # what metrics.jsonl's net/retries and net/rate_limit_wait_s count
    assert after["retries"] - before["retries"] == len(too_many)
    assert 0 < after["rate_limit_wait_s"] - before["rate_limit_wait_s"] <= elapsed


def test_rate_limit_budget_gives_one_clear_error(hub_repo, monkeypatch):
    with HubServer({DEFAULT_REPO: hub_repo.root}, rate_limits={"resolvers": (1, 30)}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]  # README used the one request
        with pytest.raises(DataStreamError) as e, HubFile.open(rf, RetryPolicy(rate_limit_wait=5)) as f:
            f.read(10)
    msg = str(e.value)
    assert "rate-limited" in msg and "bucket resolvers" in msg and "--rate-limit-wait" in msg and "\n" not in msg


def test_watchdog_and_collective_timeout_stay_above_the_rate_limit_budget():
    from gpt2stream.data.loader import stall_timeout
    from gpt2stream.train import collective_timeout

    for c in (cfg(max_retries=1, request_timeout=1), cfg(rate_limit_wait=3600), cfg()):
        assert stall_timeout(c) > c.rate_limit_wait + c.request_timeout * (c.max_retries + 1)
        assert collective_timeout(c) > stall_timeout(c)
    assert RetryPolicy().rate_limit_wait >= 600  # at least two of the Hub's 5-minute windows


# ---- gated, tokens, offline --------------------------------------------------------------------------------------

def test_gated_dataset_tells_no_token_from_terms_not_accepted(hub_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "none"))
    with HubServer({DEFAULT_REPO: hub_repo.root}, gated={DEFAULT_REPO: {"hf_accepted"}}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        page = f"{server.url}/datasets/{DEFAULT_REPO}"
        with pytest.raises(UserError) as e:
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        msg = str(e.value)
        assert "is gated and no token was sent" in msg and f"accept its terms at {page} and set HF_TOKEN" in msg
        assert "the Hub says: Access to dataset" in msg and "\n" not in msg
        monkeypatch.setenv("HF_TOKEN", "hf_other")
        with pytest.raises(UserError, match=f"has not been granted access: accept its terms at {page}.*not in the "
                                            f"authorized list"):
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        monkeypatch.setenv("HF_TOKEN", "hf_accepted")
        rf = resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files[0]
        monkeypatch.delenv("HF_TOKEN")  # the files are gated too
        with pytest.raises(UserError, match="is gated and no token was sent"), HubFile.open(rf, FAST) as f:
            f.read(10)


def test_disable_implicit_token_and_offline_are_honoured(hub_repo, monkeypatch, tmp_path):
    (tmp_path / "token").write_text("hf_secret\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    with HubServer({DEFAULT_REPO: hub_repo.root}, token="hf_secret") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST).files  # the token file is used
        monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        with pytest.raises(UserError, match="set HF_TOKEN"):
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        server.reset_counters()
        with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=FAST)
        assert server.requests == []


# ---- one resolution per job; pinned revisions --------------------------------------------------------------------

def test_job_requests_do_not_grow_with_ranks_or_workers(hub_repo, monkeypatch, tmp_path):
    """Rank 0 opens the data; 63 other ranks x 2 workers get it by pickling (what broadcast + DataLoader do) and
    each reads its first unit: no api or resolver request beyond rank 0's."""
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        src = open_data_for_job(cfg(), SOLO, tmp_path / "run")
        one = server.counts()
        blob = pickle.dumps(src)
        for rank in range(1, 64):
            for _worker in range(2):
                monkeypatch.setattr(signed, "TARGETS", {})  # a fresh process
                other = pickle.loads(blob)
                plan = other.plan(5, 128)
                assert other.read_unit(plan.units[(2 * rank) % len(plan.units)])
        many = server.counts()
    assert many["api"] == one["api"] and many["resolver"] == one["resolver"], (one, many)


def test_manifest_makes_a_resume_cost_one_api_request(hub_repo, monkeypatch, tmp_path):
    run = tmp_path / "run"
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        src = open_data_for_job(cfg(), SOLO, run)
        write_manifest(src, cfg(), run)
        assert load_manifest(run)["revision"] == src.revision == server.sha()
        server.reset_counters()
        again = open_data_for_job(cfg(data_revision=src.revision), SOLO, run, resume=True)
        assert [(r.method, r.kind) for r in server.requests] == [("GET", "api")]  # the revision check, nothing else
        assert "/revision/" + src.revision in server.requests[0].path
        assert [f.name for f in again.files] == [f.name for f in src.files]
        assert again.plan(5, 1) == src.plan(5, 1)
        assert pin_revision({"data": {"data": DEFAULT_REPO}}, src)["data"]["data_revision"] == src.revision


def test_data_revision_picks_a_tag_and_a_vanished_pin_is_one_clear_error(hub_repo, monkeypatch, tmp_path):
    new = build_fineweb_repo(tmp_path / "v2", n_files=2, seed=7)
    run = tmp_path / "run"
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        old = server.sha()
        server.tag(DEFAULT_REPO, "v1.0")
        assert server.update(DEFAULT_REPO, new.root) != old
        src = open_data_for_job(cfg(data_revision="v1.0"), SOLO, run)
        assert src.revision == old and [f.name for f in src.files] == hub_repo.files()
        assert open_data_for_job(cfg(), SOLO, tmp_path / "other").revision == server.sha()  # main moved
        write_manifest(src, cfg(), run)
        server.drop_revision(DEFAULT_REPO, old)
        with pytest.raises(UserError) as e:
            open_data_for_job(cfg(data_revision=old), SOLO, run, resume=True)
        assert f"no longer has revision {old}, the one this run is pinned to" in str(e.value)
        with pytest.raises(UserError, match="has no revision 'nope'"):
            open_data_for_job(cfg(data_revision="nope"), SOLO, tmp_path / "third")


def test_rows_read_from_the_pinned_revision_are_the_original_ones(hub_repo, monkeypatch, tmp_path):
    new = build_fineweb_repo(tmp_path / "v2", seed=11)
    run = tmp_path / "run"
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        src = open_data_for_job(cfg(), SOLO, run)
        write_manifest(src, cfg(), run)
        server.update(DEFAULT_REPO, new.root)
        again = open_data_for_job(cfg(data_revision=src.revision), SOLO, run, resume=True)
        plan = again.plan(5, 1)
        ids = [r.doc_id for u in plan.units for r in again.read_unit(u)]
        first = hub_repo.files()[0]
        assert ids[:len(hub_repo.file_ids[first])] == hub_repo.file_ids[first]
        assert pq.ParquetFile(new.root / first).metadata.num_rows  # the new main really differs
        assert new.file_ids[first] != hub_repo.file_ids[first]


def test_certificate_errors_are_not_retried_and_a_ca_bundle_is_honoured(hub_repo, monkeypatch, tmp_path):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    slow = RetryPolicy(max_retries=3, timeout=10, backoff=2, max_backoff=2)
    with HubServer({DEFAULT_REPO: hub_repo.root}, tls=(str(cert), str(key))) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        t0 = time.monotonic()
        with pytest.raises(UserError) as e:
            resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=slow)
        assert time.monotonic() - t0 < 2, "a certificate error was retried (backoff 2 s)"
        msg = str(e.value)
        assert msg.startswith(f"TLS certificate check failed for 127.0.0.1:{server.port}") and "SSL_CERT_FILE" in msg
        assert "\n" not in msg
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            monkeypatch.setenv(var, str(cert))
            assert [f.path for f in resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=slow).files] == \
                hub_repo.files()
            monkeypatch.delenv(var)
