"""The frozen spec of a run's token stream: everything that decides which tokens step s trains, and nothing else.

A ``StreamSpec`` is built once per loader (``StreamSpec.build``) from the DataConfig, the seed, the tokenizer, the
blocks of a step and the opened source's plan. The readers take it instead of a dozen positional values; the
layout (rank, world size, DataLoader workers, micro-batch) comes beside it, because it only decides who computes
which block. A saved loader state carries ``fingerprint()``; a resume refuses a state whose fingerprint differs, and
names each field that changed (``changes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpt2stream.config import DataConfig
from gpt2stream.data import streams as S
from gpt2stream.data.shuffle import stream_block_buffer, stream_window
from gpt2stream.data.sources.base import Plan, Source
from gpt2stream.data.validate import tokenizer_identity
from gpt2stream.errors import UserError
from tokenizer import Tokenizer

# The fields a saved state must match to mean the same global batch sequence (the keys of a saved fingerprint).
FINGERPRINT = ("data", "data_config", "split", "text_column", "txt_docs", "seq_len", "shuffle_buffer", "block_buffer",
               "val_docs", "seed", "tokenizer", "num_units", "streams", "blocks_per_step")
# What a mixture's fingerprint holds of each source (``mixture``: a list of these, in the mixture's order; a
# single-source fingerprint has no ``mixture`` key, so it stays what it always was).
SOURCE_FINGERPRINT = ("name", "data", "data_config", "split", "text_column", "val_docs", "num_units", "weight",
                      "max_epochs")
MIXTURE = "mixture"  # the ``data`` of a mixture's spec: the sources are in ``mixture``


@dataclass(frozen=True)
class SourceSpec:
    """One source of a mixture as the stream reads it (``revision``, ``kind`` and ``id_column`` describe it but are
    not in the fingerprint, as for a single source)."""

    name: str
    data: str
    data_config: str
    split: str
    text_column: str
    val_docs: int
    num_units: int
    weight: float  # normalised: the weights of a mixture sum to 1
    max_epochs: int  # 0 = no limit
    id_column: str = "id"
    kind: str = ""
    revision: str = ""

    def fingerprint(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SOURCE_FINGERPRINT}


@dataclass(frozen=True)
class StreamSpec:
    """What defines the token stream of a run. ``id_column``, ``kind`` and ``revision`` describe the source but
    are not in the fingerprint: ids only label documents, the kind follows from ``data``, and the dataset revision
    is pinned and checked by the run itself (job.check_pinned_revision)."""

    data: str  # DataConfig.data: Hub dataset id or local path
    data_config: str
    split: str
    text_column: str
    txt_docs: str
    seq_len: int
    shuffle_buffer: int  # documents per shuffle window of the whole run (shared out among the streams)
    block_buffer: int  # packed blocks mixed together (shared out among the streams)
    val_docs: int
    seed: int
    tokenizer: str  # the tokenizer's identity
    num_units: int  # training units of the plan (row groups or pieces)
    streams: int  # canonical streams, resolved (never 0)
    blocks_per_step: int  # total_batch_size / seq_len
    id_column: str = "id"
    kind: str = ""  # "parquet", "jsonl" or "txt"
    revision: str = ""  # commit sha of a Hub dataset ("" for local files)
    mixture: tuple[SourceSpec, ...] = ()  # the sources of a mixture, in its order (() = one source)

    @classmethod
    def build(cls, data_cfg: DataConfig, *, blocks_per_step: int, seed: int, tokenizer: Tokenizer, source: Source,
              plan: Plan) -> StreamSpec:
        """The spec of a canonical-stream run; ``data_cfg.streams`` 0 resolves to the largest divisor of the step's
        blocks that the plan's units allow. UserError when the data has fewer units than streams."""
        units = len(plan.units)
        if units == 0:
            held = f", or all of them held out by --val-docs {data_cfg.val_docs}" if data_cfg.val_docs else ""
            raise UserError(f"the training data {data_cfg.data} holds no documents to train on (no rows{held}); "
                            f"check the files" + (", or lower --val-docs" if held else ""))
        streams = data_cfg.streams or S.default_streams(blocks_per_step, units)
        if units < streams:
            what = "row groups" if source.kind == "parquet" else "pieces"
            raise UserError(f"the training data has {units} {what} but the run has {streams} canonical "
                            f"streams, each needing at least one; use --streams {units} or less (a divisor of "
                            f"{blocks_per_step}), or more / larger data files")
        return cls(**source_identity(data_cfg, seed=seed, tokenizer=tokenizer, source=source, plan=plan),
                   block_buffer=int(data_cfg.block_buffer), streams=int(streams),
                   blocks_per_step=int(blocks_per_step))

    @classmethod
    def build_mixture(cls, data_cfg: DataConfig, *, blocks_per_step: int, seed: int, tokenizer: Tokenizer,
                      sources: list[SourceSpec]) -> StreamSpec:
        """The spec of a mixture run: ``data_cfg.streams`` 0 resolves to the largest divisor of the step's blocks
        that every source's units allow. UserError naming the source that has too few units."""
        for src in sources:
            if src.num_units == 0:
                held = f", or all of them held out by val_docs {src.val_docs}" if src.val_docs else ""
                raise UserError(f"source {src.name} of the mixture ({src.data}) holds no documents to train on (no "
                                f"rows{held}); check its files" + (", or lower its val_docs" if held else ""))
        fewest = min(sources, key=lambda s: s.num_units)
        streams = data_cfg.streams or S.default_streams(blocks_per_step, fewest.num_units)
        if fewest.num_units < streams:
            raise UserError(f"source {fewest.name} of the mixture has {fewest.num_units} units (row groups or "
                            f"pieces) but the run has {streams} canonical streams, each reading every source; use "
                            f"--streams {fewest.num_units} or less (a divisor of {blocks_per_step}), or more / "
                            f"larger files for {fewest.name}")
        c = data_cfg
        return cls(data=MIXTURE, data_config="", split="", text_column="", txt_docs=str(c.txt_docs),
                   seq_len=c.seq_len, shuffle_buffer=c.shuffle_buffer, block_buffer=int(c.block_buffer), val_docs=0,
                   seed=seed, tokenizer=tokenizer_identity(tokenizer),
                   num_units=sum(s.num_units for s in sources), streams=int(streams),
                   blocks_per_step=int(blocks_per_step), id_column="", kind=MIXTURE, mixture=tuple(sources))

    # -- derived per canonical stream -----------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Blocks each stream gives per step (streams.check_streams has checked that streams divides them)."""
        return self.blocks_per_step // self.streams

    @property
    def window(self) -> int:
        """Documents per shuffle window of one stream."""
        return stream_window(self.shuffle_buffer, self.streams)

    @property
    def buffer_blocks(self) -> int:
        """Blocks in one stream's block buffer."""
        return stream_block_buffer(self.block_buffer, self.streams)

    # -- resume ---------------------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The identity saved with a loader state: plain python, the fields of FINGERPRINT (and a mixture's
        sources, SOURCE_FINGERPRINT each)."""
        fp = {k: v for k, v in dataclasses.asdict(self).items() if k in FINGERPRINT}
        if self.mixture:
            fp[MIXTURE] = [s.fingerprint() for s in self.mixture]
        return fp

    def changes(self, saved: dict[str, Any]) -> list[str]:
        """The fields where a saved fingerprint differs from this spec's (see ``changed_fields``); for a mixture,
        each source's changed field, named by the source."""
        now = self.fingerprint()
        out = changed_fields(saved, now, FINGERPRINT)
        if saved.get(MIXTURE) or self.mixture:
            out += mixture_changes(saved.get(MIXTURE) or [], now.get(MIXTURE) or [])
        return out


