"""``python -m gpt2stream.report RUN``: one page about a run, finished or still running, read from its directory only.

It reads ``config.json``, ``metrics.jsonl`` (the step, validation, ``event: start`` and counter records the trainer
writes), ``train.log`` (append-only, so it still counts the starts whose metrics a resume rewrote) and the names,
sizes and times of ``checkpoints/*.pt`` (never their contents): a copy of the directory reports the same, and the
command it prints to continue names the directory given.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpt2stream.checkpoint import CKPT_DIR, list_checkpoints
from gpt2stream.errors import UserError
from gpt2stream.metrics import read_metrics
from gpt2stream.units import hms, human_bytes

USAGE = "usage: python -m gpt2stream.report RUN_DIR"
PARTS = ("data_wait_ms", "compute_ms", "optim_ms", "sync_ms")  # a step's time, attributed (train/timing.py)
STALL_NOTE = 0.10  # a data-wait share above this is called out (as the run's own end summary does)


@dataclass
class Run:
    """What the run directory says, parsed once."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    log_lines: list[str]
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "loss" in r and "ms" in r]

    @property
    def vals(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "val_loss" in r]

    @property
    def starts(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "start"]

    @property
    def counters(self) -> dict[str, Any]:
        """The newest record of the job's pipeline and network totals ({} if none yet)."""
        return next((r for r in reversed(self.records) if any(k.startswith("net/") for k in r)), {})


def load_run(path: str | Path) -> Run:
    run = Path(path)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory; give the run directory (the --out-dir of run_train.py)")
    cfg_file, metrics = run / "config.json", run / "metrics.jsonl"
    if not cfg_file.is_file() and not metrics.is_file():
        raise UserError(f"{run} holds no config.json or metrics.jsonl: not a run directory of run_train.py")
    try:
        config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file} is not valid JSON ({e}); the run directory is damaged") from None
    records = read_metrics(metrics) if metrics.is_file() else []
    log = (run / "train.log").read_text(errors="replace").splitlines() if (run / "train.log").is_file() else []
    return Run(run, config, records, log, list_checkpoints(run / CKPT_DIR))


def state_of(run: Run, now: float) -> str:
    """finished / stopped (and why) / running or killed, from train.log's last word and the age of the metrics."""
    for line in reversed(run.log_lines):
        if line.startswith("done:"):
            return "finished"
        if line.startswith("stopped"):
            return line.split(";")[0]
        if line.startswith("run "):
            break
    newest = run.path / "metrics.jsonl"
    age = now - newest.stat().st_mtime if newest.is_file() else None
    ago = f"last record {hms(age)} ago" if age is not None else "no metrics yet"
    return f"running, or killed ({ago})"


def wall_time(run: Run) -> tuple[float, int]:
    """(seconds covered by the kept history, processes): each process from its start record to its last record.
    Work a killed process did after its last checkpoint is not in the history a resume keeps."""
    total, begin, last = 0.0, None, None
    for r in run.records:
        t = r.get("time")
        if not isinstance(t, (int, float)):
            continue
        if r.get("event") == "start":
            if begin is not None and last is not None:
                total += last - begin
            begin, last = t, t
        else:
            begin = t if begin is None else begin
            last = t
    if begin is not None and last is not None:
        total += last - begin
    return total, max(len(run.starts), 1 if run.steps else 0)


def restarts_line(run: Run) -> str:
    launches = sum(1 for ln in run.log_lines if ln.startswith("run "))
    resumes = sum(1 for ln in run.log_lines if ln.startswith("resumed from "))
    return f"launches {launches} ({max(launches - 1, 0)} restarts, {resumes} resumed from a checkpoint)"


def progress_lines(run: Run) -> list[str]:
    steps, train = run.steps, run.config.get("train", {})
    if not steps:
        return ["progress: no training step recorded yet"]
    last = steps[-1]
    wall, procs = wall_time(run)
    ms = sum(float(r["ms"]) for r in steps)
    wall_s = f"wall {hms(wall)} over {procs} process(es)" if wall else "wall time not recorded"
    return [f"progress: step {last['step']:,}/{train.get('max_steps', '?'):,} | tokens {last.get('tokens', 0):,} | "
            + epoch_text(last),
            f"time: {wall_s}, of it training steps {hms(ms / 1000)} | "
            + restarts_line(run)]


def _best_last(vals: list[dict[str, Any]], loss: str, bpb: str) -> str:
    """"best LOSS at step N, val_bpb B | last ..." of the records holding ``loss``."""
    def fmt(r: dict[str, Any]) -> str:
        b = f", val_bpb {r[bpb]:.4f}" if isinstance(r.get(bpb), (int, float)) else ""
        return f"{r[loss]:.4f} at step {r['step']:,}{b}" if isinstance(r[loss], (int, float)) else \
            f"{r[loss]} at step {r['step']:,}"

    finite = [r for r in vals if isinstance(r[loss], (int, float))]
    best = min(finite, key=lambda r: r[loss]) if finite else vals[-1]
    return f"best loss {fmt(best)} | last {fmt(vals[-1])}"


def sources_of(run: Run) -> list[str]:
    """A mixture run's sources with a validation of their own (``val/<name>`` keys), in first-seen order."""
    names: dict[str, None] = {}
    for r in run.vals:
        names.update((k[4:], None) for k in r if k.startswith("val/") and k.count("/") == 1)
    return list(names)


def validation_lines(run: Run) -> list[str]:
    """The best and last validation; for a mixture the weighted total, then each source's."""
    vals = run.vals
    if not vals:
        return ["validation: none yet"]
    sources = sources_of(run)
    lines = [f"validation{' (weighted by the mixture)' if sources else ''}: "
             + _best_last(vals, "val_loss", "val_bpb")]
    width = max((len(n) for n in sources), default=0)
    for name in sources:
        key = f"val/{name}"
        lines.append(f"  {name:<{width}} " + _best_last([r for r in vals if key in r], key, f"{key}/bpb"))
    return lines


