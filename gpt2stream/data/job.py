"""Open a job's data once: rank 0 resolves it, every rank receives it, and the run keeps the revision it started on.

A Hub dataset costs metadata requests (revision, card, listing) and one footer read per file to open. If every rank
(and every DataLoader worker) did that, a 64-rank job would spend a free user's 5-minute quota at start-up. So:

- rank 0 resolves the revision to a commit sha, the card, the listing and the footers, and plans the units;
- the opened source (files, footers, signed storage URLs) is broadcast to every rank; DataLoader workers get it by
  pickling; training and validation share it;
- rank 0 saves it in the run directory (manifest.py), so ``--resume`` only checks that the pinned sha still exists;
- the sha goes into every checkpoint's config (``pin_revision``): a resume reads that sha, never ``main``.

Local sources are opened the same way (rank 0 reads the footers or scans the text once). A mixture's sources are
each opened so, by rank 0, once for the job: each Hub source has its own manifest (``data-manifest-NAME.json``), each
local source its own pin (``data-files-NAME.json``), each Hub source's sha is pinned in ``DataConfig.mixture``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from gpt2stream.config import DataConfig
from gpt2stream.data import local_pin
from gpt2stream.data.hub import manifest as M
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.mixture import entries, source_error
from gpt2stream.data.open import open_source
from gpt2stream.data.sources import LocalFile, ParquetSource, Source
from gpt2stream.errors import UserError

SHARE_DIR = ".hub-urls"  # in the run directory: signed storage URLs shared by the job's processes


def _check_pinned_exists(data_cfg: DataConfig, sha: str, asked: str) -> None:
    """One API request: the revision this run is pinned to still exists, and ``asked`` (a resume's
    --data-revision, if any) names it."""
    from gpt2stream.data.hub.client import endpoint
    from gpt2stream.data.hub.resolve import RevisionGone, revision_sha
    from gpt2stream.data.hub.retry import RetryPolicy

    policy = RetryPolicy.from_config(data_cfg)
    try:
        got = revision_sha(str(data_cfg.data), asked or sha, policy)
    except RevisionGone:
        if asked and asked != sha:
            raise UserError(f"dataset {data_cfg.data} has no revision {asked!r}; this run is pinned to {sha}: "
                            f"drop --data-revision to resume on it") from None
        raise UserError(f"dataset {data_cfg.data} no longer has revision {sha}, the one this run is pinned to (it "
                        f"was rewritten or deleted on {endpoint()}); the run cannot resume on the same data: "
                        f"start a new run with another --out-dir (--data-revision chooses its revision)") from None
    if got != sha:
        raise UserError(f"this run is pinned to dataset revision {sha}, but --data-revision {asked} is {got}; a "
                        f"resumed run keeps its revision: drop --data-revision")


def _open_on_rank0(data_cfg: DataConfig, run_dir: Path | None, resume: bool) -> Source | MixtureSource:
    """The job's data, opened once: the one source, or every source of the mixture (each as a run of it alone
    opens it, its manifest / local pin under its own name; a failure names the source)."""
    if not data_cfg.mixture:
        return _open_one(data_cfg, run_dir, resume)
    mix = entries(data_cfg)
    opened = []
    for e in mix:
        try:
            opened.append(_open_one(e.data_cfg(data_cfg), run_dir, resume, e.name))
        except UserError as err:
            raise source_error(e, err) from None
    return MixtureSource(mix, opened)


def _open_one(data_cfg: DataConfig, run_dir: Path | None, resume: bool, name: str = "") -> Source:
    """One source (``name``: a mixture's source, "" = the run's only one): from its manifest on a resume (no
    listing, no footer: one request checks the pinned sha), else resolved and planned."""
    share = str(run_dir / SHARE_DIR) if run_dir is not None else None
    saved = M.load_manifest(run_dir, name) if (resume and run_dir is not None) else None
    if saved is not None and M.matches(saved, data_cfg):
        _check_pinned_exists(data_cfg, saved["revision"], data_cfg.data_revision)
        return M.source_from_manifest(saved, data_cfg, share)
    src = open_source(data_cfg)  # a Hub dataset at data_cfg.data_revision (default main), or local files
    for f in src.files:
        if hasattr(f, "share_dir"):
            f.share_dir = share
    if resume and run_dir is not None and not src.revision:  # local files: as the run recorded them?
        note = local_pin.check(local_pin.load(run_dir, name), _local_paths(src), data_cfg.accept_data_change)
        if note:
            print(f"warning: {f'source {name!r}: ' if name else ''}{note}", file=sys.stderr, flush=True)
    src.plan(data_cfg.val_docs, 1)  # every footer read (or the text scanned) once for the job, here
    return src


def _local_paths(src: Source) -> list[str]:
    return [f.path for f in src.files if isinstance(f, LocalFile)]


def open_data_for_job(data_cfg: DataConfig, info: Any, run_dir: str | Path | None = None, resume: bool = False
                      ) -> Source | MixtureSource:
    """Collective (every rank calls it first thing, nothing before it can fail on one rank only): the job's
    opened source, or its mixture's sources. A failure on rank 0 is raised on every rank, with rank 0's message."""
    from gpt2stream import distributed as D

    payload: tuple[str, Any] | None = None
    if info.rank == 0:
        try:
            payload = ("ok", _open_on_rank0(data_cfg, Path(run_dir) if run_dir else None, resume))
        except UserError as e:
            payload = ("error", e)
    payload = D.broadcast_object(payload, info)
    assert payload is not None  # rank 0 always sends one
    kind, value = payload
    if kind == "error":
        raise value
    return value


def write_manifest(source: Source | MixtureSource, data_cfg: DataConfig, run_dir: str | Path) -> None:
    """Rank 0, once the run directory is the run's: save each Hub source's manifest, or what each local source's
    files are (local_pin.py), which a resume checks. A mixture's sources under their names."""
    if isinstance(source, MixtureSource):
        for e, src in zip(source.entries, source.sources, strict=True):
            _write_one(src, e.data_cfg(data_cfg), Path(run_dir), e.name)
    else:
        _write_one(source, data_cfg, Path(run_dir))


