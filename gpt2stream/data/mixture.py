"""A weighted mixture of data sources: what ``--data`` names when it is a mixture file or the one-line form.

A mixture file (``.yaml``/``.yml`` or ``.json``) holds a top-level ``sources:`` list::

    sources:
      - data: HuggingFaceFW/fineweb-edu      # a Hub dataset id, a local path or glob, or demo
        weight: 0.8
      - data: ./mine/*.jsonl
        name: mine                           # default: derived from data
        text_column: content                 # default: the run's --text-column
        weight: 0.2
        val_docs: 500                        # default: the run's --val-docs
        max_epochs: 3                        # default 0: no limit

Other keys per source: ``config``, ``split``, ``revision`` (Hub), ``id_column``. A key left out takes the run's
flag. The one-line form ``--data 'HuggingFaceFW/fineweb-edu@0.8,./mine/*.jsonl@0.2'`` is the same with every other
key left out. The resolved mixture (names given, weights normalised to sum 1, revisions pinned once opened) is
``DataConfig.mixture``: a list of ``MixEntry.to_dict()``, saved in config.json and every checkpoint.

Pure: parsing reads the mixture file and nothing else (opening the sources is data/open.py's job).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2stream.config import DataConfig, RunConfig
from gpt2stream.errors import UserError

SUFFIXES = (".yaml", ".yml", ".json")
# file key -> MixEntry field
KEYS = {"data": "data", "name": "name", "config": "data_config", "split": "split", "revision": "revision",
        "text_column": "text_column", "id_column": "id_column", "weight": "weight", "val_docs": "val_docs",
        "max_epochs": "max_epochs"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # goes into metric keys (val/<name>) and file names
# owner/name, as a Hub dataset id is written (a local path: ./x, /x, globs, files with a data suffix)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$(?<!\.parquet)(?<!\.jsonl)(?<!\.json)(?<!\.txt)(?<!\.md)")
_WEIGHT_TAIL = re.compile(r"^(?P<data>.+)@(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


@dataclass(frozen=True)
class MixEntry:
    """One source of a mixture, resolved: every field set (the run's flags filled in), ``weight`` normalised."""

    name: str
    data: str  # Hub dataset id, local path / directory / glob, or a named source (demo)
    weight: float  # share of the trained tokens, the weights of a mixture sum to 1
    data_config: str
    split: str
    revision: str  # Hub: branch, tag or sha asked for; the commit sha once the job opened it ("" = main / local)
    text_column: str
    id_column: str
    val_docs: int
    max_epochs: int = 0  # drop the source from the mixture once it has been read this many times (0 = never)

    def to_dict(self) -> dict[str, Any]:
        """The saved form (the mixture file's keys)."""
        by_field = {f: k for k, f in KEYS.items()}
        return {by_field[f.name]: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixEntry:
        return cls(**{KEYS[k]: v for k, v in d.items()})

    def data_cfg(self, run: DataConfig) -> DataConfig:
        """The run's DataConfig for this source alone (what a single-source run of it would use)."""
        return dataclasses.replace(run, data=self.data, data_config=self.data_config, split=self.split,
                                   data_revision=self.revision, text_column=self.text_column,
                                   id_column=self.id_column, val_docs=self.val_docs, mixture=[])


def is_mixture_spec(data: str) -> bool:
    """Whether ``--data`` names a mixture: a mixture file, or the one-line ``DATA@WEIGHT,DATA@WEIGHT`` form.

    >>> is_mixture_spec("mix.yaml"), is_mixture_spec("a/b@0.5,c.jsonl@0.5"), is_mixture_spec("HuggingFaceFW/x")
    (True, True, False)
    """
    s = data.strip()
    if s.lower().endswith(SUFFIXES):
        return True
    weighted = [bool(_WEIGHT_TAIL.match(p.strip())) for p in s.split(",") if p.strip()]
    # every part DATA@W, or a list with some weights (then the one-line parse names the part without one)
    return bool(weighted) and (all(weighted) or (len(weighted) > 1 and any(weighted)))


def entries(cfg: DataConfig) -> tuple[MixEntry, ...]:
    """The resolved mixture of a DataConfig; () when the run reads one source."""
    return tuple(MixEntry.from_dict(d) for d in cfg.mixture)


def resolve(cfg: DataConfig) -> DataConfig:
    """``cfg`` with ``mixture`` parsed from ``cfg.data`` when it names a mixture (else ``cfg`` unchanged)."""
    if not is_mixture_spec(str(cfg.data)):
        return cfg
    mix = parse_mixture(str(cfg.data), cfg)
    return dataclasses.replace(cfg, mixture=[e.to_dict() for e in mix])


def for_run(cfg: RunConfig, data_given: bool) -> RunConfig:
    """The run's mixture, resolved where it is decided: a new run resolves ``--data``; a resume keeps the
    checkpoint's saved mixture (its pinned shas) unless ``--data`` is given again (``data_given``), which must then
    name the same mixture (UserError saying what differs). A resume may still ask a source's revision: the job
    checks that it names the pinned sha."""
    if not cfg.train.resume:
        return dataclasses.replace(cfg, data=resolve(dataclasses.replace(cfg.data, mixture=[])))
    if not data_given:
        return cfg
    saved = entries(cfg.data)
    new = entries(resolve(dataclasses.replace(cfg.data, mixture=[])))
    diff = mixture_changes(saved, new)
    if diff:
        what = "; ".join(diff[:3]) + (f" (and {len(diff) - 3} more)" if len(diff) > 3 else "")
        raise UserError(f"cannot resume: --data {cfg.data.data} is not the data this run trained on ({what}); drop "
                        f"--data to resume on the run's own data, or start a new run with another --out-dir")
    if not saved:
        return cfg
    asked = {e.name: e.revision for e in new}
    merged = [{**e.to_dict(), "revision": asked[e.name] or e.revision} for e in saved]
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mixture=merged))


