"""No network: a dataset pre-downloaded into the HF cache trains offline; a dead network fails in seconds with the
alternatives; a stop signal during set-up exits at once. Everything through the real entry point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hubserver import DEFAULT_REPO, METADATA, Fault, FaultProxy, HubServer

ROOT = Path(__file__).resolve().parent.parent
RUN_TRAIN = str(ROOT / "run_train.py")
SMALL = ["--preset", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
         "--seq-len", "32", "--batch-size", "2", "--total-batch-size", "64", "--warmup-steps", "1",
         "--eval-every", "0", "--eval-tokens", "64", "--val-docs", "4", "--shuffle-buffer", "8", "--sample-every", "0",
         "--num-workers", "0", "--log-every", "1"]
ALTERNATIVES = ("--data PATH", "--data demo", "HF_ENDPOINT", "pre-download")


def dead_endpoint() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    e.update(PYTHONPATH=str(ROOT), MPLBACKEND="Agg", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"),
             HF_HUB_DISABLE_TELEMETRY="1", TIKTOKEN_CACHE_DIR=str(tmp_path / "no-tiktoken-cache"))
    e.update(extra)
    return e


def train(tmp_path: Path, args: list[str], timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN_TRAIN, *SMALL, *args], cwd=tmp_path, env=env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=timeout)


def populate_cache(server: HubServer, cache: Path, tmp_path: Path, *patterns: str, repo_id: str = DEFAULT_REPO) -> str:
    """Really run huggingface_hub's snapshot_download against the test server; returns the snapshot path."""
    code = ("import sys; from huggingface_hub import snapshot_download; "
            f"print(snapshot_download({repo_id!r}, repo_type='dataset', cache_dir={str(cache)!r}, "
            f"allow_patterns={list(patterns) or None!r}))")
    p = subprocess.run([sys.executable, "-c", code], env=env(tmp_path, HF_ENDPOINT=server.url), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


def assert_alternatives_line(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    for w in ALTERNATIVES + words:
        assert w in errors[0], errors[0]
    assert "--resume" not in p.stderr + p.stdout  # nothing was saved, so nothing to resume


@pytest.mark.slow
def test_cached_snapshot_trains_offline_and_when_the_hub_is_down(hub_repo, tmp_path):
    cache = tmp_path / "hub-cache"
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        snapshot = Path(populate_cache(server, cache, tmp_path))
        sha = server.sha()
    assert snapshot.name == sha
    # the same files as the Hub resolution chooses for the default config
    from gpt2stream.config import DataConfig
    from gpt2stream.data.hub.cache import cached_snapshot

    snap = cached_snapshot(DataConfig(), cache_dir=str(cache))
    assert [str(Path(f).relative_to(snapshot)) for f in snap.files] == hub_repo.files("sample-10BT")
    assert (snap.sha, snap.config) == (sha, "sample-10BT")

    run = tmp_path / "offline"
    p = train(tmp_path, ["--max-steps", "2", "--out-dir", str(run)], HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache),
              HF_ENDPOINT=dead_endpoint())
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"snapshot {sha}" in p.stderr and "HF_HUB_OFFLINE=1" in p.stderr
    assert len([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]) >= 2
    # the Hub is down at start-up (no HF_HUB_OFFLINE): the cache is used, with a note saying so
    run2 = tmp_path / "hub-down"
    t0 = time.monotonic()
    p = train(tmp_path, ["--max-steps", "1", "--out-dir", str(run2)], HF_HUB_CACHE=str(cache),
              HF_ENDPOINT=dead_endpoint())
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cannot reach the Hub" in p.stderr and f"snapshot {sha}" in p.stderr
    assert time.monotonic() - t0 < 240


def test_snapshot_without_its_card_uses_the_files_downloaded(hub_repo, tmp_path):
    """`hf download ... --include "sample/10BT/*"` leaves no README.md: the files asked for are the data."""
    from gpt2stream.config import DataConfig
    from gpt2stream.data.hub.cache import cached_snapshot

    cache = tmp_path / "hub-cache"
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        populate_cache(server, cache, tmp_path, "sample/10BT/*")
    snap = cached_snapshot(DataConfig(), cache_dir=str(cache))
    assert [Path(f).name for f in snap.files] == [Path(f).name for f in hub_repo.files("sample-10BT")]
    assert cached_snapshot(DataConfig(data="someone/else"), cache_dir=str(cache)) is None


def repo_whose_card_has_no_configs(hub_repo, root: Path) -> Path:
    """A dataset repo laid out by split name (data/train-*, data/test-*) with a card that has YAML but no `configs:`:
    `datasets` then takes its split-name patterns."""
    files = hub_repo.files("sample-10BT")
    (root / "data").mkdir(parents=True)
    for i, name in enumerate(["train-00000-of-00002", "train-00001-of-00002", "test-00000-of-00001"]):
        (root / "data" / f"{name}.parquet").write_bytes((hub_repo.root / files[i % len(files)]).read_bytes())
    (root / "README.md").write_text("---\nlicense: odc-by\nlanguage:\n- en\n---\n# A card with no configs\n")
    return root


@pytest.mark.slow
def test_cached_dataset_whose_card_has_no_configs_trains_offline(hub_repo, tmp_path, monkeypatch):
    """The one card rule (datasets') chooses the same {split: files} online and from the cache, and run_train.py
    trains from the cache with HF_HUB_OFFLINE=1 (this used to end in an AttributeError traceback)."""
    from gpt2stream.config import DataConfig
    from gpt2stream.data.hub.cache import cached_snapshot
    from gpt2stream.data.hub.resolve import resolve_dataset
    from gpt2stream.data.hub.retry import RetryPolicy

    repo, cache, fast = "me/plain", tmp_path / "hub-cache", RetryPolicy(max_retries=1, timeout=10, backoff=0.01)
    with HubServer({repo: repo_whose_card_has_no_configs(hub_repo, tmp_path / "plain")}) as server:
        snapshot = Path(populate_cache(server, cache, tmp_path, repo_id=repo))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        online = {s: [f.path for f in resolve_dataset(repo, None, s, policy=fast).files] for s in ("train", "test")}
    cached = {s: [Path(f).relative_to(snapshot).as_posix() for f in cached_snapshot(
        DataConfig(data=repo, data_config="default", split=s), cache_dir=str(cache)).files] for s in ("train", "test")}
    assert cached == online == {"train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
                                "test": ["data/test-00000-of-00001.parquet"]}
    run = tmp_path / "run"
    p = train(tmp_path, ["--data", repo, "--data-config", "default", "--max-steps", "2", "--out-dir", str(run)],
              HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_ENDPOINT=dead_endpoint())
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert f"snapshot {snapshot.name}" in p.stderr and "config default, 2 parquet files" in p.stderr, p.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 2


@pytest.mark.parametrize("case", ["refused", "dns", "offline-nothing-cached"])
def test_no_network_at_start_up_fails_within_30s_naming_the_alternatives(tmp_path, case):
    extra = {"refused": {"HF_ENDPOINT": dead_endpoint()},
             "dns": {"HF_ENDPOINT": "http://no-such-host.invalid"},
             "offline-nothing-cached": {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": dead_endpoint()}}[case]
    t0 = time.monotonic()
    p = train(tmp_path, ["--out-dir", str(tmp_path / "run")], timeout=120, **extra)
    elapsed = time.monotonic() - t0
    assert_alternatives_line(p, "HuggingFaceFW/fineweb-edu")
    assert elapsed < 30, elapsed
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_while_resolving_a_stalled_hub_exits_at_once(hub_repo, tmp_path, sig, code):
    """The dataset listing stalls (the server accepted but never answers): a stop signal ends the run within 5 s
    with the conventional status, one line, no traceback, nothing about resuming."""
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server, FaultProxy(server.url) as proxy:
        stall = proxy.add(Fault.stall(METADATA, times=None, stall_seconds=60))
        p = subprocess.Popen([sys.executable, RUN_TRAIN, *SMALL, "--out-dir", str(tmp_path / "run")], cwd=tmp_path,
                             env=env(tmp_path, HF_ENDPOINT=proxy.url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not stall.fired:
                assert p.poll() is None and time.monotonic() < deadline, p.communicate()
                time.sleep(0.1)
            time.sleep(0.5)  # inside the stalled request
            t0 = time.monotonic()
            p.send_signal(sig)
            out, err = p.communicate(timeout=30)
            elapsed = time.monotonic() - t0
        finally:
            p.kill()
    assert p.returncode == code, (p.returncode, err[-3000:])
    assert elapsed < 5, elapsed
    assert "Traceback" not in err and "--resume" not in out + err and "saving a checkpoint" not in err, err
    assert f"stopped by {sig.name} during set-up" in err, err


def test_without_resume_advice():
    from gpt2stream.errors import without_resume_advice

    msg = "network: x failed 3 times in a row; check HF_ENDPOINT, then resume the run with --resume latest"
    assert without_resume_advice(msg) == "network: x failed 3 times in a row; check HF_ENDPOINT"
    assert without_resume_advice("bad --lr") == "bad --lr"


def test_data_failure_during_set_up_says_nothing_about_resuming(hub_repo, tmp_path):
    """The Hub lists the files but every data read fails: set-up ends with one line and no --resume advice, since
    no checkpoint exists."""
    from tests.hubserver import DATA

    with HubServer({DEFAULT_REPO: hub_repo.root}) as server, FaultProxy(server.url) as proxy:
        proxy.add(Fault.http(500, DATA, times=None))
        p = train(tmp_path, ["--out-dir", str(tmp_path / "run"), "--max-retries", "1", "--request-timeout", "5"],
                  timeout=120, HF_ENDPOINT=proxy.url)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "500" in errors[0] and "--resume" not in p.stdout + p.stderr, errors[0]
