"""Network faults through the proxy, on metadata and on data requests: each recovered with identical rows, and a
persistent fault surfacing as one DataStreamError within bounded time.

The client (resolve + read every row group through HubFile) runs in a subprocess with an outer timeout, and is
judged by the JSON it printed (../shared/TORCH-NOTES.md: processes can abort at exit after network errors).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hubserver import DATA, DEFAULT_REPO, Fault, FaultProxy, HubServer, build_fineweb_repo

ROOT = Path(__file__).resolve().parent.parent
OUTER_TIMEOUT = 60
ABORT_AT_EXIT = -6  # SIGABRT during interpreter teardown: tolerated if the output is complete

CLIENT = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
import pyarrow.parquet as pq
from gpt2stream.errors import UserError
from gpt2stream.data.hub.file import HubFile
from gpt2stream.data.hub.resolve import resolve_dataset
from gpt2stream.data.hub.retry import RetryPolicy

a = json.loads(sys.argv[1])
policy = RetryPolicy(max_retries=a["max_retries"], timeout=a["timeout"], backoff=0.02, max_backoff=0.1)
t0 = time.monotonic()
try:
    ds = resolve_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", policy=policy)
    ids, fetched = [], 0
    for rf in ds.files:
        with HubFile.open(rf, policy, readahead=a["readahead"]) as f:
            pf = pq.ParquetFile(f)
            for i in range(pf.metadata.num_row_groups):
                ids += pf.read_row_group(i, columns=["text", "id"])["id"].to_pylist()
            fetched += f.bytes_fetched
    print(json.dumps({"ids": ids, "fetched": fetched, "seconds": time.monotonic() - t0}), flush=True)
except UserError as e:
    print(json.dumps({"error": str(e), "type": type(e).__name__, "seconds": time.monotonic() - t0}), flush=True)
    sys.exit(2)
"""


@pytest.fixture(scope="module")
def fault_repo(tmp_path_factory):
    # files of ~130 KB so that a file takes several ranged requests (footer + row groups) at 16 KiB read-ahead
    return build_fineweb_repo(tmp_path_factory.mktemp("fault_repo"), n_files=3, row_groups=3, rows_per_group=120,
                              dump_files=1, seed=7)