def mixture_changes(saved: tuple[MixEntry, ...], new: tuple[MixEntry, ...]) -> list[str]:
    """What differs between the mixture a run trained on and one given again on resume (revisions aside: a
    resume reads the pinned shas). [] when they are the same mixture or both are single sources.

    >>> a = MixEntry("web", "org/web", 0.5, "default", "train", "abc", "text", "id", 10)
    >>> b = dataclasses.replace(a, name="code", data="org/code")
    >>> mixture_changes((a, b), (dataclasses.replace(a, revision=""), dataclasses.replace(b, weight=0.6)))
    ['source code: weight 0.5 -> 0.6']
    """
    if not saved and not new:
        return []
    if not saved or not new:
        return ["a single source then, a mixture now" if new else "a mixture then, a single source now"]
    if [e.name for e in saved] != [e.name for e in new]:
        return [f"sources {[e.name for e in saved]} -> {[e.name for e in new]}"]
    out = []
    for old, now in zip(saved, new, strict=True):
        for f in dataclasses.fields(MixEntry):
            a, b = getattr(old, f.name), getattr(now, f.name)
            same = math.isclose(a, b, rel_tol=1e-9) if f.name == "weight" else a == b
            if f.name != "revision" and not same:
                out.append(f"source {old.name}: {f.name} {a!r} -> {b!r}" if f.name != "weight"
                           else f"source {old.name}: weight {a:.4g} -> {b:.4g}")
    return out


def parse_mixture(data: str, run: DataConfig) -> tuple[MixEntry, ...]:
    """The resolved sources of a mixture file or one-line form; UserError (one line) naming what is wrong."""
    if data.strip().lower().endswith(SUFFIXES):
        raw, where = _read_file(Path(data.strip())), data.strip()
    else:
        raw, where = _one_line(data), "--data"
    if not raw:
        raise UserError(f"mixture {where} lists no sources; give at least one under 'sources:'")
    if run.data_revision:
        raise UserError(f"--data-revision {run.data_revision!r} does not apply to a mixture: set 'revision:' on "
                        f"each Hub source in {where} instead")
    out = [_entry(i, item, run, where) for i, item in enumerate(raw)]
    names = [e.name for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        fix = ("give each a different 'name:'" if where != "--data" else
               "write a mixture file to give each a different 'name:'")
        raise UserError(f"mixture {where}: two sources are named {dup[0]!r}; {fix}")
    total = math.fsum(e.weight for e in out)
    return tuple(dataclasses.replace(e, weight=e.weight / total) for e in out)


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise UserError(f"--data {path}: no such mixture file; check the path (a .yaml/.yml/.json --data names a "
                        f"mixture file)")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise UserError(f"mixture file {path} is not valid {path.suffix.lstrip('.').upper()}: "
                        f"{parse_problem(e)}") from None
    if not isinstance(doc, dict) or set(doc) != {"sources"} or not isinstance(doc["sources"], list):
        found = (sorted(doc) if isinstance(doc, dict) else "an empty file" if doc is None
                 else f"a {type(doc).__name__}")
        raise UserError(f"mixture file {path} must hold one top-level key 'sources:' with a list of sources "
                        f"(found {found})")
    return doc["sources"]


def parse_problem(e: Exception) -> str:
    r"""What a YAML/JSON parser found wrong and where, in one line (a YAML error's first line is only its context:
    'while scanning for the next token').

    >>> import yaml
    >>> try:
    ...     yaml.safe_load("sources:\n\t- data: demo\n")
    ... except yaml.YAMLError as e:
    ...     print(parse_problem(e))
    found character '\t' that cannot start any token (line 2, column 1); indent with spaces: YAML allows no tabs
    """
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if not problem:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    tab = "; indent with spaces: YAML allows no tabs" if "'\\t'" in problem else ""
    return f"{problem}{where}{tab}"


def _one_line(data: str) -> list[dict[str, Any]]:
    out = []
    for part in (p.strip() for p in data.split(",")):
        m = _WEIGHT_TAIL.match(part)
        if not m:
            raise UserError(f"--data {data!r}: {part!r} is not DATA@WEIGHT; write each source as DATA@WEIGHT, "
                            f"separated by commas (or use a mixture file)")
        out.append({"data": m["data"].strip(), "weight": float(m["w"])})
    return out


def default_name(data: str) -> str:
    """A source's name from what it reads: a Hub id's dataset name, a path's last plain part without extension.

    >>> default_name("HuggingFaceFW/fineweb-edu"), default_name("./mine/*.jsonl"), default_name("demo")
    ('fineweb-edu', 'mine', 'demo')
    """
    plain = [p for p in Path(data.strip()).parts if not any(c in p for c in "*?[") and p not in (".", "..", "/")]
    last = plain[-1] if plain else "source"
    stem = last.split(".")[0] if "." in last and not last.startswith(".") else last
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "source"
    return name if name[0].isalnum() else "s" + name


def _entry(i: int, item: Any, run: DataConfig, where: str) -> MixEntry:
    if isinstance(item, str):
        item = {"data": item}
    if not isinstance(item, dict):
        raise UserError(f"mixture {where}: source {i + 1} is {type(item).__name__}, not a mapping with 'data:' "
                        f"and 'weight:'")
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise UserError(f"mixture {where}: source {i + 1} has unknown key {unknown[0]!r}; the keys are "
                        f"{', '.join(KEYS)}")
    if not str(item.get("data") or "").strip():
        raise UserError(f"mixture {where}: source {i + 1} has no 'data:' (a Hub dataset id, local path or glob)")
    data = str(item["data"]).strip()
    if is_mixture_spec(data) and data.lower().endswith(SUFFIXES):
        raise UserError(f"mixture {where}: source {i + 1} ({data}) is itself a mixture file; list its sources "
                        f"directly")
    name = str(item.get("name") or default_name(data))
    label = f"mixture {where}: source {name!r}"
    if not _NAME.match(name):
        raise UserError(f"{label}: the name must be letters, digits, '_', '.' or '-' (it names metrics and files)")
    weight = _number(item.get("weight", 1.0), f"{label}: weight")
    if not (math.isfinite(weight) and weight > 0):
        raise UserError(f"{label}: weight {item.get('weight')!r} must be a positive number")
    val_docs, max_epochs = (_count(item.get(k, dflt), f"{label}: {k}")
                            for k, dflt in (("val_docs", run.val_docs), ("max_epochs", 0)))
    return MixEntry(name=name, data=data, weight=weight,
                    data_config=str(item.get("config") or run.data_config), split=str(item.get("split") or run.split),
                    revision=str(item.get("revision") or ""),
                    text_column=str(item.get("text_column") or run.text_column),
                    id_column=str(item.get("id_column") or run.id_column), val_docs=val_docs, max_epochs=max_epochs)


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool):
        raise UserError(f"{what} {v!r} must be a positive number")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise UserError(f"{what} {v!r} must be a positive number") from None


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UserError(f"{what} {v!r} must be a whole number >= 0")
    return v


