"""The sources' seam: a new kind of file is one Source subclass plus one line in gpt2stream.data.sources.KINDS. A toy
CSV reader defined here is registered, then read by the data path and trained on through run_train.py."""

from __future__ import annotations

import csv
import doctest
import io
import subprocess
import sys

import pytest

from gpt2stream.config import DataConfig
from gpt2stream.data import iter_documents, val_documents
from gpt2stream.data.open import open_source
from gpt2stream.data.sources import KINDS, HandleCache, Plan, Row, Source, Unit
from gpt2stream.errors import UserError
from tests.test_train_common import ROOT, TINY, env


class CsvSource(Source):
    """CSV files with a header row: a unit is ``ROWS`` consecutive rows; validation: the last file's first rows."""

    kind = "csv"
    ROWS = 4

    def _rows(self, i: int) -> list[tuple[str, str]]:
        cache = self.__dict__.setdefault("rows", {})
        if i not in cache:
            with self.files[i].open() as fh:
                reader = csv.DictReader(io.StringIO(fh.read().decode("utf-8")))
                cache[i] = [(r[self.text_column], r.get(self.id_column) or f"{self.files[i].name}:{k}")
                            for k, r in enumerate(reader)]
        return cache[i]

    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        last, units = len(self.files) - 1, []
        for i in range(len(self.files)):
            n = len(self._rows(i))
            start = val_docs if i == last else 0
            units += [Unit(i, part, lo, min(n, lo + self.ROWS)) for part, lo in enumerate(range(start, n, self.ROWS))]
        return Plan(tuple(units), last if val_docs else -1, val_docs, 0)

    def read_unit(self, unit: Unit, handles: HandleCache | None = None) -> list[Row]:
        return [Row(t, d) for t, d in self._rows(unit.file)[unit.lo:unit.hi]]

    def read_val(self, plan: Plan) -> list[Row]:
        return [] if plan.val_file < 0 else [Row(t, d) for t, d in self._rows(plan.val_file)[:plan.val_rows]]


def write_csvs(root, files: int = 2, rows: int = 40):
    """CSV files whose texts hold commas, quotes and newlines (so only a real CSV reader gets them right)."""
    root.mkdir()
    for f in range(files):
        with open(root / f"part{f}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            for r in range(rows):
                w.writerow([f"d{f}-{r}", f'Row {r} of file {f}, "quoted", with a comma.\nA second line of {r}.'])
    return root


def test_the_extension_table_is_one_and_documented():
    import gpt2stream.data.sources as sources

    assert [k for k, v in KINDS.items() if v.kind == "txt"] == [".txt", ".text", ".md"]  # the README lists .md
    assert doctest.testmod(sources).failed == 0 and doctest.testmod(sources).attempted > 0


def test_a_registered_kind_is_read_by_the_data_path(tmp_path, monkeypatch):
    data = write_csvs(tmp_path / "csv")
    with pytest.raises(UserError, match="holds no .parquet, .jsonl"):
        open_source(DataConfig(data=str(data)))
    monkeypatch.setitem(KINDS, ".csv", CsvSource)  # the one line a new kind adds
    cfg = DataConfig(data=str(data), val_docs=3)
    src = open_source(cfg)
    assert isinstance(src, CsvSource) and [f.name.rsplit("/", 1)[-1] for f in src.files] == ["part0.csv", "part1.csv"]
    text = 'Row {r} of file {f}, "quoted", with a comma.\nA second line of {r}.'
    assert val_documents(cfg) == [text.format(r=r, f=1) for r in range(3)]
    train = list(iter_documents(cfg))
    assert len(train) == 40 + 37 and train[0] == text.format(r=0, f=0) and train[-1] == text.format(r=39, f=1)


@pytest.mark.slow
def test_run_train_trains_on_a_registered_kind(tmp_path):
    data = write_csvs(tmp_path / "csv", rows=60)
    out = tmp_path / "run"
    script = ("import sys\nfrom gpt2stream.data.sources import KINDS\nfrom tests.test_data_kinds import CsvSource\n"
              "KINDS['.csv'] = CsvSource\nimport run_train\nsys.exit(run_train.main(sys.argv[1:]))\n")
    args = [*TINY, "--data", str(data), "--num-workers", "0", "--eval-every", "0", "--max-steps", "2",
            "--out-dir", str(out)]
    p = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env(), cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 2
