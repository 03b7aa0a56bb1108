"""Dataset-card resolution equals `datasets`': for each card shape, the files gpt2stream.data.hub resolves for a
(config, split) are the ones ``datasets.load_dataset_builder(...).config.data_files`` names, against the test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2stream.data.hub.card import resolve_data_files
from gpt2stream.data.hub.resolve import resolve_dataset
from gpt2stream.data.hub.retry import RetryPolicy
from gpt2stream.errors import UserError
from tests.hubserver import HubServer

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(max_retries=1, timeout=10, backoff=0.01, max_backoff=0.05)

# repo -> (YAML configs block or "", files); every file is a one-row parquet file
CARDS = {
    "t/data-dir": ("- config_name: default\n  data_dir: sub\n",
                   ["sub/train.parquet", "sub/test.parquet", "other/train.parquet"]),
    "t/split-map": ("- config_name: c\n  data_files:\n    train: a/*.parquet\n    validation:\n    - b/v1.parquet\n"
                    "    - b/v2.parquet\n", ["a/1.parquet", "a/2.parquet", "b/v1.parquet", "b/v2.parquet",
                                            "b/v3.parquet"]),
    "t/split-list": ("- config_name: c\n  data_files:\n  - split: train\n    path: a/*.parquet\n  - split: test\n"
                     "    path:\n    - b/*.parquet\n", ["a/1.parquet", "b/1.parquet", "b/sub/2.parquet"]),
    "t/globstar": ("- config_name: default\n  data_files: '**/*.parquet'\n",
                   ["top.parquet", "x/y/z.parquet", "x/w.parquet"]),
    "t/underscore": ("- config_name: default\n  data_files:\n  - split: train\n    path: data/**\n",
                     ["data/ok/c.parquet", "data/_private/a.parquet", "data/__special__/b.parquet",
                      "data/.hidden/d.parquet", "data/e.parquet"]),
    "t/noconfig-dirs": ("", ["train/a.parquet", "train/b.parquet", "test/c.parquet", "misc/d.parquet"]),
    "t/noconfig-names": ("", ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                              "data/test-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]),
}
CASES = [("t/data-dir", "default", "train"), ("t/data-dir", "default", "test"), ("t/split-map", "c", "train"),
         ("t/split-map", "c", "validation"), ("t/split-list", "c", "train"), ("t/split-list", "c", "test"),
         ("t/globstar", "default", "train"), ("t/underscore", "default", "train"),
         ("t/noconfig-dirs", "default", "train"), ("t/noconfig-dirs", "default", "test"),
         ("t/noconfig-names", "default", "train"), ("t/noconfig-names", "default", "test"),
         ("t/noconfig-names", "default", "validation"), ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train"),
         ("HuggingFaceFW/fineweb-edu", "CC-MAIN-2019-35", "train")]

CLIENT = r"""
import json, sys
import datasets
out = {}
for repo, name, split in json.loads(sys.argv[1]):
    try:
        b = datasets.load_dataset_builder(repo, name=None if name == "default" else name)
    except ValueError as e:
        out[f"{repo}|{name}|{split}"] = "invalid"
        continue
    out[f"{repo}|{name}|{split}"] = [str(f).split("@", 1)[1].split("/", 1)[1] for f in b.config.data_files[split]]
print(json.dumps(out))
"""


def resolved(repo: str, config: str, split: str) -> list[str] | str:
    try:
        return [f.path for f in resolve_dataset(repo, config, split, policy=FAST).files]
    except UserError as e:
        assert "configs` are invalid" in str(e) and "{split, path}" in str(e), e
        return "invalid"


def build(root: Path, configs: str, files: list[str]) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": [f"doc in {f}"], "id": [f]}), root / f)
    front = f"---\nconfigs:\n{configs}---\n" if configs else "---\nlicense: mit\n---\n"
    (root / "README.md").write_text(front + "\n# test card\n")
    return root


@pytest.mark.slow
def test_card_resolution_equals_datasets(hub_repo, tmp_path, monkeypatch):
    repos = {"HuggingFaceFW/fineweb-edu": hub_repo.root}
    repos.update({rid: build(tmp_path / rid.replace("/", "_"), *spec) for rid, spec in CARDS.items()})
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        ours = {f"{r}|{c}|{s}": resolved(r, c, s) for r, c, s in CASES}
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf_home"),
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="10", HF_HUB_DOWNLOAD_TIMEOUT="10")
        p = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(CASES)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, p.stderr[-3000:]
    theirs = json.loads(lines[-1])
    for key in ours:
        assert sorted(ours[key]) == sorted(theirs[key]), key
    assert ours["t/split-map|c|train"] == "invalid"  # datasets refuses a {split: paths} mapping; so do we
    # the shapes really differ: hidden/special dirs skipped, "_x" kept, data_dir and split words honoured
    assert sorted(ours["t/underscore|default|train"]) == ["data/_private/a.parquet", "data/e.parquet",
                                                         "data/ok/c.parquet"]
    assert ours["t/data-dir|default|test"] == ["sub/test.parquet"]
    assert ours["t/split-list|c|test"] == ["b/1.parquet"]


def test_resolve_data_files_from_a_listing():
    files = {"data/train-00000-of-00001.parquet": 5, "data/test-00000-of-00001.parquet": 3, "README.md": 9}
    calls = []

    def lister(prefix):
        calls.append(prefix)
        return [(p, n) for p, n in files.items() if not prefix or p.startswith(prefix + "/")]

    assert resolve_data_files(None, lister) == {"train": ["data/train-00000-of-00001.parquet"],
                                                "test": ["data/test-00000-of-00001.parquet"]}
    assert calls == [""]  # one listing served every one of datasets' split patterns
    assert resolve_data_files({"data_files": [{"split": "x", "path": "data/*"}]}, lister) == {
        "x": ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]}
