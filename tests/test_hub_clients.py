"""The test server is Hub-compatible for the ordinary clients: `datasets` streaming and `huggingface_hub`.

HF_ENDPOINT is read by huggingface_hub at import, so each client runs in a fresh subprocess (with an outer
timeout) that has it set from the start; the result is judged by the JSON the subprocess printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hubserver import DEFAULT_REPO, FaultProxy, HubServer

ROOT = Path(__file__).resolve().parent.parent

DATASETS_CLIENT = r"""
import json, sys
import datasets
datasets.config.STREAMING_READ_RETRY_INTERVAL = 0.05  # HUB-NOTES: defaults take minutes to give up
datasets.config.STREAMING_READ_MAX_RETRIES = 3
ds = datasets.load_dataset("HuggingFaceFW/fineweb-edu", name=sys.argv[1], split="train", streaming=True)
rows = list(ds)
print(json.dumps({"ids": [r["id"] for r in rows], "columns": sorted(rows[0])}))
"""

HFHUB_CLIENT = r"""
import json
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
repo = "HuggingFaceFW/fineweb-edu"
api = HfApi()
info = api.dataset_info(repo)
files = sorted(api.list_repo_files(repo, repo_type="dataset"))
tree = sorted(e.path for e in api.list_repo_tree(repo, path_in_repo="sample/10BT", repo_type="dataset"))
paths = sorted(e.path for e in api.get_paths_info(repo, ["README.md", "sample"], repo_type="dataset"))
readme = open(hf_hub_download(repo, "README.md", repo_type="dataset")).read()
fs = HfFileSystem()
with fs.open(f"datasets/{repo}/sample/10BT/001_00000.parquet", "rb", block_size=4096) as f:
    f.seek(100)
    chunk = f.read(50).hex()
globbed = sorted(fs.glob(f"datasets/{repo}/data/*/*"))
errors = []
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
for call, exc in [(lambda: api.dataset_info("nobody/nothing"), RepositoryNotFoundError),
                  (lambda: api.dataset_info(repo, revision="v9"), RevisionNotFoundError),
                  (lambda: hf_hub_download(repo, "missing.txt", repo_type="dataset"), EntryNotFoundError)]:
    try:
        call()
        errors.append("no error")
    except exc as e:
        errors.append(type(e).__name__)
print(json.dumps({"sha": info.sha, "files": files, "tree": tree, "paths": paths, "readme": readme,
                  "chunk": chunk, "glob": globbed, "errors": errors}))
"""


def run(code: str, endpoint: str, tmp_path: Path, *args: str) -> dict:
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DOWNLOAD_TIMEOUT="10", HF_HUB_ETAG_TIMEOUT="10",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"client wrote no result (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
def test_datasets_streaming_reads_the_fixture(hub_repo, tmp_path):
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        out = run(DATASETS_CLIENT, server.url, tmp_path, "sample-10BT")
        assert out["ids"] == hub_repo.ids("sample-10BT")
        assert out["columns"] == sorted(["text", "id", "dump", "url", "file_path", "language", "language_score",
                                         "token_count", "score", "int_score"])
        parquet_gets = [r for r in server.requests if r.path.endswith(".parquet") and r.method == "GET"]
        assert parquet_gets and all(r.status in (200, 206) for r in parquet_gets)


@pytest.mark.slow
def test_datasets_streaming_through_the_proxy_default_config(hub_repo, tmp_path):
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server, FaultProxy(server.url) as proxy:
        out = run(DATASETS_CLIENT, proxy.url, tmp_path, "default")
        assert out["ids"] == hub_repo.ids("default")
        assert any("/tree/" in target for _, target, _ in proxy.events)


def test_huggingface_hub_api_and_filesystem(hub_repo, tmp_path):
    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        out = run(HFHUB_CLIENT, server.url, tmp_path)
    assert out["sha"] == server.sha()
    assert set(hub_repo.file_ids) | {"README.md"} <= set(out["files"])
    assert out["tree"] == hub_repo.files("sample-10BT")
    assert out["paths"] == ["README.md", "sample"]
    assert out["readme"] == (hub_repo.root / "README.md").read_text()
    data = (hub_repo.root / "sample/10BT/001_00000.parquet").read_bytes()
    assert bytes.fromhex(out["chunk"]) == data[100:150]
    assert [g.split(DEFAULT_REPO + "/")[1] for g in out["glob"]] == hub_repo.files("default")
    assert out["errors"] == ["RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"]
