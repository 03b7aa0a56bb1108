"""Every training document exactly once per epoch in the document log (--log-docs), over several epochs and a resume
on another layout (1 x 2 workers -> 1 x 0, micro-batch 3), on parquet data whose id column has gaps (null or empty
ids: those rows are logged by where they are, never all as one "None") and with unusable texts (skipped). The same
on 2 processes (torchrun), after a kill -9, is tests/test_train_elastic.py's scenario (jsonl data)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gpt2stream.checkpoint import find_latest
from gpt2stream.data.doclog import read_log
from tests.test_train_common import TINY, WORDS, run

FILES, GROUPS, ROWS, VAL = 4, 6, 2, 4  # 24 units of 2 rows: 3 per canonical stream (8 streams), even progress


def make_parquet_set(d: Path) -> set[str]:
    """4 files x 6 row groups x 2 rows; returns the ids the log must show once per epoch (validation rows of the
    last file and unusable texts excluded). Every 7th row has a null or empty id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(3)
    expected: set[str] = set()
    d.mkdir()
    for f in range(FILES):
        path = d / f"part-{f}.parquet"
        texts, ids = [], []
        for r in range(GROUPS * ROWS):
            n = f * GROUPS * ROWS + r
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 45))).capitalize() + "."
            texts.append({5: None, 17: "", 29: "  \n"}.get(n, text))
            ids.append((None if n % 2 else "") if n % 7 == 3 else f"doc{n}")
            key = ids[-1] or f"{path}:{r // ROWS}:{r % ROWS}"
            if texts[-1] and texts[-1].strip() and not (f == FILES - 1 and r < VAL):
                expected.add(key)
        pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "text": texts}), path, row_group_size=ROWS)
    return expected


@pytest.mark.slow
def test_every_document_once_per_epoch_across_resumes_on_other_layouts(tmp_path):
    data = tmp_path / "pq"
    expected = make_parquet_set(data)
    assert len(expected) == FILES * GROUPS * ROWS - VAL - 3 and not any(k == "None" for k in expected)
    out = tmp_path / "run"
    common = ["--eval-every", "0", "--save-every", "18", "--log-docs", "--val-docs", str(VAL)]
    run([*TINY, "--data", str(data), *common, "--num-workers", "2", "--max-steps", "18", "--out-dir", str(out)])
    run(["--out-dir", str(out), "--resume", "--num-workers", "0", "--batch-size", "3", "--max-steps", "36"])

    per_epoch: dict[int, Counter] = defaultdict(Counter)
    for r in read_log(out):
        per_epoch[r["epoch"]].update(r["ids"])
    # epochs every canonical stream has left behind are complete (a stream emits all of epoch e before e+1)
    _, state = find_latest(out)
    done = min(int(s["epoch"]) for rank in state["ranks"] for s in rank["loader"]["streams"] if s is not None)
    assert done >= 3, f"only {done} whole epochs: make the run longer"
    for e in range(done):
        assert set(per_epoch[e]) == expected, f"epoch {e}: missing {sorted(expected - set(per_epoch[e]))}, " \
                                             f"unexpected {sorted(set(per_epoch[e]) - expected)}"
    for e, ids in per_epoch.items():
        assert set(ids.values()) == {1}, f"epoch {e}: logged twice: {[k for k, c in ids.items() if c > 1]}"