def changed_fields(saved: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """"name: saved X, now Y" for every key where two fingerprints differ (a key the saved one lacks differs).

    >>> changed_fields({"seed": 1, "seq_len": 8}, {"seed": 2, "seq_len": 8}, ("seed", "seq_len"))
    ['seed: saved 1, now 2']
    """
    return [f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in keys if saved.get(k) != now[k]]


def mixture_changes(saved: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """What differs between two mixtures' sources: the list of names, else each source's changed fields.

    >>> mixture_changes([{"name": "a", "weight": 0.5}], [{"name": "a", "weight": 0.6}])
    ['weight of source a: saved 0.5, now 0.6']
    """
    names_saved, names_now = [s.get("name") for s in saved], [s.get("name") for s in now]
    if names_saved != names_now:
        return [f"mixture sources: saved {names_saved}, now {names_now}"]
    return [f"{k} of source {b['name']}: saved {a.get(k)!r}, now {b[k]!r}"
            for a, b in zip(saved, now, strict=True) for k in b if a.get(k) != b[k]]


def source_identity(data_cfg: DataConfig, *, seed: int, tokenizer: Tokenizer, source: Source,
                    plan: Plan) -> dict[str, Any]:
    """The spec's fields that name the documents and their tokens (all but the canonical streams' layout)."""
    c = data_cfg
    return {
        "data": str(c.data), "data_config": str(c.data_config), "split": str(c.split), "text_column": c.text_column,
        "txt_docs": str(c.txt_docs), "seq_len": c.seq_len, "shuffle_buffer": c.shuffle_buffer, "val_docs": c.val_docs,
        "seed": seed, "tokenizer": tokenizer_identity(tokenizer), "num_units": len(plan.units),
        "id_column": str(c.id_column), "kind": str(source.kind), "revision": str(source.revision),
    }


def source_spec(entry: Any, source: Source, plan: Plan) -> SourceSpec:
    """A mixture source's spec from its MixEntry (data/mixture.py), opened source and plan."""
    return SourceSpec(name=str(entry.name), data=str(entry.data), data_config=str(entry.data_config),
                      split=str(entry.split), text_column=str(entry.text_column), val_docs=int(entry.val_docs),
                      num_units=len(plan.units), weight=float(entry.weight), max_epochs=int(entry.max_epochs),
                      id_column=str(entry.id_column), kind=str(source.kind), revision=str(source.revision))
