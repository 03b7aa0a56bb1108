"""Resolve a Hub dataset: (dataset id, config, split) at a revision -> the files to stream, pinned to a commit sha.

The card (README.md YAML) chooses the files by ``datasets``' rules (card.py) over the tree listing fetched here with
our own retried, timed-out requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import quote

import requests

from gpt2stream.data.hub.card import card_splits, front_matter, names_list
from gpt2stream.data.hub.client import (
    endpoint,
    error_code,
    gated_error,
    get_json,
    hub_token,
    offline,
    request,
)
from gpt2stream.data.hub.file import RemoteFile
from gpt2stream.data.hub.retry import RetryPolicy, TransientError, call_with_retries
from gpt2stream.errors import DataStreamError, UserError


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    config: str
    split: str
    sha: str
    files: tuple[RemoteFile, ...]



def _check_repo_response(resp: requests.Response, repo_id: str, revision: str) -> None:
    code = error_code(resp)
    gated = gated_error(resp, repo_id)
    if gated is not None:
        raise gated
    if resp.status_code == 404 and code == "RevisionNotFound":
        raise UserError(f"dataset {repo_id} has no revision {revision!r} on {endpoint()}; give --data-revision a "
                        f"branch, tag or commit sha of it (default: main)")
    if resp.status_code in (401, 403, 404):
        hint = ("HF_TOKEN is set: check that it can read this dataset" if hub_token()
                else "if it is private or gated, set HF_TOKEN")
        raise UserError(f"dataset {repo_id!r} not found on {endpoint()} (HTTP {resp.status_code}); check the id, "
                        f"or {hint}; for a local file give an existing path")
    raise DataStreamError(f"network: {endpoint()} answered HTTP {resp.status_code} for dataset {repo_id}")


def _list_tree(session: requests.Session, base: str, sha: str, prefix: str, policy: RetryPolicy,
               repo_id: str) -> list[tuple[str, int]]:
    """All files under ``prefix`` (recursive), following the Hub's Link-header pagination."""
    path = "/" + quote(prefix, safe="") if prefix else ""
    url: str | None = f"{base}/tree/{sha}{path}?recursive=true&expand=false"
    files: list[tuple[str, int]] = []
    while url:
        obj, resp = get_json(session, url, policy, f"listing files of {repo_id}/{prefix}")
        if obj is None:
            if resp.status_code == 404:
                return files  # a glob whose directory does not exist matches nothing
            _check_repo_response(resp, repo_id, sha)
        for e in obj:
            if e.get("type") == "file":
                files.append((e["path"], int(e.get("size") or (e.get("lfs") or {}).get("size") or 0)))
        url = resp.links.get("next", {}).get("url")
    return files


class RevisionGone(UserError):
    """The revision (branch, tag or sha) does not exist on the Hub (any more)."""


def revision_sha(repo_id: str, revision: str, policy: RetryPolicy | None = None) -> str:
    """The commit sha ``revision`` names now (one API request); RevisionGone if it does not exist."""
    policy = policy or RetryPolicy()
    if offline():
        raise UserError(f"HF_HUB_OFFLINE is set, so dataset {repo_id} cannot be streamed from the Hub; unset it")
    with requests.Session() as session:
        info, resp = get_json(session, f"{endpoint()}/api/datasets/{repo_id}/revision/{quote(revision, safe='')}",
                               policy, f"dataset info of {repo_id}")
    if info is None:
        if resp.status_code == 404 and error_code(resp) == "RevisionNotFound":
            raise RevisionGone(f"dataset {repo_id} has no revision {revision!r} on {endpoint()}")
        _check_repo_response(resp, repo_id, revision)
    return str(info.get("sha") or revision)


def _read_card(session: requests.Session, info: dict, repo_id: str, sha: str, revision: str,
               policy: RetryPolicy) -> dict:
    """The dataset card's YAML (README.md front matter; else the API's cardData when it has the configs)."""
    url = f"{endpoint()}/datasets/{repo_id}/resolve/{sha}/README.md"

    def get_readme() -> str | None:
        r = request(session, "GET", url, policy)
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            _check_repo_response(r, repo_id, revision)
        try:
            return r.content.decode("utf-8", errors="replace")
        except requests.RequestException as e:
            raise TransientError(f"{type(e).__name__}: {e}") from e

    readme = call_with_retries(get_readme, policy, f"README.md of {repo_id}")
    card = front_matter(readme) if readme else {}
    if not card.get("configs") and isinstance(info.get("cardData"), dict):
        card = info["cardData"]
    return card