def _write_one(source: Source, data_cfg: DataConfig, run_dir: Path, name: str = "") -> None:
    if source.revision:
        assert isinstance(source, ParquetSource)  # a Hub source: parquet files at a revision
        M.save_manifest(M.manifest_of(source, data_cfg), run_dir, name)
    else:
        local_pin.save(local_pin.describe(_local_paths(source)), run_dir, name)


def pinned_mixture(mixture: list, source: Source | MixtureSource) -> list:
    """A saved mixture (``DataConfig.mixture``) with each Hub source's revision the commit sha the job opened."""
    if not isinstance(source, MixtureSource):
        return mixture
    by_name = {e.name: s.revision for e, s in zip(source.entries, source.sources, strict=True)}
    return [{**d, "revision": by_name.get(d.get("name", "")) or d.get("revision", "")} for d in mixture]


def pin_data(data_cfg: DataConfig, source: Source | MixtureSource) -> DataConfig:
    """The run's DataConfig with its mixture's revisions pinned (config.json, the loader and every checkpoint then
    name the shas read); a single source's is pinned in the checkpoints only (``pin_revision``)."""
    if not data_cfg.mixture:
        return data_cfg
    return dataclasses.replace(data_cfg, mixture=pinned_mixture(data_cfg.mixture, source))


def pin_revision(config: dict, source: Source | MixtureSource) -> dict:
    """A saved config (RunConfig.to_dict()) with the commit sha(s) the run reads, so a resume reads those."""
    data = config.get("data", {})
    if isinstance(source, MixtureSource):
        return {**config, "data": {**data, "mixture": pinned_mixture(list(data.get("mixture") or []), source)}}
    if source.revision:
        config = {**config, "data": {**data, "data_revision": source.revision}}
    return config


def check_pinned_revision(saved_config: dict, source: Source | MixtureSource, ckpt: Any) -> None:
    """A checkpoint resumes only on the dataset revision(s) it was trained on."""
    data = saved_config.get("data") or {}
    if isinstance(source, MixtureSource):
        saved = {str(d.get("name")): str(d.get("revision") or "") for d in data.get("mixture") or []}
        for e, src in zip(source.entries, source.sources, strict=True):
            sha = saved.get(e.name, "")
            if sha and src.revision and len(sha) == 40 and sha != src.revision:
                raise UserError(f"cannot resume from {ckpt}: its source {e.name!r} ({e.data}) was trained on dataset "
                                f"revision {sha}, this run opened {src.revision}; drop --data to resume on the saved "
                                f"mixture, or set 'revision: {sha}' for it in the mixture file")
        return
    saved_rev = str(data.get("data_revision") or "")
    if saved_rev and source.revision and len(saved_rev) == 40 and saved_rev != source.revision:
        raise UserError(f"cannot resume from {ckpt}: it was trained on dataset revision {saved_rev}, this run opened "
                        f"{source.revision}; resume with --data-revision {saved_rev}")
