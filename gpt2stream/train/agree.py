"""Decisions every rank takes together during setup: a failure on any rank stops all of them, and the checkpoint to
resume is rank 0's choice, read by every rank and compared before anyone goes on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gpt2stream import distributed as D
from gpt2stream.checkpoint import choose_checkpoint
from gpt2stream.config import RunConfig
from gpt2stream.errors import UserError
from gpt2stream.paths import check_writable_dir
from gpt2stream.train.loop import Stop
from gpt2stream.train.output import RunLog, error
from gpt2stream.train.settings import Exit


def agree_errors(err: Exception | None, info: D.DistInfo) -> None:
    """Collective: if any rank failed (``err``), every rank stops with Exit.USER; the lowest failing rank says why
    (rank 0 by raising ``err``, which ``train`` prints; another rank by printing it with its rank)."""
    if not info.ddp:
        if err is not None:
            raise err
        return
    first = D.lowest_failing_rank(err is not None, info)
    if first is None:
        return
    if err is not None and info.rank == first:
        if info.master:
            raise err
        error(f"[rank {info.rank}] {err}")
    raise Stop(Exit.USER)


def checkpoint_view(got: tuple[Path, dict] | None, cfg: RunConfig) -> tuple[str, int, str]:
    """What a rank resumes from: (file, step, digest of the run's config apart from the resume target)."""
    d = cfg.to_dict()
    d["train"] = {**d["train"], "resume": ""}
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    return (str(got[0]), int(got[1]["step"]), digest) if got else ("", -1, digest)


def disagreement(views: list[tuple[str, int, str]]) -> str | None:
    """The one-line refusal when the ranks would not continue from the same checkpoint and config, else None."""
    if len(set(views)) <= 1:
        return None
    r = next(i for i, v in enumerate(views) if v != views[0])
    (p0, s0, _), (pr, sr, _) = views[0], views[r]
    what = f"read step {sr} from {pr or 'nothing'}, rank 0 step {s0} from {p0 or 'nothing'}" if (p0, s0) != (pr, sr) \
        else "has another config than rank 0 (its --resume found another checkpoint?)"
    return (f"the ranks would resume differently: rank {r} {what}; the ranks must see the same files: on a shared "
            "filesystem wait for it to settle (or name the file with --resume PATH) and launch again")


def choose_agreed(cfg: RunConfig, info: D.DistInfo, log: RunLog) -> tuple[Path, dict] | None:
    """Rank 0 chooses the checkpoint (the newest valid one, with fallback); every other rank reads exactly that file
    (once, mmap); then all compare what they read and refuse together on any difference."""
    from gpt2stream.checkpoint import read_checkpoint

    err, got = None, None
    if info.master:
        try:
            check_writable_dir(cfg.train.out_dir, "--out-dir")  # one line now, not an OSError after the set-up
            got = choose_checkpoint(cfg.train.resume, cfg.train.out_dir, warn=log.warn)
        except UserError as e:
            err = e
    agree_errors(err, info)
    if not info.ddp:
        return got
    path = D.broadcast_object(str(got[0]) if got else "", info)
    if path and not info.master:
        try:
            got = (Path(path), read_checkpoint(path, mmap=True))
        except UserError as e:
            err = e
    agree_errors(err, info)
    refusal = disagreement(D.gather_objects(checkpoint_view(got, cfg), info))
    if refusal:
        raise UserError(refusal)  # the same on every rank: rank 0 prints it
    return got