def source_error(e: MixEntry, err: Exception) -> Exception:
    """``err`` (a UserError raised opening one source) saying which source of the mixture it is about, with the
    flag advice turned into the mixture file's key (that source's text_column is not --text-column's).

    >>> e = MixEntry("code", "org/code", 1.0, "default", "train", "", "text", "id", 0)
    >>> str(source_error(e, ValueError("f.parquet has no column 'text'; set --text-column")))
    "mixture source 'code' (org/code): f.parquet has no column 'text'; set text_column: for this source in the mixture"
    """
    msg = str(err)
    for flag, key in (("--text-column", "text_column"), ("--data-revision", "revision"), ("--data-config", "config"),
                      ("--split", "split"), ("--val-docs", "val_docs")):
        msg = msg.replace(f"set {flag}", f"set {key}: for this source in the mixture")
    msg = msg.replace("drop --data-revision", "drop this source's revision: from the mixture")
    msg = msg.replace("lower --val-docs", "lower val_docs: for this source in the mixture")
    return type(err)(f"mixture source {e.name!r} ({e.data}): {msg}")


def describe(mix: tuple[MixEntry, ...]) -> str:
    """The resolved mixture as start-up lines: name, share, what it reads and how.

    >>> e = MixEntry("web", "org/web", 0.75, "default", "train", "", "text", "id", 100)
    >>> print(describe((e, dataclasses.replace(e, name="mine", data="./mine/*.jsonl", revision=""))))
    mixture of 2 sources:
      web    75.0%  org/web (config default, split train, text 'text', val_docs 100)
      mine   75.0%  ./mine/*.jsonl (text 'text', val_docs 100)
    """
    width = max(len(e.name) for e in mix)
    lines = [f"mixture of {len(mix)} source{'s' if len(mix) != 1 else ''}:"]
    for e in mix:
        hub = f"config {e.data_config}, split {e.split}, " if _HUB_ID.match(e.data) else ""  # local: no config
        rev = f"revision {e.revision}, " if e.revision else ""
        cap = f", max_epochs {e.max_epochs}" if e.max_epochs else ""
        lines.append(f"  {e.name:<{width}}  {100 * e.weight:5.1f}%  {e.data} ({hub}{rev}text {e.text_column!r}, "
                     f"val_docs {e.val_docs}{cap})")
    return "\n".join(lines)
