"""The document log (--log-docs): which documents each rank's blocks started, per optimizer step.

``run_dir/docs/rank00000.jsonl`` (one file per rank) holds one JSON object per rank, step and epoch::

    {"step": 12, "rank": 0, "epoch": 0, "ids": ["<urn:uuid:...>", "data/part-0.parquet:3:17", ...]}

``ids`` are the --id-column values of the documents whose first token is in that step's blocks of that rank (a
stable ``file:row group:row`` / ``file:byte offset`` key when the data has no id column); a step whose documents
span two epochs (a stream crossed into the next one) has one line per epoch. Over all files, every training
document appears once per epoch. On resume, lines for steps after the checkpoint are removed (in every rank's file,
whatever the old layout), so the log is exactly what was trained.

A mixture's lines are one per rank, step, epoch and source, with the source's name and ``blocks``: how many of the
rank's blocks of the step came from that source (on its first line of the step; 0 on the others). Blocks are all
seq_len+1 tokens and hold one source each, so the blocks' shares are the shares of the trained tokens::

    {"step": 12, "rank": 0, "epoch": 1, "source": "code", "blocks": 3, "ids": ["..."]}
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

DOCS_DIR = "docs"
_NAME = re.compile(r"^rank(\d{5})\.jsonl$")


def log_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / DOCS_DIR / f"rank{rank:05d}.jsonl"


def step_records(step: int, rank: int, docs: list[tuple], epoch: int, sources: list[str] | None = None,
                 source_epochs: dict[str, int] | None = None) -> list[dict]:
    """The objects for one rank's step: one per epoch among ``docs`` (``epoch`` when there are none).

    >>> step_records(3, 1, [(0, "a"), (1, "b"), (0, "c")], 1)
    [{'step': 3, 'rank': 1, 'epoch': 0, 'ids': ['a', 'c']}, {'step': 3, 'rank': 1, 'epoch': 1, 'ids': ['b']}]

    A mixture's step (``sources``: the source of each of the rank's blocks; documents ``(epoch, id, source)``) has
    one object per source and epoch (see mixture_records).
    """
    if sources is not None:
        return mixture_records(step, rank, docs, sources, source_epochs or {})
    epochs = sorted({e for e, _ in docs}) or [epoch]
    return [{"step": step, "rank": rank, "epoch": e, "ids": [d for de, d in docs if de == e]} for e in epochs]


def mixture_records(step: int, rank: int, docs: list[tuple], sources: list[str],
                    source_epochs: dict[str, int]) -> list[dict]:
    """One object per (source, epoch) among a mixture step's documents, in the order the sources first appear;
    a source that gave blocks but started no document gets one line at its epoch.

    >>> mixture_records(2, 0, [(0, "a", "web"), (0, "b", "code")], ["web", "code", "code"], {"web": 0, "code": 0})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'step': 2, 'rank': 0, 'epoch': 0, 'source': 'web', 'blocks': 1, 'ids': ['a']},
     {'step': 2, 'rank': 0, 'epoch': 0, 'source': 'code', 'blocks': 2, 'ids': ['b']}]
    """
    names = list(dict.fromkeys([*sources, *(d[2] for d in docs)]))
    out = []
    for name in names:
        epochs = sorted({d[0] for d in docs if d[2] == name}) or [source_epochs.get(name, 0)]
        for k, e in enumerate(epochs):
            out.append({"step": step, "rank": rank, "epoch": e, "source": name,
                        "blocks": sources.count(name) if k == 0 else 0,
                        "ids": [d[1] for d in docs if d[0] == e and d[2] == name]})
    return out


def truncate_after(path: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (and a torn last line), atomically; a missing file stays missing."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut by a crash
            continue
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


class DocLog:
    """Appends this rank's lines; opened at the step the run starts from (0 or the checkpoint's)."""

    def __init__(self, run_dir: str | Path, rank: int, world_size: int, start_step: int) -> None:
        self.rank = rank
        d = Path(run_dir) / DOCS_DIR
        d.mkdir(parents=True, exist_ok=True)
        truncate_after(log_path(run_dir, rank), start_step)
        if rank == 0:  # files of ranks this layout no longer has
            for p in d.iterdir():
                m = _NAME.match(p.name)
                if m and int(m.group(1)) >= world_size:
                    truncate_after(p, start_step)
        self._f = open(log_path(run_dir, rank), "a")

    def write(self, step: int, docs: list[tuple], epoch: int, sources: list[str] | None = None,
              source_epochs: dict[str, int] | None = None) -> None:
        """One step's lines; ``sources``/``source_epochs`` for a mixture (see step_records)."""
        recs = step_records(step, self.rank, docs, epoch, sources, source_epochs)
        self._f.write("".join(json.dumps(r) + "\n" for r in recs))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_log(run_dir: str | Path) -> list[dict]:
    """Every line of every rank's file, sorted by (step, rank, epoch, source)."""
    out = []
    for p in sorted((Path(run_dir) / DOCS_DIR).glob("rank*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return sorted(out, key=lambda r: (r["step"], r["rank"], r["epoch"], r.get("source", "")))
