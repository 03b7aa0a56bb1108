"""``run_train.py --plan``: what a run will read, send to the Hub, write and hold, before anything is trained.

It opens the data exactly as rank 0 of the job does at start-up (resolution, then every parquet footer; each source
of a mixture) and reads the rest from the parquet metadata, the config and the memory model; it trains nothing and
writes nothing. A mixture is planned per source: its revision, files, row groups, tokens and epochs at its weight.

Hub requests: the resolution's api and resolver requests are counted as the plan sends them (the job's rank 0
sends the same ones), plus one resolver request per file for its footer; every other process of the job receives
the opened source with its signed URLs, so the start-up is the same for 1 or 512 ranks. Data reads go to the CDN,
which has no quota. In steady state the only limited requests are signed-URL refreshes: one per file being read per
URL lifetime, shared through the run directory by the processes that see it (counted per node, in case the run
directory is not on a shared filesystem).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from gpt2stream.config import DataConfig, RunConfig
from gpt2stream.data import counters
from gpt2stream.data.sources import Source
from gpt2stream.errors import UserError

# The Hub's published quotas per 5-minute fixed window, (api, resolvers) per user (per IP when anonymous; per member
# for organisations): https://huggingface.co/docs/hub/rate-limits (table "current rate limits", September 2025,
# with hub-docs PR #1958's Team/Enterprise figures). docs/hub.md repeats them.
QUOTAS: dict[str, tuple[int, int]] = {"anonymous": (500, 3000), "free": (1000, 5000), "PRO": (2500, 12000),
                                      "Enterprise": (6000, 50000)}
WINDOW_S = 300
URL_TTL_S = 3600  # the Hub's signed storage URLs last about an hour (../shared/HUB-NOTES.md; hub.url_expiry)
# FineWeb-Edu text is 4.61 UTF-8 bytes per GPT-2 token (measured on ../shared/corpus/fineweb_edu_sample.txt, 1.0 MB,
# 217,888 tokens). Applied to the text column's uncompressed size in the parquet metadata (which adds 4 bytes of
# length per document): an estimate, within ~5% for English web text, worse for code or other languages.
BYTES_PER_TOKEN = 4.6


@dataclass(frozen=True)
class DataFacts:
    revision: str
    files: int
    row_groups: int
    rows: int
    text_bytes: int
    how: str  # where text_bytes comes from

    @property
    def tokens(self) -> int:
        return int(self.text_bytes / BYTES_PER_TOKEN)


@dataclass(frozen=True)
class SourcePlan:
    """One source of the run as the plan opened it: a mixture's source (``name``, ``weight``) or the run's only one
    (name "", weight 1)."""

    name: str
    data: str
    weight: float
    max_epochs: int
    facts: DataFacts


@dataclass(frozen=True)
class Requests:
    startup_api: int
    startup_resolver: int
    steady_resolver: int  # per 5-minute window (steady-state api requests: none)


def data_facts(src: Source, val_docs: int) -> DataFacts:
    """Files, row groups, rows and text bytes of the training data (parquet: from the footers already read)."""
    metas = getattr(src, "metas", None)
    if metas:
        groups = rows = size = 0
        for md in metas.values():
            col = md.schema.to_arrow_schema().names.index(src.text_column)
            groups += md.num_row_groups
            rows += md.num_rows
            size += sum(md.row_group(g).column(col).total_uncompressed_size for g in range(md.num_row_groups))
        return DataFacts(src.revision, len(src.files), groups, rows, size,
                         "the text column's uncompressed size in the parquet footers")
    size = sum(int(getattr(f, "size", 0) or 0) or _local_size(f) for f in src.files)
    return DataFacts(src.revision, len(src.files), 0, 0, size, "the files' sizes")


def _local_size(f: object) -> int:
    path = getattr(f, "path", None)
    return Path(path).stat().st_size if path and Path(path).is_file() else 0


def predict_requests(resolution: counters.Counts, sources: list[SourcePlan], readers: int, nnodes: int) -> Requests:
    """The job's api and resolver requests (see the module doc): the resolutions as counted, one footer per Hub
    file; in steady state each Hub source's files being read refresh their signed URLs."""
    api, res = int(resolution.get("net/api", 0)), int(resolution.get("net/resolver", 0))
    hub = [s.facts for s in sources if s.facts.revision]  # local files (and a Hub cache) ask the Hub nothing
    if not hub:
        return Requests(0, 0, 0)
    reading = sum(min(f.files, readers) for f in hub)
    return Requests(api, res + sum(f.files for f in hub), math.ceil(reading * nnodes * WINDOW_S / URL_TTL_S))