def time_split_lines(run: Run) -> list[str]:
    steps = [r for r in run.steps if all(isinstance(r.get(k), (int, float)) for k in PARTS)]
    if not steps:
        return ["step time split: not recorded (a run from before per-step attribution)"]
    total = sum(float(r["ms"]) for r in steps) or 1.0
    share = {k: sum(float(r[k]) for r in steps) / total for k in PARTS}
    med = {k: statistics.median(float(r[k]) for r in steps) for k in PARTS}
    parts = " | ".join(f"{k[:-3].replace('_', ' ')} {share[k]:.1%} (median {med[k]:.1f} ms)" for k in PARTS)
    lines = [f"step time split ({len(steps)} steps, median step {statistics.median(r['ms'] for r in steps):.1f} ms): "
             + parts]
    if share["data_wait_ms"] > STALL_NOTE:
        lines.append(f"data stall: {share['data_wait_ms']:.0%} of the step time waited for batches: see the "
                     "network line and the end of train.log for the likely cause")
    return lines


def network_line(run: Run) -> str:
    c = run.counters
    if not c:
        return "data and network: no counters recorded yet (they are logged every --log-every steps)"
    g = c.get

    def n(k: str) -> str:
        return f"{int(g(k, 0)):,}"

    return (f"data and network (to step {g('step', 0):,}): {n('data/docs')} documents, {n('data/tokens')} tokens "
            f"read | {human_bytes(float(g('net/bytes', 0)))} fetched | Hub requests api {n('net/api')}, resolver "
            f"{n('net/resolver')}, CDN {n('net/cdn')} | retries {n('net/retries')} | rate-limit waits "
            f"{float(g('net/rate_limit_wait_s', 0)):.0f} s | signed-URL refreshes {n('net/url_refreshes')} | "
            f"tokenizer {float(g('data/tokenize_tok_s_per_reader', 0)):,.0f} tok/s per reader")


def checkpoint_lines(run: Run, world: int) -> list[str]:
    if not run.checkpoints:
        return ["checkpoint: none saved yet (nothing to continue from: start the run again)"]
    step, newest = run.checkpoints[-1]
    st = newest.stat()
    when = datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"checkpoint: newest {newest} (step {step:,}, {when}, {human_bytes(st.st_size)}); "
             f"{len(run.checkpoints)} kept"]
    launch = f"torchrun --nproc_per_node={world} " if world > 1 else "python "
    cmd = f"{launch}run_train.py --out-dir {run.path} --resume"
    max_steps = run.config.get("train", {}).get("max_steps")
    if isinstance(max_steps, int) and step >= max_steps:
        lines.append(f"continue: it reached max_steps {max_steps:,}; to train further: {cmd} --max-steps N "
                     f"(N > {max_steps:,})")
    else:
        lines.append(f"continue: {cmd}")
    return lines


def world_size_of(run: Run) -> int:
    starts = run.starts
    if starts and isinstance(starts[-1].get("world_size"), int):
        return int(starts[-1]["world_size"])
    for ln in reversed(run.log_lines):  # the run header: "hardware ... | world_size N | ..."
        if ln.startswith("hardware ") and "world_size " in ln:
            return int(ln.split("world_size ", 1)[1].split()[0])
    return 1


def data_line(data: dict[str, Any]) -> str:
    """What the run trains on: the source and its revision, or a mixture's sources with their shares and revisions
    (a mixture's --data-revision is unused: each Hub source pins its own).

    >>> data_line({"data": "org/web", "data_revision": ""})
    'data org/web (revision (latest))'
    >>> data_line({"data": "m.yaml", "mixture": [{"name": "web", "data": "org/web", "weight": 0.75, "revision": "ab"},
    ...                                          {"name": "mine", "data": "a.jsonl", "weight": 0.25, "revision": ""}]})
    'data m.yaml: a mixture of 2 sources: web 75.0% org/web (revision ab), mine 25.0% a.jsonl'
    """
    mix = data.get("mixture") or []
    if not mix:
        return f"data {data.get('data', '?')} (revision {data.get('data_revision') or '(latest)'})"
    parts = [f"{m.get('name')} {100 * float(m.get('weight', 0)):.1f}% {m.get('data')}"
             + (f" (revision {m['revision']})" if m.get("revision") else "") for m in mix]
    return f"data {data.get('data', '?')}: a mixture of {len(mix)} sources: {', '.join(parts)}"


def epoch_text(last: dict[str, Any]) -> str:
    """The step record's epoch, or each mixture source's (``epoch/<name>``: each source counts its own)."""
    per_source = {k[6:]: v for k, v in last.items() if k.startswith("epoch/")}
    if per_source:
        epochs = ", ".join(f"{n} {e}" for n, e in per_source.items())
        return f"epochs by source: {epochs} (0 = still in the first pass over that source)"
    return f"epoch {last.get('epoch', 0)} (0 = still in the first pass over the data)"


def render(run: Run, now: float | None = None) -> str:
    now = time.time() if now is None else now
    head = [f"run {run.path}: {state_of(run, now)}", f"{data_line(run.config.get('data', {}))} | preset "
                                                     f"{run.config.get('preset', '?')}"]
    body = [*progress_lines(run), *validation_lines(run), *time_split_lines(run), network_line(run)]
    return "\n".join(head + body + checkpoint_lines(run, world_size_of(run))) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__ if argv and argv[0] in ("-h", "--help") else USAGE)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sys.stdout.write(render(load_run(argv[0])))
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