class _TreeLister:
    """The card rule's lister over the Hub's tree API: one listing of the shallowest prefix serves every glob under
    it; ``sizes`` holds every file seen."""

    def __init__(self, session: requests.Session, base: str, sha: str, policy: RetryPolicy, repo_id: str) -> None:
        self.session, self.base, self.sha, self.policy, self.repo_id = session, base, sha, policy, repo_id
        self.listings: dict[str, list[tuple[str, int]]] = {}
        self.sizes: dict[str, int] = {}

    def __call__(self, prefix: str) -> list[tuple[str, int]]:
        for known, files in self.listings.items():
            if known == "" or prefix == known or prefix.startswith(known + "/"):
                return [(p, n) for p, n in files if not prefix or p == prefix or p.startswith(prefix + "/")]
        got = _list_tree(self.session, self.base, self.sha, prefix, self.policy, self.repo_id)
        self.listings[prefix] = got
        self.sizes.update(got)
        return got


def resolve_dataset(repo_id: str, config: str | None = None, split: str = "train", *, revision: str = "main",
                    policy: RetryPolicy | None = None) -> HubDataset:
    """(dataset id, config, split) -> the files to stream, pinned to the revision's commit sha."""
    policy = policy or RetryPolicy()
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo_id):
        raise UserError(f"{repo_id!r} is not a Hub dataset id (expected 'org/name') nor an existing local path")
    if offline():
        raise UserError(f"HF_HUB_OFFLINE is set, so dataset {repo_id} cannot be streamed from the Hub; unset it, or "
                        f"give --data a local copy (a directory of its parquet files)")
    ep = endpoint()
    base = f"{ep}/api/datasets/{repo_id}"
    with requests.Session() as session:
        info, resp = get_json(session, f"{base}/revision/{quote(revision, safe='')}", policy,
                              f"dataset info of {repo_id}")
        if info is None:
            _check_repo_response(resp, repo_id, revision)
        sha = str(info.get("sha") or revision)
        card = _read_card(session, info, repo_id, sha, revision, policy)
        lister = _TreeLister(session, base, sha, policy, repo_id)
        chosen = card_splits(card, config, repo_id, lister)
        sizes = {p: lister.sizes[p] for p in chosen.files(split, f"dataset {repo_id}") if p in lister.sizes}
    if not sizes:
        raise UserError(f"config {chosen.config!r} split {split!r} of dataset {repo_id} matches no files "
                        f"(data_files: {chosen.data_files})")
    files = tuple(RemoteFile(p, sizes[p], f"{ep}/datasets/{repo_id}/resolve/{sha}/{quote(p)}") for p in sorted(sizes))
    return HubDataset(repo_id, chosen.config, split, sha, files)


def resolve_parquet(repo_id: str, config: str | None = None, split: str = "train", *,
                    policy: RetryPolicy | None = None, revision: str = "main") -> HubDataset:
    """resolve_dataset keeping only the parquet files; UserError if there are none."""
    ds = resolve_dataset(repo_id, config, split, revision=revision, policy=policy)
    files = tuple(f for f in ds.files if f.path.endswith(".parquet"))
    if not files:
        raise UserError(f"config {ds.config!r} split {split!r} of dataset {repo_id} has no parquet files "
                        f"(found: {names_list([f.path for f in ds.files], 5)}); streaming from the Hub reads parquet")
    return replace(ds, files=files)


def list_parquet_files(repo_id: str, config: str | None = None, split: str = "train", *,
                       policy: RetryPolicy | None = None, revision: str = "main") -> list[RemoteFile]:
    """The parquet files of (dataset, config, split), sorted by path; UserError if it has no parquet files."""
    return list(resolve_parquet(repo_id, config, split, policy=policy, revision=revision).files)
