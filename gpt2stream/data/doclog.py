"""The document log (--log-docs): which documents each rank's blocks started, per optimizer step.

``run_dir/docs/rank00000.jsonl`` (one file per rank) holds one JSON object per rank, step and epoch::

    {"step": 12, "rank": 0, "epoch": 0, "ids": ["<urn:uuid:...>", "data/part-0.parquet:3:17", ...]}

``ids`` are the --id-column values of the documents whose first token is in that step's blocks of that rank (a
stable ``file:row group:row`` / ``file:byte offset`` key when the data has no id column); a step whose documents
span two epochs (a stream crossed into the next one) has one line per epoch. Over all files, every training
document appears once per epoch. On resume, lines for steps after the checkpoint are removed (in every rank's file,
whatever the old layout), so the log is exactly what was trained.
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


def step_records(step: int, rank: int, docs: list[tuple[int, str]], epoch: int) -> list[dict]:
    """The objects for one rank's step: one per epoch among ``docs`` (``epoch`` when there are none).

    >>> step_records(3, 1, [(0, "a"), (1, "b"), (0, "c")], 1)
    [{'step': 3, 'rank': 1, 'epoch': 0, 'ids': ['a', 'c']}, {'step': 3, 'rank': 1, 'epoch': 1, 'ids': ['b']}]
    """
    epochs = sorted({e for e, _ in docs}) or [epoch]
    return [{"step": step, "rank": rank, "epoch": e, "ids": [d for de, d in docs if de == e]} for e in epochs]


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

    def write(self, step: int, docs: list[tuple[int, str]], epoch: int) -> None:
        self._f.write("".join(json.dumps(r) + "\n" for r in step_records(step, self.rank, docs, epoch)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_log(run_dir: str | Path) -> list[dict]:
    """Every line of every rank's file, sorted by (step, rank, epoch)."""
    out = []
    for p in sorted((Path(run_dir) / DOCS_DIR).glob("rank*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return sorted(out, key=lambda r: (r["step"], r["rank"], r["epoch"]))
