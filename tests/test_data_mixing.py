"""Block-level mixing on data where two documents (whole novels, one file each) hold half the tokens among ~1000
short ones (bench/bench_shuffle.py builds it): no stretch of consecutive steps is dominated by one document, and a
tiny model trained on the pipeline's order ends within noise of the same data in a global random block order."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_shuffle import build_data, mixing, training  # noqa: E402


@pytest.fixture(scope="module")
def long_docs_data(tmp_path_factory):
    """From ../shared/corpus where it is present, else from the demo corpus shipped in the package."""
    from tests.conftest import SHARED_CORPUS

    return build_data(tmp_path_factory.mktemp("mixing"), corpus_dir=SHARED_CORPUS)


@pytest.mark.slow
def test_one_document_never_fills_a_stretch_of_steps(long_docs_data):
    res = mixing(long_docs_data, steps=600, window=8)
    ours, before, rand = (res[k][0] for k in ("pipeline", "no mixing (1 stream, no block buffer)",
                                              "random global block order"))
    assert rand > 0.3, res  # the long documents are a large share of any random stretch of steps
    assert before > 0.95, res  # packed one after another, a novel fills whole stretches of steps
    assert ours <= 2 / 16 + 0.01 and ours < rand / 2, res  # at most 1/C (2/C across an epoch boundary)


@pytest.mark.slow
def test_training_on_the_pipeline_is_within_noise_of_a_global_block_order(long_docs_data):
    res = training(long_docs_data, steps=100, seeds=(1337, 1338), total_batch_size=1024, unmixed=False)
    ours, ref = statistics.mean(res["pipeline"]), statistics.mean(res["global block order"])
    spread = max(abs(a - b) for a, b in (res["pipeline"], res["global block order"]))
    assert abs(ours - ref) < max(0.15, 2 * spread), res