def run_client(proxy: FaultProxy, tmp_path: Path, *, max_retries: int = 4, timeout: float = 5.0,
               readahead: int = 16384) -> tuple[dict, str, int]:
    env = dict(os.environ, HF_ENDPOINT=proxy.url, HF_HOME=str(tmp_path / "hf_home"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = json.dumps({"max_retries": max_retries, "timeout": timeout, "readahead": readahead})
    proc = subprocess.run([sys.executable, "-c", CLIENT, args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=OUTER_TIMEOUT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"client wrote no result (rc={proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1]), proc.stderr, proc.returncode


@pytest.fixture(scope="module")
def baseline(fault_repo, tmp_path_factory) -> dict:
    """The fault-free run: what every faulty run must reproduce."""
    with HubServer({DEFAULT_REPO: fault_repo.root}) as server, FaultProxy(server.url) as proxy:
        out, stderr, _ = run_client(proxy, tmp_path_factory.mktemp("baseline"))
    assert out.get("ids") == fault_repo.ids("sample-10BT") and "retry" not in stderr
    return out


def make(kind: str | int, match: str, **kw) -> Fault:
    if kind == "reset":
        return Fault.reset(match, **kw)
    if kind == "stall":
        return Fault.stall(match, stall_seconds=20, **kw)
    kw.pop("after_bytes", None)  # an HTTP error replaces the whole answer
    return Fault.http(int(kind), match, **kw)


KINDS = ["reset", "stall", 500, 502, 503, 504, 429]


def faults_for(kind: str | int, target: str) -> list[Fault]:
    retry_after = {"retry_after": "1"} if kind == 429 else {}
    if target == "metadata":  # every metadata route the client uses: dataset info, README, tree listing
        return [make(kind, r"/revision/", **retry_after), make(kind, r"/README\.md"), make(kind, r"/tree/")]
    # data: the first request of the first file (before any byte) and one in the middle of a body
    return [make(kind, DATA, nth=1, **retry_after), make(kind, DATA, nth=5, after_bytes=3000)]


@pytest.mark.parametrize("target", ["metadata", "data"])
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_single_faults_are_survived_with_identical_rows(fault_repo, baseline, tmp_path, kind, target):
    with HubServer({DEFAULT_REPO: fault_repo.root}) as server, FaultProxy(server.url) as proxy:
        faults = [proxy.add(f) for f in faults_for(kind, target)]
        timeout = 1.0 if kind == "stall" else 5.0
        out, stderr, rc = run_client(proxy, tmp_path, timeout=timeout)
        assert "ids" in out, f"client failed: {out}\n{stderr[-2000:]}"
        assert rc in (0, ABORT_AT_EXIT), stderr[-2000:]
        assert [f.fired for f in faults] == [1] * len(faults), f"not every fault was injected: {proxy.events}"
        assert out["ids"] == baseline["ids"] == fault_repo.ids("sample-10BT"), "documents lost or duplicated"
        assert stderr.count("retry ") >= len(faults), stderr[-2000:]  # each fault logged as a retry
        if kind == 429:
            assert out["seconds"] >= 1.0, "Retry-After: 1 was not honoured"
        if kind == "stall":
            assert out["seconds"] < timeout * len(faults) + 10
        if target == "data" and kind in ("reset", "stall"):
            # a broken body resumes from the last byte received: no byte is fetched twice
            assert out["fetched"] == baseline["fetched"]


@pytest.mark.parametrize("case", ["data-500", "data-reset-midbody", "metadata-503",
                                  pytest.param("metadata-stall", marks=pytest.mark.slow)])
def test_persistent_fault_raises_one_clear_error_in_bounded_time(fault_repo, tmp_path, case):
    fault = {
        "data-500": Fault.http(500, DATA, times=None),
        "data-reset-midbody": Fault.reset(DATA, nth=2, times=None, after_bytes=1000),
        "metadata-stall": Fault.stall(r"/tree/", times=None, stall_seconds=30),
        "metadata-503": Fault.http(503, r"/revision/", times=None),
    }[case]
    with HubServer({DEFAULT_REPO: fault_repo.root}) as server, FaultProxy(server.url) as proxy:
        proxy.add(fault)
        t0 = time.monotonic()
        # a short timeout only where a stall must be detected (a loaded CI machine can be slow to answer)
        out, stderr, rc = run_client(proxy, tmp_path, max_retries=3, timeout=1.0 if "stall" in case else 10.0)
        elapsed = time.monotonic() - t0
    assert out.get("type") == "DataStreamError", out
    assert rc in (2, ABORT_AT_EXIT)
    msg = out["error"]
    assert "failed 4 times in a row" in msg and "--max-retries" in msg and "--resume latest" in msg, msg
    assert "\n" not in msg
    assert fault.fired == 4  # 1 try + max_retries retries, no more
    assert elapsed < 20 and out["seconds"] < 10
    assert stderr.count("retry ") >= 3


@pytest.mark.parametrize("times,ok", [(3, True), (4, False)])
def test_max_retries_counts_consecutive_failures(fault_repo, tmp_path, times, ok):
    with HubServer({DEFAULT_REPO: fault_repo.root}) as server, FaultProxy(server.url) as proxy:
        proxy.add(Fault.http(503, DATA, nth=2, times=times))
        proxy.add(Fault.http(502, DATA, nth=9, times=3))  # a later burst: the count starts again from zero
        out, _, _ = run_client(proxy, tmp_path, max_retries=3)
    if ok:
        assert out.get("ids") == fault_repo.ids("sample-10BT")
    else:
        assert out.get("type") == "DataStreamError" and "HTTP 503" in out["error"]
