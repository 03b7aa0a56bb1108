"""A mixture of two Hub datasets with different text columns and one local jsonl, against the test Hub server
(tests/hubserver.py), in process: each Hub source is resolved once per job and pinned, a resume reads each pinned
sha (no listing), a source's mistakes name the source, and the offline HF-cache mode works per source. The same
through run_train.py (and --plan) is in tests/test_mixture_hub_e2e.py, on its shared runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data.hub import signed
from gpt2stream.data.job import check_pinned_revision, open_data_for_job, pin_data, pin_revision, write_manifest
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.mixture import resolve
from gpt2stream.errors import UserError
from tests.hubserver import DEFAULT_REPO, HubServer
from tests.test_train_common import make_jsonl

CODE_REPO = "bigcode/tiny-code"
SOLO = SimpleNamespace(rank=0, ddp=False)  # a one-process "job" for open_data_for_job
ROOT = Path(__file__).resolve().parent.parent


def build_code_repo(root: Path, hub_repo, n_files: int = 2, groups: int = 2, rows: int = 30) -> Path:
    """A dataset whose text is in ``content`` (as code datasets have it), documents taken from ``hub_repo``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = hub_repo.texts("sample-10BT")
    for i in range(n_files):
        n = groups * rows
        docs = [f"def f{i}_{k}():\n    return {texts[(i * n + k) % len(texts)][:400]!r}\n" for k in range(n)]
        table = pa.table({"content": docs, "id": [f"code-{i}-{k}" for k in range(n)], "lang": ["python"] * n})
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/train-{i:05d}.parquet", row_group_size=rows)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                    "    path: data/*.parquet\n---\n# tiny code (test fixture)\n")
    return root


@pytest.fixture(scope="module")
def mix_files(hub_repo, tmp_path_factory):
    """(code repo root, mixture file): fineweb (text) 0.5, code (content) 0.3, a local jsonl 0.2."""
    d = tmp_path_factory.mktemp("mix")
    code = build_code_repo(d / "code", hub_repo)
    # small enough that its pieces are the 4 KiB minimum for any stream count: a resume re-plans the same ones
    # (a mid-size jsonl meets the loader planning with 16 readers, then with the saved streams: reported)
    docs = make_jsonl(d / "mine.jsonl", n_docs=200)
    mix = d / "mix.yaml"
    mix.write_text(f"sources:\n"
                   f"  - data: {DEFAULT_REPO}\n    name: web\n    config: sample-10BT\n    weight: 0.5\n"
                   f"  - data: {CODE_REPO}\n    name: code\n    config: default\n    text_column: content\n"
                   f"    weight: 0.3\n"
                   f"  - data: {docs}\n    name: mine\n    weight: 0.2\n")
    return code, mix


@pytest.fixture
def servers(hub_repo, mix_files, monkeypatch):
    monkeypatch.setattr(signed, "TARGETS", {})
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with HubServer({DEFAULT_REPO: hub_repo.root, CODE_REPO: mix_files[0]}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def mix_cfg(mix: Path, **kw) -> DataConfig:
    return resolve(DataConfig(data=str(mix), seq_len=8, val_docs=5, num_workers=0, max_retries=2,
                              request_timeout=10, **kw))


def per_repo(server: HubServer, what: str) -> dict[str, int]:
    out = {DEFAULT_REPO: 0, CODE_REPO: 0}
    for r in server.requests:
        for repo in out:
            out[repo] += repo in r.path and what in r.path
    return out


def test_each_hub_source_is_resolved_once_and_a_resume_reads_each_pinned_sha(servers, mix_files, tmp_path):
    run, data = tmp_path / "run", mix_cfg(mix_files[1])
    src = open_data_for_job(data, SOLO, run)
    assert isinstance(src, MixtureSource) and src.names == ["web", "code", "mine"]
    assert per_repo(servers, "/tree/") == {DEFAULT_REPO: 1, CODE_REPO: 1}  # one listing per Hub source
    web, code, mine = src.sources
    assert (web.revision, code.revision, mine.revision) == (servers.sha(), servers.sha(CODE_REPO), "")
    assert code.text_column == "content" and web.text_column == "text"
    footers = sum(1 for r in servers.requests if r.kind == "resolver" and r.path.endswith(".parquet"))
    assert footers == len(web.files) + len(code.files)  # one footer per Hub file, for the whole job
    write_manifest(src, data, run)
    assert json.loads((run / "data-manifest-web.json").read_text())["revision"] == web.revision
    assert json.loads((run / "data-manifest-code.json").read_text())["revision"] == code.revision
    assert [f["path"] for f in json.loads((run / "data-files-mine.json").read_text())["files"]] == [mine.files[0].path]
    assert not (run / "data-manifest.json").exists() and not (run / "data-files.json").exists()
    pinned = pin_data(data, src)  # config.json and every checkpoint name the shas
    assert [d["revision"] for d in pinned.mixture] == [web.revision, code.revision, ""]
    assert pin_revision({"data": {"mixture": data.mixture}}, src)["data"]["mixture"] == pinned.mixture
    servers.reset_counters()
    again = open_data_for_job(pinned, SOLO, run, resume=True)
    assert sorted((r.method, r.kind, r.path.split("/revision/")[-1]) for r in servers.requests) == sorted(
        [("GET", "api", web.revision), ("GET", "api", code.revision)])  # one sha check per Hub source, nothing else
    assert [s.plan(5, 1) for s in again.sources] == [s.plan(5, 1) for s in src.sources]
    check_pinned_revision({"data": {"mixture": pinned.mixture}}, again, "ckpt")
    moved = {"data": {"mixture": [{**pinned.mixture[0], "revision": "f" * 40}, *pinned.mixture[1:]]}}
    with pytest.raises(UserError, match="its source 'web' .* was trained on dataset revision f{40}"):
        check_pinned_revision(moved, again, "ckpt")


def test_a_hub_source_without_its_text_column_or_unknown_names_the_source(servers, mix_files, tmp_path):
    text = mix_files[1].read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("    text_column: content\n", ""))
    with pytest.raises(UserError) as e:
        open_data_for_job(mix_cfg(bad), SOLO, tmp_path / "a")
    msg = str(e.value)
    assert msg.startswith(f"mixture source 'code' ({CODE_REPO}): ") and "no column 'text'" in msg, msg
    assert "['content', 'id', 'lang']" in msg and "set text_column: for this source in the mixture" in msg, msg
    bad.write_text(text.replace(CODE_REPO, "nobody/nothing"))
    with pytest.raises(UserError, match=r"^mixture source 'code' \(nobody/nothing\): .*nobody/nothing"):
        open_data_for_job(mix_cfg(bad), SOLO, tmp_path / "b")


OPEN_OFFLINE = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from gpt2stream.config import DataConfig
from gpt2stream.data.job import open_data_for_job, write_manifest
from gpt2stream.data.mixture import resolve
from gpt2stream.errors import UserError
cfg = resolve(DataConfig(data=sys.argv[1], val_docs=5, max_retries=1, request_timeout=5))
try:
    src = open_data_for_job(cfg, SimpleNamespace(rank=0, ddp=False), sys.argv[2])
except UserError as e:
    print("error:", e)
    sys.exit(2)
Path(sys.argv[2]).mkdir()
write_manifest(src, cfg, sys.argv[2])
print(json.dumps([[len(s.files), s.revision] for s in src.sources]))
"""


def populate_cache(server: HubServer, cache: Path, repo_id: str) -> None:
    code = (f"from huggingface_hub import snapshot_download; snapshot_download({repo_id!r}, repo_type='dataset', "
            f"cache_dir={str(cache)!r})")
    p = subprocess.run([sys.executable, "-c", code], env=_env(HF_ENDPOINT=server.url), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]


def _env(**extra: str) -> dict[str, str]:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    e.update(PYTHONPATH=str(ROOT), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return e


@pytest.mark.slow
def test_offline_mode_reads_each_hub_source_from_the_cache(servers, mix_files, tmp_path):
    cache = tmp_path / "hub-cache"
    populate_cache(servers, cache, DEFAULT_REPO)
    offline = _env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"),
                   HF_ENDPOINT="http://127.0.0.1:9")

    def open_offline(run: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", OPEN_OFFLINE, str(mix_files[1]), str(run)], env=offline,
                              capture_output=True, text=True, timeout=120)

    p = open_offline(tmp_path / "one-cached")  # code is not cached: one line naming that source
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.startswith(f"error: mixture source 'code' ({CODE_REPO}): HF_HUB_OFFLINE=1 and dataset "
                               f"{CODE_REPO} is not in the local Hugging Face cache"), p.stdout
    populate_cache(servers, cache, CODE_REPO)
    run = tmp_path / "both-cached"
    p = open_offline(run)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert json.loads(p.stdout.splitlines()[-1]) == [[4, ""], [2, ""], [1, ""]]  # cache files: pinned like local ones
    for repo in (DEFAULT_REPO, CODE_REPO):
        assert f"HF_HUB_OFFLINE=1: reading {repo} from the local Hugging Face cache" in p.stderr
    assert sorted(f.name for f in run.glob("data-*.json")) == ["data-files-code.json", "data-files-mine.json",
                                                                 "data-files-web.json"]
