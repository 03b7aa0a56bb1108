"""A dataset card's configs and splits -> data files, by ``datasets``' own rules, fed by our own listing.

``datasets`` turns the card's YAML ``configs`` (``data_files`` as a string, a list, a list of ``{split, path}`` or a
``{split: paths}`` mapping; ``data_dir``; none at all -> its split-name patterns) into glob patterns, and resolves
them with fsspec's glob, skipping hidden (``.x``) and special (``__x``) paths unless a pattern names them. We call
those same functions (``MetadataConfigs``, ``sanitize_patterns``, ``get_data_patterns``, ``resolve_pattern``) on a
small fsspec filesystem that answers from the listing we fetched with our own retried, timed-out requests, so the
files chosen are the ones ``datasets.load_dataset_builder(...).config.data_files`` names (tests/test_hub_card.py).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec

from gpt2stream.errors import UserError

PROTOCOL = "gpt2stream-listing"


class _Listing:
    """lister(prefix) -> [(path, size)] under prefix (recursive), called once per shallowest prefix needed."""

    def __init__(self, lister: Callable[[str], list[tuple[str, int]]]) -> None:
        self.lister = lister
        self.files: dict[str, int] = {}
        self.listed: set[str] = set()

    def under(self, prefix: str) -> dict[str, int]:
        if not any(prefix == p or p == "" or prefix.startswith(p + "/") for p in self.listed):
            self.files.update(self.lister(prefix))
            self.listed.add(prefix)
        return self.files


_LISTINGS: dict[str, _Listing] = {}  # key (in the storage options) -> the listing every fs instance shares
_KEYS = itertools.count()
_LOCK = threading.Lock()


class ListingFileSystem(fsspec.AbstractFileSystem):
    """A read-only view of a repo's file listing; ``lister(prefix)`` lists (recursively) what is under prefix."""

    protocol = PROTOCOL
    cachable = False

    def __init__(self, listing: str = "", **kw: Any) -> None:
        super().__init__(**kw)
        self._listing = _LISTINGS[listing]

    def ls(self, path: str, detail: bool = True, **kw: Any) -> list:
        path = self._strip_protocol(path).strip("/")
        files = self._listing.under(path)
        pre = path + "/" if path else ""
        out: dict[str, dict] = {}
        for p, size in files.items():
            if p == path:
                out[p] = {"name": p, "size": size, "type": "file"}
            elif p.startswith(pre):
                head = p[len(pre):].split("/", 1)
                name = pre + head[0]
                out[name] = {"name": name, "size": size if len(head) == 1 else 0,
                             "type": "file" if len(head) == 1 else "directory"}
        if not out and path:
            raise FileNotFoundError(path)
        entries = sorted(out.values(), key=lambda e: e["name"])
        return entries if detail else [e["name"] for e in entries]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = path[len(PROTOCOL) + 3:] if path.startswith(PROTOCOL + "://") else path
        return path.strip("/")


def _register() -> None:
    if PROTOCOL not in fsspec.registry:
        fsspec.register_implementation(PROTOCOL, ListingFileSystem, clobber=True)


def card_configs(card: dict) -> tuple[dict[str, dict], str | None]:
    """The card's YAML ``configs`` as datasets reads them: ({name: params}, default config name or None)."""
    from datasets.utils.metadata import MetadataConfigs

    try:
        configs = MetadataConfigs.from_dataset_card_data(card)
    except ValueError as e:  # datasets refuses it too (e.g. data_files as a {split: paths} mapping)
        raise UserError("the dataset card's `configs` are invalid (datasets refuses them too): data_files must be a "
                        "string, a list of strings or a list of {split, path}; " +
                        " ".join(str(e).split())[:200]) from None
    return dict(configs), (configs.get_default_config_name() if configs else None)


def resolve_data_files(params: dict | None, lister: Callable[[str], list[tuple[str, int]]]) -> dict[str, list[str]]:
    """{split: repo paths} of one config (``params`` from card_configs; None = a card without configs)."""
    from datasets.data_files import get_data_patterns, resolve_pattern, sanitize_patterns
    from datasets.download.download_config import DownloadConfig
    from datasets.load import _ALL_ALLOWED_EXTENSIONS

    _register()
    with _LOCK:
        key = str(next(_KEYS))
        _LISTINGS[key] = _Listing(lister)
    try:
        dc = DownloadConfig(storage_options={PROTOCOL: {"listing": key}})
        params = params or {}
        data_dir = str(params.get("data_dir") or "").strip("/")
        base = f"{PROTOCOL}://{data_dir}" if data_dir else f"{PROTOCOL}://"
        files = params.get("data_files")
        patterns = sanitize_patterns(files) if files is not None else get_data_patterns(base, download_config=dc)
        out: dict[str, list[str]] = {}
        for split, pats in patterns.items():
            got: list[str] = []
            for pattern in pats:
                try:
                    got += resolve_pattern(pattern, base, _ALL_ALLOWED_EXTENSIONS, download_config=dc)
                except FileNotFoundError:
                    continue  # datasets raises later if a split has no file at all; we say which
            out[str(split)] = [g[len(PROTOCOL) + 3:] for g in got]
        return out
    finally:
        with _LOCK:
            _LISTINGS.pop(key, None)


def names_list(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def choose_config(configs: dict[str, Any], default: str | None, requested: str | None, repo_id: str) -> str:
    """The config to use: the requested one, else the default, else the only one; UserError listing the rest."""
    if requested:
        if requested in configs:
            return requested
        raise UserError(f"dataset {repo_id} has no config {requested!r}; its configs are: "
                        f"{names_list(sorted(configs))} (set --data-config)")
    if default:
        return default
    if len(configs) == 1:
        return next(iter(configs))
    raise UserError(f"dataset {repo_id} has several configs and no default: pick one with --data-config "
                    f"({names_list(sorted(configs))})")


def front_matter(text: str) -> dict:
    import yaml

    m = re.match(r"^\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}
    try:
        card = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise UserError(f"the dataset card (README.md) has invalid YAML front matter: {e}".splitlines()[0]) from e
    return card if isinstance(card, dict) else {}


@dataclass(frozen=True)
class CardSplits:
    """What a dataset card chooses: the config, its ``data_files`` as written (for messages), {split: repo paths}."""

    config: str
    data_files: Any
    splits: dict[str, list[str]]

    def files(self, split: str, what: str) -> list[str]:
        """The repo paths of ``split``; UserError listing the splits there are (``what``: "dataset X" or so)."""
        if split not in self.splits:
            raise UserError(f"config {self.config!r} of {what} has no split {split!r}; its splits are: "
                            f"{names_list(sorted(self.splits))} (set --split)")
        return self.splits[split]


def card_splits(card: dict, requested: str | None, repo_id: str,
                lister: Callable[[str], list[tuple[str, int]]]) -> CardSplits:
    """The one card rule, online (lister = the Hub's tree listing) and offline (lister = a cached snapshot): the card's
    configs as ``datasets`` reads them (none: its split-name patterns over the whole repo), the config chosen, and
    its files per split."""
    found, default = card_configs(card)
    configs: dict[str, dict | None] = dict(found) if found else {"default": None}  # None: the default patterns
    name = choose_config(configs, default if found else "default", requested, repo_id)
    data_files = (configs[name] or {}).get("data_files", "(the default patterns)")
    return CardSplits(name, data_files, resolve_data_files(configs[name], lister))