def verdicts(req: Requests) -> dict[str, str]:
    out = {}
    for tier, (q_api, q_res) in QUOTAS.items():
        over = [f"api {req.startup_api} > {q_api}"] if req.startup_api > q_api else []
        over += [f"resolver {req.startup_resolver} > {q_res}"] if req.startup_resolver > q_res else []
        over += [f"steady resolver {req.steady_resolver} > {q_res}"] if req.steady_resolver > q_res else []
        out[tier] = "ok" if not over else "429 (" + ", ".join(over) + ")"
    return out


def checkpoint_bytes(cfg: RunConfig) -> int:
    """Bytes of one checkpoint: the fp32 weights as saved (the tied embedding and lm_head stored apart) plus AdamW's
    two fp32 moments per parameter; the metrics history and loader states add kilobytes."""
    import torch

    from gpt2stream.loading import gpt_from_config

    with torch.device("meta"):
        model = gpt_from_config(cfg.model)
    saved = sum(t.numel() * 4 for t in model.state_dict().values())
    return saved + 8 * sum(p.numel() for p in model.parameters())


def open_like_rank0(cfg: RunConfig) -> tuple[list[SourcePlan], counters.Counts]:
    """The job's sources opened as rank 0 opens them (every one of a mixture), and the Hub requests their
    resolutions sent (the footers, one request per Hub file, are predicted apart)."""
    from gpt2stream.data.mixture import MixEntry, entries, source_error
    from gpt2stream.data.open import open_source

    mix = entries(cfg.data)
    items: list[tuple[MixEntry | None, DataConfig]] = [(e, e.data_cfg(cfg.data)) for e in mix] or [(None, cfg.data)]
    out: list[SourcePlan] = []
    sent: counters.Counts = {}
    for e, data_cfg in items:
        try:
            before = counters.hub_counts()
            src = open_source(data_cfg)
            after = counters.hub_counts()
            src.plan(data_cfg.val_docs, 1)  # every footer, as rank 0 reads them
        except UserError as err:
            raise (source_error(e, err) if e is not None else err) from None
        sent = {k: sent.get(k, 0) + after[k] - before.get(k, 0) for k in after}
        out.append(SourcePlan(e.name if e else "", str(data_cfg.data), e.weight if e else 1.0,
                              e.max_epochs if e else 0, data_facts(src, data_cfg.val_docs)))
    return out, sent


def disk_free(path: str) -> int:
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def data_lines(cfg: RunConfig, sources: list[SourcePlan]) -> list[str]:
    need = cfg.train.max_steps * cfg.train.total_batch_size
    steps = f"{cfg.train.max_steps:,} steps x {cfg.train.total_batch_size:,} tokens/step"
    if len(sources) == 1 and not sources[0].name:
        facts = sources[0].facts
        epochs = need / facts.tokens if facts.tokens else math.inf
        return [f"data: {cfg.data.data} {_what(facts)}",
                f"tokens in the data: ~{facts.tokens:,} (estimated: {facts.text_bytes:,} bytes of text from "
                f"{facts.how} / {BYTES_PER_TOKEN} bytes per GPT-2 token)",
                f"tokens the run needs: {need:,} = {steps}: {epochs:.2f} epochs of the data"]
    lines = [f"data: a mixture of {len(sources)} sources ({cfg.data.data}); tokens the run needs: {need:,} = {steps}, "
             f"shared by weight (tokens in the data estimated at {BYTES_PER_TOKEN} bytes per GPT-2 token)"]
    for s in sources:
        f = s.facts
        epochs = need * s.weight / f.tokens if f.tokens else math.inf
        cap = f"; max_epochs {s.max_epochs}: dropped after {s.max_epochs}" if s.max_epochs else ""
        lines.append(f"  {s.name} ({100 * s.weight:.1f}%): {s.data} {_what(f)}; ~{f.tokens:,} tokens; needs "
                     f"{need * s.weight:,.0f}: {epochs:.2f} epochs{cap}")
    return lines


