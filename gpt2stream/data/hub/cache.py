"""A Hub dataset pre-downloaded into the local Hugging Face cache, and the start-up rule for using it.

Clusters pre-download to shared storage (``hf download HuggingFaceFW/fineweb-edu --repo-type dataset --include
"sample/10BT/*"`` or ``snapshot_download``), in huggingface_hub's ``HF_HUB_CACHE`` layout. A run reads that snapshot
(same files, same config resolution as on the Hub) when ``HF_HUB_OFFLINE=1``, or when the Hub can't be reached at
start-up. Start-up uses a short retry budget so a machine with no network fails within seconds, not minutes; the
files found on the Hub are then read with the run's own (long) budget.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2stream.config import DataConfig
from gpt2stream.data.hub.card import card_splits, front_matter
from gpt2stream.data.hub.client import endpoint, offline
from gpt2stream.data.hub.resolve import resolve_parquet
from gpt2stream.data.hub.retry import RetryPolicy
from gpt2stream.errors import DataStreamError, UserError

# At start-up: 3 tries, <= 8 s of silence each, backoff 1 s then 2 s: a dead network ends in well under 30 s.
STARTUP_RETRIES = 2
STARTUP_TIMEOUT = 8.0
STARTUP_MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class Snapshot:
    """A dataset snapshot in the local HF cache: its commit sha and the data files chosen from it."""

    repo_id: str
    sha: str
    root: Path
    config: str
    files: tuple[str, ...]  # absolute paths (links into the cache's blobs), sorted by repo path


def startup_policy(policy: RetryPolicy) -> RetryPolicy:
    """The run's RetryPolicy cut down for start-up (never longer than the run's own)."""
    return dataclasses.replace(policy, max_retries=min(policy.max_retries, STARTUP_RETRIES),
                               timeout=min(policy.timeout, STARTUP_TIMEOUT),
                               max_backoff=max(min(policy.max_backoff, STARTUP_MAX_BACKOFF), policy.backoff))


def snapshot_dir(repo_id: str, revision: str = "main", cache_dir: str | None = None) -> Path | None:
    """The cached snapshot folder of a dataset revision, found by huggingface_hub's own helpers, or None.

    A partial snapshot (``--include`` of some folders) counts: it is what clusters pre-download.
    """
    from huggingface_hub import scan_cache_dir, snapshot_download
    from huggingface_hub.errors import CacheNotFound, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                      local_files_only=True))
    except (HFValidationError, ValueError):
        return None
    except (LocalEntryNotFoundError, OSError):  # not cached, or cached in part (IncompleteSnapshotError)
        pass
    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError):
        return None
    for repo in info.repos:
        if repo.repo_id == repo_id and repo.repo_type == "dataset":
            for rev in repo.revisions:
                if revision in rev.refs or rev.commit_hash == revision:
                    return Path(rev.snapshot_path)
    return None


def _snapshot_files(root: Path) -> dict[str, int]:
    """{repo path: size} of the files in a snapshot folder (links into the cache's blobs followed)."""
    out = {}
    for dirpath, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            path = Path(dirpath, n)
            out[path.relative_to(root).as_posix()] = path.stat().st_size
    return dict(sorted(out.items()))


def _lister(files: dict[str, int]):
    """The card rule's lister (card.py) over a snapshot: what is under a prefix, as the Hub's tree listing says."""
    def under(prefix: str) -> list[tuple[str, int]]:
        return [(p, n) for p, n in files.items() if not prefix or p == prefix or p.startswith(prefix + "/")]

    return under


def cached_snapshot(data_cfg: DataConfig, cache_dir: str | None = None, revision: str = "main") -> Snapshot | None:
    """The cached snapshot of ``data_cfg.data`` with its parquet files for (data_config, split), or None if the
    dataset is not cached. UserError if it is cached but the config/split has no files there.

    The dataset card (README.md) decides the files by the same rule as on the Hub (card.card_splits). A snapshot
    without its card (``hf download --include "sample/10BT/*"``) holds exactly the files that were asked for: then all
    its parquet files are used.
    """
    repo_id = str(data_cfg.data)
    root = snapshot_dir(repo_id, revision, cache_dir=cache_dir)
    if root is None:
        return None
    files = _snapshot_files(root)
    config = str(data_cfg.data_config or "")
    chosen = list(files)
    if "README.md" in files:
        card = front_matter((root / "README.md").read_text(encoding="utf-8", errors="replace"))
        rule = card_splits(card, data_cfg.data_config, repo_id, _lister(files))
        config = rule.config
        chosen = rule.files(data_cfg.split, f"the cached dataset {repo_id}")
    chosen = [p for p in chosen if p.endswith(".parquet")]
    if not chosen:
        raise UserError(f"the cached snapshot {root.name} of {repo_id} holds no parquet files for config "
                        f"{config!r} split {data_cfg.split!r} (in {root}); download them, e.g. hf download "
                        f"{repo_id} --repo-type dataset --include '<the config's folder>/*'")
    return Snapshot(repo_id, root.name, root, config, tuple(str(root / p) for p in sorted(chosen)))


def alternatives(repo_id: str) -> str:
    """What a user without a reachable Hub can do instead (one line)."""
    return (f"train on local files with --data PATH, on the shipped demo corpus with --data demo, use a mirror "
            f"with HF_ENDPOINT=URL, or pre-download the dataset on a machine with network (hf download {repo_id} "
            f"--repo-type dataset) into the cache this machine reads (HF_HUB_CACHE / HF_HOME)")


_said: set[str] = set()


def _note(msg: str) -> None:
    """Once per process, on the first rank only (every rank and both data splits open the source)."""
    if msg not in _said and os.environ.get("RANK", "0") == "0":
        _said.add(msg)
        print(f"note: {msg}", file=sys.stderr, flush=True)


def resolve_hub_files(data_cfg: DataConfig, policy: RetryPolicy, revision: str = "main") -> tuple[Any, Snapshot | None]:
    """(the Hub's resolution, a HubDataset, None), or (None, the cached snapshot) when offline or the Hub is
    unreachable at start-up. UserError naming the alternatives when neither is there.
    """
    repo_id = str(data_cfg.data)
    if offline():
        snap = cached_snapshot(data_cfg, revision=revision)
        if snap is None:
            raise UserError(f"HF_HUB_OFFLINE=1 and dataset {repo_id} is not in the local Hugging Face cache; "
                            + alternatives(repo_id))
        _note(f"HF_HUB_OFFLINE=1: reading {repo_id} from the local Hugging Face cache, snapshot {snap.sha} "
              f"(config {snap.config}, {len(snap.files)} parquet files)")
        return None, snap
    try:
        return resolve_parquet(repo_id, data_cfg.data_config, data_cfg.split, policy=startup_policy(policy),
                                   revision=revision), None
    except DataStreamError as e:
        snap = cached_snapshot(data_cfg, revision=revision)
        if snap is None:
            raise UserError(f"cannot reach the Hub at {endpoint()} ({_reason(e)}); " + alternatives(repo_id)) \
                from None
        _note(f"cannot reach the Hub at {endpoint()}: reading {repo_id} from the local Hugging Face cache, "
              f"snapshot {snap.sha} (config {snap.config}, {len(snap.files)} parquet files)")
        return None, snap


def _reason(err: BaseException) -> str:
    """The cause of a start-up failure without the retry advice meant for a running stream."""
    text = str(err).removeprefix("network: ")
    return text.split("; check the network", 1)[0]
