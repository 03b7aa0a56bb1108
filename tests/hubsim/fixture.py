"""The repository builders: a FineWeb-Edu-shaped dataset repo written on disk (parquet files, README config
YAML), and what it holds (RepoFixture)."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REPO = "HuggingFaceFW/fineweb-edu"

SCHEMA_COLUMNS = (
    "text", "id", "dump", "url", "file_path", "language", "language_score", "token_count", "score", "int_score",
)
SAMPLE_DUMPS = ("CC-MAIN-2013-20", "CC-MAIN-2019-35", "CC-MAIN-2024-10")


@dataclass
class RepoFixture:
    """A dataset repo written on disk by build_fineweb_repo."""

    root: Path
    configs: dict[str, str]                        # config name -> data_files glob (split "train")
    file_ids: dict[str, list[str]] = field(default_factory=dict)   # repo path -> ids in row order
    row_groups: dict[str, list[int]] = field(default_factory=dict)  # repo path -> rows per row group

    def files(self, config: str = "sample-10BT") -> list[str]:
        pattern = _glob_regex(self.configs[config])
        return sorted(p for p in self.file_ids if pattern.fullmatch(p))

    def ids(self, config: str = "sample-10BT") -> list[str]:
        return [i for f in self.files(config) for i in self.file_ids[f]]

    def texts(self, config: str = "sample-10BT", column: str = "text") -> list:
        import pyarrow.parquet as pq

        return [v for f in self.files(config) for v in pq.read_table(self.root / f, columns=[column])[column]
                .to_pylist()]


def _glob_regex(pattern: str) -> re.Pattern:
    out = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(out)


_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if can more no will out so up said what "
    "its about into than them only other new some time could these two may first then do any like my now over "
    "such our man me even most made after also did many before must through back years where much your way well "
    "down should because each just those people how too little state good very make world still own see men work "
    "long here get both between life being under never day same another know while last might great old year off "
    "come since against go came right used take three water energy students learning history science children "
    "health research system school teachers plants climate river city education language number process example"
).split()


def _generated_paragraphs(rng: random.Random, n: int) -> list[str]:
    """English-like filler used when ../shared/corpus is absent (a user's fresh clone)."""
    paras = []
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]  # Zipf-like: function words dominate, as in English
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(2, 6)):
            words = rng.choices(_WORDS, weights, k=rng.randint(6, 20))
            sents.append(" ".join(words).capitalize() + rng.choice(".....?!"))
        paras.append(" ".join(sents))
    return paras


def _corpus_paragraphs(corpus_dir: Path | None) -> list[str]:
    if corpus_dir is None or not Path(corpus_dir).is_dir():
        return []
    paras: list[str] = []
    for name in ("fineweb_edu_sample.txt", "frankenstein.txt", "sherlock.txt"):
        p = Path(corpus_dir) / name
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            paras += [ln.strip() for ln in re.split(r"\n\s*\n|\n", text) if len(ln.strip()) >= 40]
    return paras


def _write_parquet(path: Path, docs: list[str], dump: str, rows_per_group: int, rng: random.Random,
                   seen_ids: set[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = []
    for _ in docs:
        while True:
            i = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"
            if i not in seen_ids:
                break
        seen_ids.add(i)
        ids.append(i)
    scores = [round(rng.uniform(2.5, 5.0), 4) for _ in docs]
    cols = {
        "text": pa.array(docs, pa.string()),
        "id": pa.array(ids, pa.string()),
        "dump": pa.array([dump] * len(docs), pa.string()),
        "url": pa.array([f"http://example{rng.randint(0, 999)}.org/page/{k}" for k in range(len(docs))],
                        pa.string()),
        "file_path": pa.array([f"s3://commoncrawl/crawl-data/{dump}/segments/{rng.randint(10**12, 10**13)}"
                               f"/warc/CC-MAIN-{k:05d}.warc.gz" for k in range(len(docs))], pa.string()),
        "language": pa.array(["en"] * len(docs), pa.string()),
        "language_score": pa.array([round(rng.uniform(0.85, 1.0), 4) for _ in docs], pa.float64()),
        "token_count": pa.array([max(1, len(d.split()) * 4 // 3) for d in docs], pa.int64()),
        "score": pa.array(scores, pa.float64()),
        "int_score": pa.array([int(round(s)) for s in scores], pa.int64()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=rows_per_group)
    return ids


def build_fineweb_repo(
    root: Path,
    *,
    n_files: int = 4,
    row_groups: int = 3,
    rows_per_group: int = 40,
    dump_files: int = 1,
    corpus_dir: Path | None = None,
    seed: int = 0,
    paragraphs_per_doc: tuple[int, int] = (1, 6),
) -> RepoFixture:
    """Write a FineWeb-Edu-shaped dataset repo into ``root`` and describe it.

    Layout (like the real one): README.md with YAML ``configs`` -> ``sample-10BT`` = ``sample/10BT/*`` (``n_files``
    parquet files of ``row_groups`` x ``rows_per_group`` rows), one config per dump ``CC-MAIN-...`` =
    ``data/<dump>/*`` (``dump_files`` smaller files each) and ``default`` = ``data/*/*``. Text comes from
    ``corpus_dir`` (../shared/corpus) when given and present, else generated English-like text. Ids are unique.
    """
    root = Path(root)
    rng = random.Random(seed)
    paras = _corpus_paragraphs(corpus_dir) or _generated_paragraphs(rng, 2000)
    cursor = rng.randrange(len(paras))

    def make_docs(n: int) -> list[str]:
        nonlocal cursor
        docs = []
        for _ in range(n):
            k = rng.randint(*paragraphs_per_doc)
            docs.append("\n".join(paras[(cursor + j) % len(paras)] for j in range(k)))
            cursor = (cursor + k) % len(paras)
        return docs

    configs = {"default": "data/*/*", "sample-10BT": "sample/10BT/*"}
    configs.update({d: f"data/{d}/*" for d in SAMPLE_DUMPS})
    fx = RepoFixture(root=root, configs=configs)
    seen: set[str] = set()
    for i in range(n_files):
        rel = f"sample/10BT/{i:03d}_00000.parquet"
        n = row_groups * rows_per_group
        fx.file_ids[rel] = _write_parquet(root / rel, make_docs(n), SAMPLE_DUMPS[i % len(SAMPLE_DUMPS)],
                                          rows_per_group, rng, seen)
        fx.row_groups[rel] = [rows_per_group] * row_groups
    for d in SAMPLE_DUMPS:
        for i in range(dump_files):
            rel = f"data/{d}/{i:03d}_00000.parquet"
            fx.file_ids[rel] = _write_parquet(root / rel, make_docs(2 * 10), d, 10, rng, seen)
            fx.row_groups[rel] = [10, 10]

    yaml_configs = []
    for name, pattern in configs.items():
        yaml_configs.append(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {pattern}")
    readme = (
        "---\nlicense: odc-by\ntask_categories:\n- text-generation\nlanguage:\n- en\npretty_name: FineWeb-Edu "
        "(test fixture)\nsize_categories:\n- n>1T\nconfigs:\n" + "\n".join(yaml_configs) + "\n---\n\n"
        "# FineWeb-Edu (test fixture)\n\nA small FineWeb-Edu-shaped dataset served by tests/hubserver.py.\n"
    )
    (root / "README.md").write_text(readme, encoding="utf-8")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    return fx