def _what(facts: DataFacts) -> str:
    groups = f", {facts.row_groups:,} row groups, {facts.rows:,} documents" if facts.row_groups else ""
    return f"(revision {facts.revision or 'local files'}): {facts.files:,} files{groups}"


def request_lines(req: Requests, sources: list[SourcePlan], readers: int, nnodes: int) -> list[str]:
    if req == Requests(0, 0, 0):
        return ["Hub requests: none (local files)"]
    reading = sum(min(s.facts.files, readers) for s in sources if s.facts.revision)
    hub = sum(1 for s in sources if s.facts.revision)
    each = f" for each of {hub} Hub sources" if hub > 1 else ""
    lines = [f"Hub requests at start-up (one 5-minute window, the whole job): api {req.startup_api}, resolver "
             f"{req.startup_resolver} (the resolution{each}, then one footer per file; the other processes get the "
             "signed URLs with the source)",
             f"Hub requests in steady state per 5 minutes: api 0, resolver {req.steady_resolver} (signed-URL "
             f"refreshes: {reading} files read at once x {nnodes} node(s) / a {URL_TTL_S // 60}-"
             f"minute URL lifetime); data reads go to the CDN (no quota)"]
    for tier, verdict in verdicts(req).items():
        q = QUOTAS[tier]
        lines.append(f"  {tier:<10} (api {q[0]:,} / resolver {q[1]:,} per 5 min): {verdict}")
    return lines


def disk_lines(cfg: RunConfig) -> tuple[list[str], list[str]]:
    one = checkpoint_bytes(cfg)
    keep = cfg.eval.keep_last
    peak = one * (keep + 1)  # the next one is written before the oldest is deleted
    free = disk_free(cfg.train.out_dir)
    lines = [f"checkpoint: {gib(one)} each; --keep-last {keep} needs {gib(peak)} at peak (one more while writing); "
             f"{gib(free)} free under {cfg.train.out_dir}"]
    problems = [f"the checkpoints need {gib(peak)} but {cfg.train.out_dir} has {gib(free)} free: lower --keep-last "
                f"or choose another --out-dir"] if peak > free else []
    return lines, problems


def memory_lines(cfg: RunConfig, world: int) -> tuple[list[str], list[str]]:
    """The per-GPU estimate in bf16 (as on a recent GPU), and whether it fits the GPU visible here, if any."""
    from gpt2stream.distributed import pick_device
    from gpt2stream.memory import startup_lines, visible_gpu

    lines = startup_lines(cfg, world, True, visible_gpu(pick_device(cfg.train.device)))
    problems = [ln for ln in lines if "does NOT fit" in ln]
    return ["per GPU: " + ln for ln in lines], problems


def plan_report(cfg: RunConfig, nproc: int, nnodes: int) -> tuple[str, list[str], Requests]:
    """The plan's text, the reasons it cannot work (empty: it can) and the predicted requests."""
    from gpt2stream.data.sharding import readers_per_rank
    from gpt2stream.train.settings import grad_accum_steps

    world = nproc * nnodes
    problems: list[str] = []
    try:
        accum = grad_accum_steps(cfg.train.total_batch_size, cfg.train.batch_size, cfg.data.seq_len, world)
    except UserError as e:
        problems.append(str(e))
        accum = 0
    sources, resolution = open_like_rank0(cfg)
    readers = world * readers_per_rank(cfg.data.num_workers)
    req = predict_requests(resolution, sources, readers, nnodes)
    disk, disk_problems = disk_lines(cfg)
    mem, mem_problems = memory_lines(cfg, world)
    lines = [f"plan for {nnodes} node(s) x {nproc} process(es) = {world} ranks, {readers} data readers; "
             f"{accum} micro-steps of {cfg.train.batch_size} x {cfg.data.seq_len} per rank per step",
             *data_lines(cfg, sources), *request_lines(req, sources, readers, nnodes), *disk, *mem]
    if all(v != "ok" for v in verdicts(req).values()):
        problems.append("the Hub requests exceed every tier's quota: pre-download the data or use a mirror")
    problems += disk_problems + mem_problems
    verdict = "plan: OK" if not problems else "plan: cannot work: " + "; ".join(problems)
    return "\n".join([*lines, verdict]) + "\n", problems, req
